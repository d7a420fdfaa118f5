from __future__ import annotations

import pytest

from esx_service.errors import InvalidName
from esx_service.names import (
    MAX_NAME_LENGTH,
    VolumeRef,
    check_datastore_name,
    match_datastore,
    parse_volume_name,
)


def test_plain_name_has_no_datastore():
    assert parse_volume_name("db") == VolumeRef("db", None)


def test_name_at_datastore_splits_on_the_last_at():
    assert parse_volume_name("db@ds1") == VolumeRef("db", "ds1")
    assert str(parse_volume_name("db@ds1")) == "db@ds1"
    assert str(parse_volume_name("db")) == "db"


def test_an_at_inside_the_volume_part_is_kept_and_the_last_one_splits():
    # vDVS: "the last '@' will be interpreted as a separator between volume and datastore"
    assert parse_volume_name("a@b@ds1") == VolumeRef("a@b", "ds1")


@pytest.mark.parametrize("name", ["db*", "#1", "a+b", "wow!", "my vol", "caf\u00e9", "卷",
                                  "données", "-db", ".db", "_db", "ｄｂ", "100%", "a:b",
                                  "emoji\U0001f600", "q?&=", "\u0928\u092e\u0938\u094d\u200d"])
def test_symbols_spaces_and_letters_of_any_script_are_allowed_as_in_vdvs(name):
    assert parse_volume_name(name).name == name
    assert parse_volume_name(name + "@ds1") == VolumeRef(name, "ds1")


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


@pytest.mark.parametrize(("bad", "why"), [
    ("a/b", "path separator"), ("a\\b", "path separator"), ("a\x00b", "control character"),
    ("../etc", "path separator"), ("a\nb", "control character"),
    ("a\x7fb", "control character"), ("a\x85b", "control character"),
    ("a\ud800b", "lone surrogate"), ("\udfff", "lone surrogate"),
    ("a\u2028b", "line separator"), ("a\u2029b", "paragraph separator"),
    ("db\u200b", "invisible formatting"), ("evil\u202egnp", "invisible formatting"),
    ("\ufeffdb", "invisible formatting"),
])
def test_path_control_and_invisible_characters_are_refused_naming_the_character(bad, why):
    with pytest.raises(InvalidName, match=why) as err:
        parse_volume_name(bad)
    assert repr(bad[:40]) in err.value.message
    err.value.message.encode("utf-8")  # the message itself can go on the wire


@pytest.mark.parametrize("bad", ["..", "."])
def test_dot_names_are_refused(bad):
    with pytest.raises(InvalidName, match="is '"):
        parse_volume_name(bad)


@pytest.mark.parametrize("bad_ds", ["ds/1", "ds\\1", "ds\x001", "..", ".", "ds\t1", "ds\ud800"])
def test_path_and_control_characters_in_the_datastore_are_refused(bad_ds):
    with pytest.raises(InvalidName, match="datastore"):
        parse_volume_name(f"db@{bad_ds}")


def test_datastore_names_may_hold_spaces_brackets_and_mixed_case_as_on_esx():
    assert parse_volume_name("db@datastore1 (1)").datastore == "datastore1 (1)"
    assert parse_volume_name("my vol@My Data Store") == VolumeRef("my vol", "My Data Store")


@pytest.mark.parametrize("bad", ["a@b", "", "x/y", "ds\x01"])
def test_configured_datastore_names_must_be_reachable_by_name_at_datastore(bad):
    with pytest.raises(InvalidName, match="datastore"):
        check_datastore_name(bad)
    assert check_datastore_name("My DS (2)") == "My DS (2)"


@pytest.mark.parametrize("bad", ["db-000001", "db-123456", "db-flat", "db-FLAT", "db-delta",
                                 "db-ctk", "db-sesparse", "db-000001@ds1"])
def test_vmfs_file_suffixes_are_refused(bad):
    with pytest.raises(InvalidName, match="suffix .* clashes with VMFS"):
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
    assert "1-100 characters" in err.value.message and "'/'" in err.value.message
    assert err.value.code == "InvalidName" and err.value.http_status == 400


def test_datastores_match_case_insensitively_and_answer_the_known_spelling():
    known = ["DataStore1", "nfs-2"]
    assert match_datastore("datastore1", known) == "DataStore1"
    assert match_datastore("NFS-2", known) == "nfs-2"
    assert match_datastore("datastore", known) is None
    assert match_datastore("ds", []) is None


def test_a_100_character_name_of_any_script_is_allowed_and_101_is_not():
    assert parse_volume_name("é" * 100).name == "é" * 100
    with pytest.raises(InvalidName, match="longer than 100"):
        parse_volume_name("é" * 101)
