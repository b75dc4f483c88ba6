"""The pure multiplier rules: validation, splitting, precedence, folder names, multiply.txt and the
automatic regularization multiplier."""

from __future__ import annotations


import pytest
from hypothesis import given
from hypothesis import strategies as st

from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.multipliers import (
    RegularizationInput,
    auto_regularization_multipliers,
    check_multiplier,
    parse_folder_name,
    read_multiply_txt,
    resolve_repeat_setting,
    split_multiplier,
)

WHERE = "datasets[0].subsets[1] (train/alice)"


# ---------------------------------------------------------------------------------------------
# check_multiplier


@pytest.mark.parametrize("value, expected", [(0.5, 0.5), (2, 2.0), (0, 0.0), (-1, -1.0), (0.025, 0.025), (1e-9, 1e-9)])
def test_valid_multipliers(value, expected):
    result = check_multiplier(value, file="dataset.toml", where=WHERE)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize(
    "value, message",
    [
        ("0.5", 'must be a number, not a string ("0.5")'),
        (True, "must be a number, not a boolean (true)"),
        (False, "must be a number, not a boolean (false)"),
        (float("nan"), "must be a finite number, not nan"),
        (float("inf"), "must be a finite number, not inf"),
        (float("-inf"), "must be a finite number, not -inf"),
        ([1, 2], "must be a number, not an array"),
        ({"a": 1}, "must be a number, not a table"),
        (None, "must be a number, not null"),
    ],
)
def test_invalid_multipliers(value, message):
    with pytest.raises(UserError) as info:
        check_multiplier(value, file="dataset.toml", where=WHERE)
    assert str(info.value) == f"dataset.toml: {WHERE}: multiplier: {message}"


def test_invalid_multiplier_date():
    import datetime

    with pytest.raises(UserError) as info:
        check_multiplier(datetime.date(2024, 1, 2), file="d.toml", where="general")
    assert str(info.value) == "d.toml: general: multiplier: must be a number, not a date/time (2024-01-02)"


# ---------------------------------------------------------------------------------------------
# split_multiplier


@pytest.mark.parametrize(
    "m, whole, fraction",
    [
        (2.9999999999, 3, 0.0),
        (3.0000000001, 3, 0.0),
        (3, 3, 0.0),
        (2.5, 2, 0.5),
        (0.29, 0, 0.29),
        (sum([0.1] * 10), 1, 0.0),  # 0.9999999999999999
        (0, 0, 0.0),
        (-2.5, 0, 0.0),
        (1 / 3, 0, 1 / 3),
        (5.75, 5, 0.75),
    ],
)
def test_split(m, whole, fraction):
    a, f = split_multiplier(m)
    assert a == whole and isinstance(a, int)
    assert f == pytest.approx(fraction, abs=1e-12)


@given(st.floats(min_value=0, max_value=1000, allow_nan=False))
def test_split_properties(m):
    a, f = split_multiplier(m)
    assert 0 <= f < 1
    assert abs(a + f - m) <= 1e-6 * max(1, m)
    if f:  # only values clearly away from a whole number keep a fraction
        assert abs(m - round(m)) > 1e-9 * max(1.0, m)


# ---------------------------------------------------------------------------------------------
# precedence


def levels(subset=None, dataset=None, general=None):
    return [("subset", subset or {}, WHERE), ("dataset", dataset or {}, "datasets[0]"), ("general", general or {}, "general")]


def test_precedence_multiplier_at_each_level():
    assert resolve_repeat_setting(levels({"multiplier": 0.5}, {"multiplier": 2}, {"multiplier": 3}), file="d").multiplier == 0.5
    r = resolve_repeat_setting(levels({}, {"multiplier": 2}, {"multiplier": 3}), file="d")
    assert (r.multiplier, r.origin) == (2.0, "dataset")
    r = resolve_repeat_setting(levels({}, {}, {"multiplier": 3}), file="d")
    assert (r.multiplier, r.origin) == (3.0, "general")
    r = resolve_repeat_setting(levels(), file="d")
    assert (r.multiplier, r.num_repeats, r.origin) == (None, 1, "")


def test_most_specific_level_setting_either_key_wins():
    r = resolve_repeat_setting(levels({"num_repeats": 3}, {}, {"multiplier": 0.5}), file="d")
    assert (r.multiplier, r.num_repeats, r.origin) == (None, 3, "subset")
    r = resolve_repeat_setting(levels({}, {"multiplier": 0.25}, {"num_repeats": 10}), file="d")
    assert (r.multiplier, r.num_repeats, r.origin) == (0.25, 10, "dataset")
    r = resolve_repeat_setting(levels({}, {"num_repeats": 4}, {}), file="d", default_num_repeats=7)
    assert (r.multiplier, r.num_repeats, r.origin) == (None, 4, "dataset")
    r = resolve_repeat_setting(levels(), file="d", default_num_repeats=7)
    assert r.num_repeats == 7


def test_both_keys_in_one_table():
    with pytest.raises(UserError) as info:
        resolve_repeat_setting(levels({}, {"multiplier": 0.5, "num_repeats": 2}), file="dataset.toml")
    assert str(info.value) == (
        "dataset.toml: datasets[0]: multiplier: cannot be combined with num_repeats in the same table; use one of them"
    )


