from __future__ import annotations

import json
import os

import pytest

from plugin import refcounts
from plugin.refcounts import RefCounts


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "state" / "refcounts.json")


def test_each_mount_id_counts(path):
    refs = RefCounts(path)
    assert refs.add("db@ds1", "m1") == 1
    assert refs.add("db@ds1", "m2") == 2
    assert refs.total("db@ds1") == 2
    assert refs.ids("db@ds1") == {"m1": 1, "m2": 1}
    assert refs.total("other@ds1") == 0


def test_the_same_id_twice_needs_two_releases(path):
    refs = RefCounts(path)
    refs.add("db@ds1", "m1")
    refs.add("db@ds1", "m1")
    assert refs.release("db@ds1", "m1") is True
    assert refs.total("db@ds1") == 1
    assert refs.release("db@ds1", "m1") is True
    assert refs.total("db@ds1") == 0
    assert refs.volumes() == []


def test_releasing_an_unknown_id_changes_nothing(path):
    refs = RefCounts(path)
    refs.add("db@ds1", "m1")
    assert refs.release("db@ds1", "m2") is False
    assert refs.release("ghost@ds1", "m1") is False
    assert refs.ids("db@ds1") == {"m1": 1}


def test_counts_and_aliases_survive_a_reload(path):
    refs = RefCounts(path)
    refs.add("db@ds1", "m1")
    refs.add("db@ds1", "m1")
    refs.add("web@ds2", "m9")
    refs.release("web@ds2", "m9")
    refs.set_alias("db", "db@ds1")
    again = RefCounts(path)
    assert again.ids("db@ds1") == {"m1": 2}
    assert again.volumes() == ["db@ds1"]
    assert again.alias("db") == "db@ds1"


def test_replace_sets_or_clears_a_volumes_counts(path):
    refs = RefCounts(path)
    refs.add("db@ds1", "m1")
    refs.replace("db@ds1", {"recovered:c1": 1, "recovered:c2": 1})
    assert RefCounts(path).ids("db@ds1") == {"recovered:c1": 1, "recovered:c2": 1}
    refs.replace("db@ds1", {})
    assert RefCounts(path).volumes() == []


def test_drop_alias_forgets_every_name_of_a_volume(path):
    refs = RefCounts(path)
    refs.set_alias("db", "db@ds1")
    refs.set_alias("db@DS1", "db@ds1")
    refs.set_alias("web", "web@ds1")
    refs.add("web@ds1", "m1")
    refs.drop_alias("db@ds1")
    assert refs.alias("db") is None and refs.alias("db@DS1") is None
    again = RefCounts(path)
    assert again.alias("db") is None and again.alias("db@DS1") is None
    assert again.alias("web") == "web@ds1"


def test_only_names_of_volumes_in_use_are_persisted(path):
    refs = RefCounts(path)
    refs.set_alias("idle", "idle@ds1")
    refs.set_alias("busy", "busy@ds1")
    refs.add("busy@ds1", "m1")
    assert refs.alias("idle") == "idle@ds1"  # known in memory
    again = RefCounts(path)
    assert again.alias("busy") == "busy@ds1"
    assert again.alias("idle") is None  # asked of the service again after a restart


def test_a_corrupt_file_is_moved_aside_and_counting_starts_empty(path):
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('{"refs": {"db@ds1": {"m1": 1}')  # cut short
    refs = RefCounts(path)
    assert refs.volumes() == []
    assert not os.path.exists(path)
    with open(path + ".corrupt") as f:
        assert f.read().startswith('{"refs"')
    refs.add("db@ds1", "m2")
    assert RefCounts(path).ids("db@ds1") == {"m2": 1}


def test_zero_and_negative_counts_on_disk_are_dropped(path):
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        json.dump({"refs": {"a": {"m1": 0, "m2": -3}, "b": {"m1": 2}}, "aliases": {}}, f)
    refs = RefCounts(path)
    assert refs.volumes() == ["b"]


@pytest.mark.parametrize("content", ["null", "[]", '{"refs": {"db": {"m1": "x"}}}'])
def test_a_wrong_shaped_file_is_moved_aside_too(path, content):
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(content)
    refs = RefCounts(path)
    assert refs.volumes() == []
    assert os.path.exists(path + ".corrupt")


def test_an_unknown_id_is_one_recovered_user_departing(path):
    refs = RefCounts(path)
    refs.replace("v", {"recovered:A": 1, "recovered:B": 1})
    refs.add("v", "idC")
    assert refs.total("v") == 3
    assert refs.release("v", "idA")  # A or B left; Docker cannot tell which yet
    assert refs.total("v") == 2
    assert RefCounts(path).total("v") == 2  # the departure is persisted
    assert refs.release("v", "idB")
    assert not refs.release("v", "idX")  # no recovered user left to depart
    assert refs.total("v") == 1
    assert refs.release("v", "idC")
    assert refs.total("v") == 0 and refs.volumes() == []


