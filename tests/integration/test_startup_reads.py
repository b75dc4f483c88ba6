"""Training start-up reads each image header once (the restructuring issue, point 6): sd-scripts
builds a planned dataset without reading a single image size itself (the core's sizes are handed
to it), and builds a stock dataset exactly as it always does. Measured by counting sd-scripts' own
get_image_size calls in scripts/startup-benchmark.py's dataset construction."""

from __future__ import annotations

import pytest

from dev_scripts import load_script

pytestmark = pytest.mark.integration


def test_sd_scripts_reads_no_header_the_core_has_read(sd, tmp_path_factory):
    bench = load_script("startup-benchmark.py")
    root = tmp_path_factory.mktemp(f"startup-{sd.label}")
    stock_config, wrapped_config = bench.make_tree(str(root), 120, 4, stock=False)
    stock = bench.run_once(str(sd.python), "stock", str(sd.root), stock_config)
    wrapped = bench.run_once(str(sd.python), "wrapped", str(sd.root), wrapped_config)
    assert stock["header_reads"] == 120  # sd-scripts reads every size itself
    assert wrapped["header_reads"] == 0  # ...unless the core already did
    # a stock config through the hooks: nothing of ours is read, sd-scripts reads as always
    assert bench.run_once(str(sd.python), "wrapped", str(sd.root), stock_config)["header_reads"] == 120