def test_fractional_num_repeats_gets_a_hint():
    with pytest.raises(UserError) as info:
        resolve_repeat_setting(levels({"num_repeats": 2.5}), file="dataset.toml")
    assert str(info.value) == (
        f"dataset.toml: {WHERE}: num_repeats: must be an integer, not a float (2.5); use multiplier for fractional repeats"
    )


# ---------------------------------------------------------------------------------------------
# folder names


@pytest.mark.parametrize(
    "name, expected",
    [
        ("10_alice", (10, None, "alice")),
        ("0.25_alice", (None, 0.25, "alice")),
        ("1.0_x", (None, 1.0, "x")),
        ("1._x", (None, 1.0, "x")),
        (".5_x", (None, 0.5, "x")),
        ("3_a_b", (3, None, "a_b")),
        ("5", (5, None, "")),
        ("0_x", (0, None, "x")),
        ("2.5", (None, 2.5, "")),
        ("alice", None),
        ("nan_x", None),
        ("inf_x", None),
        ("1e-3_x", None),
        ("-0.5_x", None),
        ("_x", None),
        ("0.5.1_x", None),
    ],
)
def test_parse_folder_name(name, expected):
    assert parse_folder_name(name) == expected


@given(st.integers(0, 10**6), st.text(alphabet="abc_ ", max_size=10))
def test_integer_prefix_is_read_like_sd_scripts(n, rest):
    name = f"{n}_{rest}"
    tokens = name.split("_")
    assert parse_folder_name(name) == (int(tokens[0]), None, "_".join(tokens[1:]))


# ---------------------------------------------------------------------------------------------
# multiply.txt


def write(tmp_path, text, mode="w"):
    path = tmp_path / "multiply.txt"
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("text, value", [("0.5", 0.5), ("  2\n", 2.0), ("\ufeff0.25\r\n", 0.25), ("0", 0.0), ("-1", -1.0), ("1e-2", 0.01)])
def test_multiply_txt_values(tmp_path, text, value):
    assert read_multiply_txt(write(tmp_path, text), file_for_errors="x") == value


def test_multiply_txt_absent(tmp_path):
    assert read_multiply_txt(str(tmp_path), file_for_errors="x") is None


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "must hold one number, but is empty"),
        ("  \n", "must hold one number, but is empty"),
        ("abc", 'must hold one number, not "abc"'),
        ("0.5 2", 'must hold one number, not "0.5 2"'),
        ("0.5\n2\n", 'must hold one number, not "0.5\\n2"'),
        ("nan", 'must hold a finite number, not "nan"'),
        ("inf", 'must hold a finite number, not "inf"'),
        (b"\xff\xfe0\x00.\x005\x00", "must hold one number, but is not UTF-8 text"),
    ],
)
def test_multiply_txt_errors(tmp_path, content, message):
    folder = write(tmp_path, content, "wb" if isinstance(content, bytes) else "w")
    with pytest.raises(UserError) as info:
        read_multiply_txt(folder, file_for_errors="train/alice/multiply.txt")
    assert str(info.value) == f"train/alice/multiply.txt: {message}"


# ---------------------------------------------------------------------------------------------
# automatic regularization multiplier


def R(is_reg, count, multiplier=None, num_repeats=1):
    return RegularizationInput(is_reg=is_reg, image_count=count, multiplier=multiplier, num_repeats=num_repeats)


def test_auto_reg_balances_training_images():
    # T = 0.5*100 + 2*30 = 110; R_explicit = 0.1*50 = 5; R_auto = 200 + 100 images
    subsets = [R(False, 100, 0.5), R(False, 30, None, 2), R(True, 50, 0.1), R(True, 200), R(True, 100)]
    result = auto_regularization_multipliers(subsets)
    assert result[:3] == [None, None, None]
    assert result[3] == pytest.approx((110 - 5) / 300)
    assert result[4] == result[3]


def test_auto_reg_is_zero_when_explicit_reg_covers_training():
    result = auto_regularization_multipliers([R(False, 10, 1.0), R(True, 100, 0.5), R(True, 50)])
    assert result == [None, None, 0.0]


def test_auto_reg_ignores_excluded_training_and_excluded_reg():
    result = auto_regularization_multipliers([R(False, 10, 0.0), R(False, 40, -1), R(False, 20, 1.5), R(True, 30), R(True, 10, None, 0)])
    assert result == [None, None, None, pytest.approx(30 / 30), None]


def test_no_multiplier_anywhere_is_stock():
    assert auto_regularization_multipliers([R(False, 10, None, 3), R(True, 100)]) == [None, None]


@given(
    st.lists(st.tuples(st.integers(1, 500), st.one_of(st.none(), st.floats(0, 5))), min_size=1, max_size=6),
    st.lists(st.integers(1, 500), min_size=1, max_size=4),
)
def test_auto_reg_matches_training_images_per_epoch(train, reg):
    subsets = [R(False, n, m, 2) for n, m in train] + [R(True, n) for n in reg]
    result = auto_regularization_multipliers(subsets)
    if not any(m is not None for _, m in train):
        assert all(r is None for r in result)
        return
    t = sum(n * (m if m is not None else 2) for n, m in train)
    reg_per_epoch = sum(n * result[len(train) + i] for i, n in enumerate(reg))
    assert reg_per_epoch == pytest.approx(t, rel=1e-9, abs=1e-9)

