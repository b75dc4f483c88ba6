"""The checkout locator, `configure` and the wrapper's own options. No sd-scripts needed."""

from __future__ import annotations

import pytest

from kohya_multiplier.cli import main
from kohya_multiplier.errors import UserError
from kohya_multiplier.checkouts import locate
from kohya_multiplier.sdscripts.launch import split_own_options

STRATEGIES_CONFIG_UTIL = "class ConfigSanitizer:\n    SUBSET_ASCENDABLE_SCHEMA = {}\n# validation_split alpha_mask\n"
V09_CONFIG_UTIL = "class ConfigSanitizer:\n    SUBSET_ASCENDABLE_SCHEMA = {}\n# alpha_mask tokenizer\n"
V08_CONFIG_UTIL = "class ConfigSanitizer:\n    SUBSET_ASCENDABLE_SCHEMA = {}\n# tokenizer\n"


def fake_checkout(path, config_util=STRATEGIES_CONFIG_UTIL, strategies=True):
    (path / "library").mkdir(parents=True)
    (path / "library" / "train_util.py").write_text("# train_util\n")
    (path / "library" / "config_util.py").write_text(config_util)
    if strategies:
        (path / "library" / "strategy_base.py").write_text("")
    return path


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(locate.ENV_CHECKOUT, raising=False)


def test_resolution_order(tmp_path, monkeypatch):
    a, b, c = (fake_checkout(tmp_path / n) for n in "abc")
    assert locate.resolve_checkout(required=False) is None
    with pytest.raises(UserError, match="configure --sd-scripts"):
        locate.resolve_checkout()
    assert main(["configure", "--sd-scripts", str(c)]) == 0
    assert locate.resolve_checkout().root == c
    monkeypatch.setenv(locate.ENV_CHECKOUT, str(b))
    assert locate.resolve_checkout().root == b
    assert locate.resolve_checkout(str(a)).root == a
    assert locate.resolve_checkout(str(a)).source == "--sd-scripts"


def test_python_defaults_to_the_checkout_venv(tmp_path):
    root = fake_checkout(tmp_path / "sd")
    python = root / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert main(["configure", "--sd-scripts", str(root)]) == 0
    assert locate.resolve_checkout().python == python


def test_configure_extra_checkouts_and_show(tmp_path, capsys):
    main_root = fake_checkout(tmp_path / "main")
    old_root = fake_checkout(tmp_path / "old", V09_CONFIG_UTIL, strategies=False)
    assert main(["configure", "--sd-scripts", str(old_root), "--label", "v0.9.1"]) == 0
    assert main(["configure", "--sd-scripts", str(main_root)]) == 0
    found = locate.configured_checkouts()
    assert found["default"].root == main_root and found["v0.9.1"].root == old_root
    assert locate.user_config_path().read_text().startswith('sd_scripts = "')
    capsys.readouterr()
    assert main(["configure"]) == 0
    shown = capsys.readouterr().out
    assert "v0.9.1:" in shown and str(old_root) in shown


def test_layouts_and_unsupported_revision(tmp_path, capsys):
    assert locate.detect_layout(fake_checkout(tmp_path / "s")) == locate.LAYOUT_STRATEGIES
    assert locate.detect_layout(fake_checkout(tmp_path / "v", V09_CONFIG_UTIL, strategies=False)) == locate.LAYOUT_V09
    old = fake_checkout(tmp_path / "o", V08_CONFIG_UTIL, strategies=False)
    with pytest.raises(UserError) as error:
        locate.require_supported(old)
    assert "\n" not in str(error.value) and "does not support" in str(error.value)
    assert main(["configure", "--sd-scripts", str(old)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_not_a_checkout(tmp_path, capsys):
    assert main(["train_network", "--sd-scripts", str(tmp_path), "--dataset_config", "x.toml"]) == 2
    assert "not an sd-scripts checkout" in capsys.readouterr().err


def test_wrapper_options_are_removed():
    assert split_own_options(["--a", "1", "--sd-scripts", "/x", "--multiplier_schedule=s.jsonl", "--b"]) == (
        "/x",
        "s.jsonl",
        ["--a", "1", "--b"],
    )
    with pytest.raises(UserError):
        split_own_options(["--sd-scripts"])
