"""Which training scripts the wrapper runs (issue 12, point 3), on checkouts made by the test."""

from __future__ import annotations

import pytest

from kohya_multiplier.cli import main
from kohya_multiplier.checkouts import scripts

BUILDS = "from library import config_util\nblueprint = config_util.BlueprintGenerator(sanitizer)\n"


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    root = tmp_path / "sd"
    (root / "library").mkdir(parents=True)
    (root / "library" / "train_util.py").write_text("# train_util\n")
    (root / "library" / "config_util.py").write_text("class ConfigSanitizer:\n    SUBSET_ASCENDABLE_SCHEMA = {}\n# alpha_mask tokenizer\n")
    files = {
        "train_network.py": BUILDS,
        "my_family_train_network.py": "import train_network\nclass T(train_network.NetworkTrainer):\n    pass\n",
        "train_control_net.py": BUILDS + "conditioning_data_dir = None\n",
        "new_lllite_train.py": BUILDS + "# LLLite\n",
        "own_lllite_train.py": "# LLLite, builds its datasets itself\nconditioning_data_dir = None\n",
        "train_leco.py": "print('prompts only')\n",
        "gen_img.py": "print('inference')\n",
        "setup.py": "",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return root


def test_scripts_are_found_in_the_checkout_and_classified(checkout):
    found = {s.name: s for s in scripts.discover(checkout)}
    assert set(found) == {"train_network", "my_family_train_network", "train_control_net", "new_lllite_train", "own_lllite_train",
                          "train_leco"}
    assert found["train_network"].supported and found["my_family_train_network"].supported
    assert "train_network.py" in found["my_family_train_network"].reason
    assert found["train_control_net"].supported and "conditioning (ControlNet/LLLite)" in found["train_control_net"].reason
    assert found["new_lllite_train"].supported
    assert not found["own_lllite_train"].supported and "config_util" in found["own_lllite_train"].reason
    assert not found["train_leco"].supported and "config_util" in found["train_leco"].reason


@pytest.mark.parametrize(
    "word, message",
    [
        ("own_lllite_train", "does not build its datasets through library/config_util"),
        ("train_leco", "does not build its datasets through library/config_util"),
        ("flux_train_network", "is not in the sd-scripts checkout"),
    ],
)
def test_unsupported_scripts_are_refused_with_one_line(checkout, capsys, word, message):
    assert main([word, "--sd-scripts", str(checkout), "--dataset_config", "x.toml"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_scripts_command_lists_support_and_suite(checkout, capsys):
    assert main(["scripts", str(checkout)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith("run one")}
    assert "yes" in rows["train_network"] and "v0.9.1" in rows["train_network"]
    assert "wrapped only" in rows["my_family_train_network"]
    assert rows["train_control_net"].split()[1] == "yes"
    assert rows["own_lllite_train"].split()[1] == "no"


def test_scripts_without_a_checkout_says_how_this_command_takes_one(checkout, tmp_path, capsys, monkeypatch):
    # A config that names only labelled checkouts (as the integration set-up writes) has no default one.
    monkeypatch.delenv("KOHYA_SD_SCRIPTS", raising=False)
    config = tmp_path / "xdg" / "kohya-multiplier" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[checkouts.newest]\npath = "{checkout.as_posix()}"\n')
    assert main(["scripts"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "pass the checkout DIR" in error and "--sd-scripts" not in error.split("configure")[0]
    assert "labelled checkouts only: newest" in error


def test_scripts_table_keeps_its_columns_with_long_revision_lists(checkout, capsys, monkeypatch):
    monkeypatch.setitem(scripts.SUITE_TRAINS, "train_network", ("c162e90", "main 48d368fa", "v0.11.1", "v0.9.1", "v0.8.7"))
    assert main(["scripts", str(checkout)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("script"))
    column = header.index("how / why")
    rows = [line for line in lines if line.split()[:1] in (["train_network"], ["train_leco"])]
    assert rows and all(row[column - 2:column] == "  " and row[column] != " " for row in rows), lines