def test_forgetting_a_gone_recovered_user_takes_its_departure_with_it(path):
    refs = RefCounts(path)
    refs.replace("v", {"recovered:A": 1, "recovered:B": 1})
    refs.release("v", "idA")
    assert refs.forget_recovered("v", {"A"}) == 1
    assert refs.total("v") == 1  # B
    assert refs.recovered_users("v") == {"B"}
    assert refs.forget_recovered("v", {"nobody"}) == 0
    assert refs.forget_recovered("v", {"B"}) == 1
    assert refs.volumes() == []


def test_a_recovered_container_that_restarted_is_not_counted_twice(path):
    refs = RefCounts(path)
    refs.replace("v", {"recovered:A": 1, "recovered:B": 1})
    refs.release("v", "idA")  # A restarts: Unmount of its old ID...
    refs.add("v", "idA")  # ...then Mount of the same ID
    assert refs.total("v") == 2
    assert refs.release("v", "idA")  # A stops for good
    refs.forget_recovered("v", {"A"})
    assert refs.total("v") == 1  # B only


def test_unbacked_ids_tell_old_ids_from_those_a_previous_plugin_counted(path):
    refs = RefCounts(path)
    refs.add("v", "before-restart")
    refs = RefCounts(path)  # a restart: that ID was counted by the previous plugin
    refs.add("v", "fresh")
    refs.replace("w", {"recovered:c1": 1})
    assert refs.unbacked_ids("v", grace=60) == ([], ["before-restart"])
    assert refs.unbacked_ids("v", grace=-1) == (["fresh"], ["before-restart"])
    assert refs.unbacked_ids("w", grace=-1) == ([], [])  # recovered users are not IDs
    refs.drop("v", ["before-restart", "fresh"])
    assert refs.total("v") == 0 and refs.volumes() == ["w"]


def test_in_use_names_exactly_the_volumes_whose_total_is_above_zero(path):
    refs = RefCounts(path)
    refs.add("db@ds1", "m1")
    refs.add("gone@ds1", "m1")
    refs.release("gone@ds1", "m1")
    refs.replace("v@ds1", {"recovered:A": 1})
    assert refs.in_use() == {"db@ds1", "v@ds1"}
    assert refs.release("v@ds1", "unknown-id") is True  # the recovered user departing
    assert refs.in_use() == {"db@ds1"}
    assert {v for v in ("db@ds1", "gone@ds1", "v@ds1") if refs.total(v)} == refs.in_use()


def test_which_disks_this_plugin_attached_survives_a_restart(path):
    refs = RefCounts(path)
    refs.mark_attached("db@ds1")
    refs.mark_attached("web@ds1")
    refs.mark_detached("web@ds1")
    again = RefCounts(path)
    assert again.attached_here("db@ds1") and not again.attached_here("web@ds1")


def test_a_state_file_from_before_the_attach_record_counts_its_volumes_as_attached_here(path):
    os.makedirs(os.path.dirname(path))
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"refs": {"db@ds1": {"m1": 1}}, "aliases": {}}, f)
    refs = RefCounts(path)
    assert refs.attached_here("db@ds1") and not refs.attached_here("other@ds1")


def _on_disk(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_a_small_state_is_rewritten_in_place_and_always_reads_whole(path):
    refs = RefCounts(path)
    refs.add("db@ds1", "m1")  # the first write of a process replaces the file
    inode = os.stat(path).st_ino
    for i in range(2, 6):
        refs.add("db@ds1", f"m{i}")
    longest = os.path.getsize(path)
    for i in range(1, 6):
        refs.release("db@ds1", f"m{i}")
        assert os.stat(path).st_ino == inode  # rewritten in place, never renamed over
        assert _on_disk(path)["refs"] == ({"db@ds1": {f"m{j}": 1 for j in range(i + 1, 6)}}
                                          if i < 5 else {})
    assert os.path.getsize(path) < longest  # and cut to its new length
    assert RefCounts(path).total("db@ds1") == 0


def test_a_state_over_one_page_is_replaced_whole(path, monkeypatch):
    refs = RefCounts(path)
    refs.add("db@ds1", "m0")
    replaced: list[bool] = []
    real = refcounts.atomic_write_bytes
    monkeypatch.setattr(refcounts, "atomic_write_bytes",
                        lambda *a, **k: (replaced.__setitem__(-1, True), real(*a, **k)))
    for i in range(100):  # several KiB of mount IDs
        replaced.append(False)
        refs.add("db@ds1", f"{i:064d}")
    assert os.path.getsize(path) > 4096
    first = replaced.index(True)  # in place until the state outgrew one page...
    assert first > 0 and all(replaced[first:])  # ...then replaced on every write
    assert RefCounts(path).total("db@ds1") == 101
