"""ParsedFiles: a parsed file is reused only while a stat proves the file unchanged."""

from __future__ import annotations

import json
import os
import time

import pytest

from esx_service.file_cache import ParsedFiles


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: bytes) -> dict:
        self.calls += 1
        return json.loads(raw)


def _write(folder, name: str, data: dict) -> None:
    """Replace the file the way atomic.py does: a new file renamed over the old one."""
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, folder / name)


def _later(seconds: float = 60.0):
    """A clock ``seconds`` ahead: every file looks old enough to keep."""
    return lambda: time.time_ns() + int(seconds * 1e9)


@pytest.fixture
def parse() -> Counting:
    return Counting()


def test_an_unchanged_file_is_parsed_once(tmp_path, parse):
    _write(tmp_path, "a.json", {"n": 1})
    cache = ParsedFiles(parse, clock_ns=_later())
    assert [cache.get(str(tmp_path), "a.json") for _ in range(3)] == [{"n": 1}] * 3
    assert parse.calls == 1


def test_a_replaced_file_is_read_again(tmp_path, parse):
    _write(tmp_path, "a.json", {"n": 1})
    cache = ParsedFiles(parse, clock_ns=_later())
    cache.get(str(tmp_path), "a.json")
    _write(tmp_path, "a.json", {"n": 2})
    assert cache.get(str(tmp_path), "a.json") == {"n": 2}


def test_a_write_in_place_that_restores_size_and_mtime_is_still_seen(tmp_path, parse):
    _write(tmp_path, "a.json", {"n": 1})
    cache = ParsedFiles(parse, clock_ns=_later())
    cache.get(str(tmp_path), "a.json")
    before = os.stat(tmp_path / "a.json")
    time.sleep(0.02)  # past a coarse timestamp tick
    with open(tmp_path / "a.json", "r+b") as f:  # same inode, same size
        f.write(json.dumps({"n": 7}).encode())
    os.utime(tmp_path / "a.json", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert cache.get(str(tmp_path), "a.json") == {"n": 7}  # ctime moved


def test_a_file_too_fresh_to_trust_is_read_every_time(tmp_path, parse):
    _write(tmp_path, "a.json", {"n": 1})
    cache = ParsedFiles(parse, racy_seconds=60)
    cache.get(str(tmp_path), "a.json")
    cache.get(str(tmp_path), "a.json")
    assert parse.calls == 2 and len(cache) == 0


def test_a_removed_file_is_not_found_and_forgotten(tmp_path, parse):
    _write(tmp_path, "a.json", {"n": 1})
    cache = ParsedFiles(parse, clock_ns=_later())
    cache.get(str(tmp_path), "a.json")
    os.unlink(tmp_path / "a.json")
    with pytest.raises(FileNotFoundError):
        cache.get(str(tmp_path), "a.json")
    assert len(cache) == 0


def test_files_a_listing_no_longer_shows_are_forgotten(tmp_path, parse):
    for name in ("a.json", "b.json"):
        _write(tmp_path, name, {"n": name})
    cache = ParsedFiles(parse, clock_ns=_later())
    for name in ("a.json", "b.json"):
        cache.get(str(tmp_path), name)
    cache.forget_missing(str(tmp_path), {"b.json"})
    assert len(cache) == 1
    cache.forget_missing(str(tmp_path), set())
    assert len(cache) == 0


def test_a_parse_error_is_raised_and_nothing_is_kept(tmp_path, parse):
    (tmp_path / "bad.json").write_text("{not json")
    cache = ParsedFiles(parse, clock_ns=_later())
    with pytest.raises(ValueError):
        cache.get(str(tmp_path), "bad.json")
    assert len(cache) == 0
