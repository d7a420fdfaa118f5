from __future__ import annotations

import pytest

from esx_service.errors import InvalidName
from esx_service.names import MAX_NAME_LENGTH, VolumeRef, match_datastore, parse_volume_name


def test_plain_name_has_no_datastore():
    assert parse_volume_name("db") == VolumeRef("db", None)


def test_name_at_datastore_splits_on_the_last_at():
    assert parse_volume_name("db@ds1") == VolumeRef("db", "ds1")
    assert str(parse_volume_name("db@ds1")) == "db@ds1"
    assert str(parse_volume_name("db")) == "db"


def test_an_at_inside_the_volume_part_is_refused():
    # rsplit('@'): "a@b" is the volume part, and '@' is not a volume character
    with pytest.raises(InvalidName):
        parse_volume_name("a@b@ds1")


def test_letters_digits_underscore_dot_and_dash_are_allowed():
    assert parse_volume_name("My_vol-1.data").name == "My_vol-1.data"


def test_exactly_100_characters_is_allowed():
    name = "a" * MAX_NAME_LENGTH
    assert parse_volume_name(name).name == name
    assert parse_volume_name(name + "@ds1").datastore == "ds1"


def test_101_characters_is_refused_and_says_the_limit():
    with pytest.raises(InvalidName, match="longer than 100"):
        parse_volume_name("a" * 101)


def test_a_datastore_over_100_characters_is_refused():
    with pytest.raises(InvalidName, match="datastore name is longer than 100"):
        parse_volume_name("db@" + "d" * 101)


def test_absurdly_long_input_is_refused_without_echoing_all_of_it():
    with pytest.raises(InvalidName) as err:
        parse_volume_name("x" * 10_000)
    assert len(err.value.message) < 1000


@pytest.mark.parametrize("bad", ["a/b", "a\\b", "a\x00b", "../etc", "..", ".", "a b", "a\nb"])
def test_path_and_control_characters_in_the_volume_are_refused(bad):
    with pytest.raises(InvalidName):
        parse_volume_name(bad)


@pytest.mark.parametrize("bad_ds", ["ds/1", "ds\\1", "ds\x001", "..", ".", "ds\t1"])
def test_path_and_control_characters_in_the_datastore_are_refused(bad_ds):
    with pytest.raises(InvalidName, match="datastore"):
        parse_volume_name(f"db@{bad_ds}")


def test_datastore_names_may_hold_spaces_and_brackets_as_on_esx():
    assert parse_volume_name("db@datastore1 (1)").datastore == "datastore1 (1)"


@pytest.mark.parametrize("bad", ["vølume", "卷", "caf\u00e9", "db\u200b", "ｄｂ"])
def test_non_ascii_volume_names_are_refused(bad):
    with pytest.raises(InvalidName):
        parse_volume_name(bad)


@pytest.mark.parametrize("bad", ["-db", ".db", "_db"])
def test_a_volume_must_start_with_a_letter_or_digit(bad):
    with pytest.raises(InvalidName):
        parse_volume_name(bad)


@pytest.mark.parametrize("bad", ["db-000001", "db-123456", "db-flat", "db-FLAT", "db-delta",
                                 "db-ctk", "db-sesparse", "db-000001@ds1"])
def test_vmfs_file_suffixes_are_refused(bad):
    with pytest.raises(InvalidName, match="suffix clashes"):
        parse_volume_name(bad)


@pytest.mark.parametrize("ok", ["db-00001", "db-0000001", "db-flatter", "flat", "db-1",
                                "db-flat.x"])
def test_near_misses_of_vmfs_suffixes_are_allowed(ok):
    assert parse_volume_name(ok).name == ok


@pytest.mark.parametrize("bad", ["", "@ds1", "db@"])
def test_empty_parts_are_refused(bad):
    with pytest.raises(InvalidName, match="empty"):
        parse_volume_name(bad)


@pytest.mark.parametrize("bad", [None, 42, ["db"], {"name": "db"}])
def test_non_strings_are_refused(bad):
    with pytest.raises(InvalidName, match="not a string"):
        parse_volume_name(bad)


def test_errors_state_the_rules_and_the_bad_name():
    with pytest.raises(InvalidName) as err:
        parse_volume_name("a/b")
    assert "'a/b'" in err.value.message
    assert "1-100 characters" in err.value.message
    assert err.value.code == "InvalidName" and err.value.http_status == 400


def test_datastores_match_case_insensitively_and_answer_the_known_spelling():
    known = ["DataStore1", "nfs-2"]
    assert match_datastore("datastore1", known) == "DataStore1"
    assert match_datastore("NFS-2", known) == "nfs-2"
    assert match_datastore("datastore", known) is None
    assert match_datastore("ds", []) is None
