from __future__ import annotations

import time

import pytest

from plugin.volume_cache import VolumeCache

VIEW = {"name": "db@ds1", "capacity_mb": 100}


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "state" / "volumes-cache.json")


def test_put_and_get(path):
    cache = VolumeCache(path)
    cache.put("db", VIEW)
    assert cache.get("db") == VIEW
    assert cache.get("other") is None
    assert cache.all() == {"db": VIEW}


def test_a_newly_seen_volume_survives_a_restart(path):
    cache = VolumeCache(path, save_interval=0.01)
    cache.put("db", VIEW)
    deadline = time.monotonic() + 5
    while VolumeCache(path).get("db") != VIEW and time.monotonic() < deadline:
        time.sleep(0.01)  # the write is deferred to the cache's timer
    assert VolumeCache(path).get("db") == VIEW


def test_a_burst_of_changes_is_written_once(path, monkeypatch):
    import plugin.volume_cache as module

    writes = []
    real = module.atomic_write_bytes
    # only this cache's writes: an earlier test's cache may still flush on its timer
    monkeypatch.setattr(module, "atomic_write_bytes",
                        lambda *a, **k: (a[0] == path and writes.append(a[0]), real(*a, **k)))
    cache = VolumeCache(path, save_interval=60)
    for i in range(100):
        cache.put(f"v{i}", {"name": f"v{i}@ds1"})
    assert writes == []
    cache.flush()
    assert len(writes) == 1
    assert len(VolumeCache(path).all()) == 100


def test_replace_all_replaces_every_entry(path):
    cache = VolumeCache(path)
    cache.put("old", {"name": "old@ds1"})
    cache.replace_all({"db": VIEW})
    assert cache.all() == {"db": VIEW}


def test_forget_drops_a_volume_by_docker_name_or_canonical_name(path):
    cache = VolumeCache(path)
    cache.put("db", VIEW)
    cache.put("db@ds1", VIEW)
    cache.put("web", {"name": "web@ds1"})
    cache.forget("db@ds1")
    assert set(cache.all()) == {"web"}
    cache.flush()
    assert set(VolumeCache(path).all()) == {"web"}


def test_all_returns_a_copy(path):
    cache = VolumeCache(path)
    cache.put("db", VIEW)
    cache.all().clear()
    assert cache.get("db") == VIEW


@pytest.mark.parametrize("content", ["{broken", "null", "[1, 2]"])
def test_an_unreadable_cache_file_starts_empty(path, tmp_path, content):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "volumes-cache.json").write_text(content)
    assert VolumeCache(path).all() == {}
