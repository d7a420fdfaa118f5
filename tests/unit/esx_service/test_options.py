from __future__ import annotations

import pytest

from esx_service.errors import InvalidOption
from esx_service.options import (
    VALID_OPTIONS,
    VolumeOptions,
    describe_valid_options,
    parse_options,
    parse_size_mb,
)


@pytest.mark.parametrize("raw", [None, {}])
def test_no_options_give_the_defaults(raw):
    opts = parse_options(raw)
    assert opts == VolumeOptions(size_mb=100, diskformat="thin", fstype="ext4",
                                 access="read-write", attach_as="persistent",
                                 clone_from=None, vsan_policy_name=None)


@pytest.mark.parametrize("text,mb", [
    ("100mb", 100), ("200MB", 200), ("10gb", 10 * 1024), ("1Tb", 1024 * 1024),
    ("1 gb", 1024), (" 8mb ", 8), ("62tb", 62 * 1024 * 1024),
    # Docker's spellings of the same binary units, and their IEC names
    ("10g", 10 * 1024), ("10G", 10 * 1024), ("512m", 512), ("1t", 1024 * 1024),
    ("10GiB", 10 * 1024), ("200MiB", 200), ("1tib", 1024 * 1024), ("10 g", 10 * 1024),
])
def test_size_forms(text, mb):
    assert parse_size_mb(text) == mb
    assert parse_options({"size": text}).size_mb == mb


@pytest.mark.parametrize("bad", ["0mb", "10", "gb", "-1gb", "1.5gb", "10kb", "10k", "", "ten gb",
                                 "10gbb", "10ib", "10b", "10gi", "0g"])
def test_bad_sizes_name_the_value_and_the_accepted_form(bad):
    with pytest.raises(InvalidOption) as err:
        parse_options({"size": bad})
    assert repr(bad) in err.value.message
    assert "X[mb|gb|tb]" in err.value.message


def test_a_size_over_62tb_is_refused():
    with pytest.raises(InvalidOption, match="'63tb'.*62tb"):
        parse_options({"size": "63tb"})


@pytest.mark.parametrize("key,field,values", [
    ("diskformat", "diskformat", ["thin", "zeroedthick", "eagerzeroedthick"]),
    ("fstype", "fstype", ["ext4", "xfs"]),
    ("access", "access", ["read-write", "read-only"]),
    ("attach-as", "attach_as", ["persistent", "independent_persistent"]),
])
def test_each_choice_option_accepts_its_values(key, field, values):
    for value in values:
        raw = {key: value}
        if value == "xfs":
            raw["size"] = "300mb"
        assert getattr(parse_options(raw), field) == value


@pytest.mark.parametrize("key,bad,allowed", [
    ("diskformat", "thick", "thin, zeroedthick, eagerzeroedthick"),
    ("fstype", "btrfs", "ext4, xfs"),
    ("access", "ro", "read-write, read-only"),
    ("attach-as", "independent", "persistent, independent_persistent"),
])
def test_a_bad_choice_names_the_value_and_the_allowed_ones(key, bad, allowed):
    with pytest.raises(InvalidOption) as err:
        parse_options({key: bad})
    assert repr(bad) in err.value.message
    assert repr(key) in err.value.message
    assert allowed in err.value.message


def test_choices_are_case_sensitive():
    with pytest.raises(InvalidOption):
        parse_options({"fstype": "EXT4"})


def test_clone_from_and_vsan_policy_are_kept():
    opts = parse_options({"clone-from": "src@ds1", "vsan-policy-name": "gold"})
    assert opts.clone_from == "src@ds1"
    assert opts.vsan_policy_name == "gold"


def test_empty_clone_from_means_none():
    assert parse_options({"clone-from": ""}).clone_from is None


def test_unknown_options_are_listed_with_every_valid_option_and_its_default():
    with pytest.raises(InvalidOption) as err:
        parse_options({"sise": "10gb", "color": "red"})
    message = err.value.message
    assert "'color', 'sise' (did you mean 'size'?)" in message
    for key, (default, _) in VALID_OPTIONS.items():
        assert f"{key}=" in message
        assert f"(default {default})" in message
    assert "size=X[mb|gb|tb], X a positive integer (default 100mb)" in message
    assert describe_valid_options() in message


@pytest.mark.parametrize("typed, meant", [
    ("sizee", "size"), ("disk-format", "diskformat"), ("attach_as", "attach-as"),
    ("Fstype", "fstype"), ("clone_from", "clone-from"), ("vsan-policy", "vsan-policy-name"),
])
def test_a_misspelt_option_is_named_with_the_one_it_most_likely_means(typed, meant):
    with pytest.raises(InvalidOption) as err:
        parse_options({typed: "x"})
    assert err.value.message.startswith(f"unknown option {typed!r} (did you mean {meant!r}?);")


def test_an_option_like_none_is_named_without_a_guess():
    with pytest.raises(InvalidOption) as err:
        parse_options({"color": "red"})
    assert err.value.message.startswith("unknown option 'color'; valid options are: ")


def test_xfs_below_300mb_is_refused_with_the_minimum():
    with pytest.raises(InvalidOption) as err:
        parse_options({"fstype": "xfs", "size": "299mb"})
    assert "'299mb'" in err.value.message and "300mb" in err.value.message


def test_xfs_with_the_default_size_is_refused_too():
    with pytest.raises(InvalidOption, match="'100mb' for fstype xfs"):
        parse_options({"fstype": "xfs"})


def test_xfs_at_300mb_and_ext4_at_8mb_are_allowed():
    assert parse_options({"fstype": "xfs", "size": "300mb"}).size_mb == 300
    assert parse_options({"size": "8mb"}).size_mb == 8


def test_ext4_below_8mb_is_refused():
    with pytest.raises(InvalidOption, match="8mb"):
        parse_options({"size": "7mb"})


def test_a_clone_skips_the_minimum_size_check():
    assert parse_options({"fstype": "xfs", "clone-from": "src"}).fstype == "xfs"


@pytest.mark.parametrize("raw", [["size=1gb"], "size=1gb", 5])
def test_options_must_be_a_map(raw):
    with pytest.raises(InvalidOption, match="map"):
        parse_options(raw)


@pytest.mark.parametrize("value", [10, None, True, ["1gb"]])
def test_option_values_must_be_strings(value):
    with pytest.raises(InvalidOption, match="'size' must be a string"):
        parse_options({"size": value})


def test_options_round_trip_through_a_dict():
    opts = parse_options({"size": "2gb", "diskformat": "zeroedthick", "fstype": "xfs",
                          "access": "read-only", "clone-from": "a"})
    assert VolumeOptions.from_dict(opts.to_dict()) == opts


def test_from_dict_ignores_unknown_keys():
    assert VolumeOptions.from_dict({"size_mb": 5, "future": 1}) == VolumeOptions(size_mb=5)


@pytest.mark.parametrize("digits", [60, 4300, 5000, 100_000])
def test_a_size_of_thousands_of_digits_is_refused_naming_the_limit(digits):
    with pytest.raises(InvalidOption, match=r"largest disk is 62tb") as err:
        parse_size_mb("9" * digits + "gb")
    assert len(str(err.value)) < 200  # names the value without echoing all of it
    assert f"({digits + 2} characters)" in str(err.value)


def test_leading_zeros_do_not_count_as_digits():
    assert parse_size_mb("0" * 5000 + "200mb") == 200
