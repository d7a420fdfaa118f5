from __future__ import annotations

import json
import os

import pytest

from dockvols_common import atomic
from dockvols_common.atomic import atomic_write_bytes, atomic_write_json


def test_write_creates_and_then_replaces_the_file(tmp_path):
    path = tmp_path / "meta.json"
    atomic_write_bytes(str(path), b"one")
    atomic_write_bytes(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["meta.json"]


def test_json_is_written_sorted_with_a_trailing_newline(tmp_path):
    path = tmp_path / "meta.json"
    atomic_write_json(str(path), {"b": 1, "a": [1, 2]})
    text = path.read_text()
    assert json.loads(text) == {"b": 1, "a": [1, 2]}
    assert text.index('"a"') < text.index('"b"') and text.endswith("\n")


def _fail(*_args, **_kwargs):
    raise OSError(5, "Input/output error")


def test_an_interrupted_rename_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "meta.json"
    path.write_bytes(b"old")
    monkeypatch.setattr(atomic.os, "replace", _fail)
    with pytest.raises(OSError):
        atomic_write_bytes(str(path), b"new")
    assert path.read_bytes() == b"old"


def test_an_interrupted_fsync_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "meta.json"
    path.write_bytes(b"old")
    monkeypatch.setattr(atomic.os, "fsync", _fail)
    with pytest.raises(OSError):
        atomic_write_bytes(str(path), b"new")
    assert path.read_bytes() == b"old"


@pytest.mark.parametrize("step", ["replace", "fsync"])
def test_an_interrupted_write_leaves_no_temp_file(tmp_path, monkeypatch, step):
    path = tmp_path / "meta.json"
    path.write_bytes(b"old")
    monkeypatch.setattr(atomic.os, step, _fail)
    with pytest.raises(OSError):
        atomic_write_bytes(str(path), b"new")
    assert os.listdir(tmp_path) == ["meta.json"]


def test_a_missing_directory_raises_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(str(tmp_path / "nope" / "meta.json"), b"x")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs,synced", [({}, ["file", "folder"]),
                                           ({"sync_dir": False}, ["file"]),
                                           ({"durable": False}, [])])
def test_which_fsyncs_each_mode_makes(tmp_path, monkeypatch, kwargs, synced):
    seen = []
    real = os.fsync

    def fsync(fd):
        seen.append("folder" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    path = tmp_path / "meta.json"
    atomic_write_bytes(str(path), b"old")
    seen.clear()
    atomic_write_bytes(str(path), b"new", **kwargs)
    assert seen == synced
    assert path.read_bytes() == b"new"
