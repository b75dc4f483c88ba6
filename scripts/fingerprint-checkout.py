#!/usr/bin/env python3
"""Print a checkout's fingerprint of hooked code as an entry for kohya_multiplier/checkouts/known_revisions.py.

    python scripts/fingerprint-checkout.py SD_SCRIPTS_DIR NAME LAYOUT

Run it on a clean checkout of a revision once the integration suite passes against it, and paste
the entry into TESTED_REVISIONS: from then on, any checkout with the same hooked code is judged
tested, whatever its commit.
"""

import pprint
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kohya_multiplier.checkouts.fingerprint import fingerprint  # noqa: E402


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    root, name, layout = sys.argv[1:]
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    entry = {"layout": layout, "commit": commit, "symbols": fingerprint(root)}
    print(f"    {name!r}: " + pprint.pformat(entry, indent=4, width=110, sort_dicts=False) + ",")
    return 0


if __name__ == "__main__":
    sys.exit(main())
