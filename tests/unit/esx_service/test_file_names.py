from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esx_service.errors import InvalidName
from esx_service.file_names import MAX_STEM, SAFE_STEM, file_stem, is_hashed, name_of_stem
from esx_service.names import MAX_NAME_LENGTH, parse_volume_name


def _valid(name: str) -> bool:
    try:
        return parse_volume_name(name).name == name
    except InvalidName:
        return False


# Every name the rules accept: any code point but '@' (which would split off a datastore),
# filtered through the validator itself so the strategy cannot drift from the rules.
names = st.text(
    alphabet=st.characters(blacklist_characters="@", blacklist_categories=("Cs",)),
    min_size=1, max_size=MAX_NAME_LENGTH,
).filter(_valid)
ascii_names = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e,
                                             blacklist_characters="@"),
                      min_size=1, max_size=MAX_NAME_LENGTH).filter(_valid)
VMFS_SUFFIX = re.compile(r"-(\d{6}|flat|delta|ctk|sesparse)$", re.IGNORECASE)


@pytest.mark.parametrize("legacy", ["db", "My_vol-1.data", "a" * 100, "9", "x.y.z"])
def test_names_that_were_valid_before_keep_their_file_names(legacy):
    assert file_stem(legacy) == legacy


@pytest.mark.parametrize(("name", "stem"), [
    ("my vol", "my~20vol"), ("café", "caf~c3~a9"), ("db*", "db~2a"), ("-db", "~2ddb"),
    (".hidden", "~2ehidden"), ("_db", "~5fdb"), ("a~b", "a~7eb"), ("a@b", "a~40b"),
    ("100%", "100~25"),
])
def test_other_names_keep_safe_characters_and_escape_the_rest_as_utf8_bytes(name, stem):
    assert file_stem(name) == stem
    assert name_of_stem(stem) == name


@settings(max_examples=400)
@given(names)
def test_every_stem_is_safe_on_vmfs_vsan_nfs_and_in_urls(name):
    stem = file_stem(name)
    assert SAFE_STEM.fullmatch(stem), stem
    assert len(stem.encode()) <= MAX_STEM
    assert not stem.startswith((".", "-"))
    assert not VMFS_SUFFIX.search(stem)  # names with such suffixes are refused before


@settings(max_examples=400)
@given(names)
def test_readable_stems_round_trip_to_the_name(name):
    stem = file_stem(name)
    if is_hashed(stem):
        assert name_of_stem(stem) is None
    else:
        assert name_of_stem(stem) == name


@settings(max_examples=300)
@given(st.lists(names, min_size=2, max_size=30, unique=True))
def test_different_names_never_share_a_stem(batch):
    stems = [file_stem(n) for n in batch]
    assert len(set(stems)) == len(stems)


@settings(max_examples=300)
@given(ascii_names, ascii_names)
def test_near_identical_ascii_names_never_share_a_stem(a, b):
    if a != b:
        assert file_stem(a) != file_stem(b)


@settings(max_examples=200)
@given(st.lists(names, min_size=2, max_size=20, unique_by=lambda n: n.casefold()))
def test_escaped_parts_never_differ_by_case_alone(batch):
    # Hex is lowercase only: two names that differ in more than ASCII letter case keep
    # stems that differ on a file system that ignores case, too.
    folded = {}
    for name in batch:
        key = file_stem(name).lower()
        other = folded.setdefault(key, name)
        assert other == name or other.lower() == name.lower(), (other, name)


def test_a_name_too_long_for_a_file_is_cut_readably_and_ends_in_its_hash():
    long_a, long_b = "卷" * 99 + "a", "卷" * 99 + "b"
    stem_a, stem_b = file_stem(long_a), file_stem(long_b)
    assert is_hashed(stem_a) and len(stem_a) <= MAX_STEM
    assert stem_a.startswith("~e5~8d~b7")
    assert stem_a != stem_b
    assert name_of_stem(stem_a) is None


@pytest.mark.parametrize("stray", ["~2Ddb", "~zz", "db~", "~c3", "a~~b", "~5fdb~", ".x",
                                   "~61bc"])
def test_stems_this_module_never_writes_decode_to_nothing(stray):
    # "~61bc" would decode to "abc", whose stem is "abc": not the canonical spelling
    assert name_of_stem(stray) is None
