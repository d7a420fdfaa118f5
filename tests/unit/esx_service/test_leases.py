"""Leases on a datastore directory (LocalLeaseStore on tmp_path): exclusion, expiry and
takeover, fencing of late writes, provably dead holders, and the temp-file sweep. Each
"host" is its own LeaseManager (and ClusterLocks), as each service process would have."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading

import pytest

from dockvols_common.instance import Instance, Tag, parse_tag, temp_name, temp_tag
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.cluster_locks import ClusterLocks, lease_path
from esx_service.errors import BackendError, LeaseLost, VolumeBusy
from esx_service.lease_store import LocalLeaseStore
from esx_service.leases import LeaseManager
from esx_service.volumes import VolumeService
from tests.fakes import FakeClock, FakeLosetup

LOC = DiskLocation("ds1", "_DEFAULT", "db")
PATH = "dockvols/_DEFAULT/.lease-db"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "ds1" / "dockvols").mkdir(parents=True)
    return tmp_path / "ds1"


def _manager(root, clock=None, lease=2.0, wait=0.5, host="h1") -> LeaseManager:
    store = LocalLeaseStore(lambda ds: str(root))
    kwargs = {"clock": clock, "sleep": lambda s: None} if clock else {}
    return LeaseManager(store, Instance(host), lease_seconds=lease, wait_seconds=wait,
                        **kwargs)


def test_a_held_lease_excludes_another_host_until_released(root):
    a, b = _manager(root, host="a"), _manager(root, host="b")
    held = a.acquire("ds1", PATH, "volume db@ds1")
    assert held is not None
    assert b.acquire("ds1", PATH, "volume db@ds1", wait=False) is None
    with pytest.raises(VolumeBusy, match="locked by host a"):
        b.acquire("ds1", PATH, "volume db@ds1")
    a.release(held)
    assert not (root / PATH).exists()  # nothing left behind
    assert b.acquire("ds1", PATH, "volume db@ds1", wait=False) is not None


def test_a_silent_holder_is_taken_over_after_the_lease_and_its_late_write_refused(root):
    clock = FakeClock()
    a, b = _manager(root, clock, host="a"), _manager(root, clock, host="b")
    backend = LocalBackend({"ds1": str(root)})
    lease_a = a.acquire("ds1", PATH, "volume db@ds1")
    backend.write_metadata(LOC, {"by": "a"}, fence=lease_a)
    assert b.acquire("ds1", PATH, "volume db@ds1", wait=False) is None  # first look
    clock.now += 1.9
    assert b.acquire("ds1", PATH, "volume db@ds1", wait=False) is None  # not yet
    clock.now += 0.2
    lease_b = b.acquire("ds1", PATH, "volume db@ds1", wait=False)
    assert lease_b is not None
    backend.write_metadata(LOC, {"by": "b"}, fence=lease_b)
    # a wakes up believing it holds the lease: the datastore refuses its write
    lease_a.renewed_at = clock.now
    with pytest.raises(LeaseLost, match="taken over"):
        backend.write_metadata(LOC, {"by": "a, late"}, fence=lease_a)
    with pytest.raises(LeaseLost):
        backend.delete_metadata(LOC, fence=lease_a)
    assert backend.read_metadata(LOC) == {"by": "b"}
    a.renew_all()
    assert lease_a.lost
    a.release(lease_a)  # releasing a lost lease leaves the new holder alone
    assert backend.read_metadata(LOC) == {"by": "b"}
    backend.write_metadata(LOC, {"by": "b", "n": 2}, fence=lease_b)


def test_renewal_keeps_a_lease_past_its_duration(root):
    clock = FakeClock()
    a, b = _manager(root, clock, host="a"), _manager(root, clock, host="b")
    held = a.acquire("ds1", PATH, "volume db@ds1")
    for _ in range(10):
        assert b.acquire("ds1", PATH, "volume db@ds1", wait=False) is None
        clock.now += 0.5
        stamp = os.stat(root / held.staging).st_mtime_ns
        a.renew_all()
        if os.stat(root / held.staging).st_mtime_ns == stamp:  # coarse clock: force a change
            os.utime(root / held.staging, ns=(stamp + 1, stamp + 1))
    held.check()  # renewed: still trusted


def test_a_holder_that_was_not_renewed_stops_trusting_its_lease(root):
    clock = FakeClock()
    a = _manager(root, clock)
    held = a.acquire("ds1", PATH, "volume db@ds1")
    clock.now += 2.0 * 0.76
    with pytest.raises(LeaseLost, match="not renewed"):
        held.check()


def test_a_provably_dead_holder_on_this_host_is_taken_over_at_once(root):
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = Instance("h1")
    tag = Tag(me.host, me.locality, dead.pid, "1", "abc")
    (root / PATH / str(tag)).mkdir(parents=True)
    half = temp_name("db.json")
    (root / PATH / str(tag) / half).write_text("{half")
    b = _manager(root)
    lease = b.acquire("ds1", PATH, "volume db@ds1", wait=False)
    assert lease is not None
    # the dead entry is a grave now, the new holder's to finish and delete
    [grave] = lease.graves
    assert sorted(os.listdir(root / PATH)) == [grave, lease.tag]
    assert os.listdir(root / PATH / grave) == [half]
    b.bury(lease)
    assert os.listdir(root / PATH) == [lease.tag]  # the dead entry and its temp file: gone


def test_a_holder_in_another_pid_namespace_or_host_is_never_presumed_dead(root):
    me = Instance("h1")
    dead = subprocess.Popen(["true"])
    dead.wait()
    for locality in ("0123456789", me.locality[::-1]):
        tag = Tag("h1", locality, dead.pid, "1", "abc")  # same host id, same PID: no proof
        assert not me.provably_dead(tag)
    assert me.provably_dead(Tag("h1", me.locality, dead.pid, "1", "abc"))
    assert not me.provably_dead(me.tag())


def test_a_process_whose_proc_is_another_namespaces_presumes_nobody_dead(monkeypatch):
    """PID 1 of a namespace without its own /proc reads the host's /proc: its PIDs name
    other processes there, so no PID it looks up proves anything."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    sighted = Instance("h1")
    assert sighted.provably_dead(Tag("h1", sighted.locality, dead.pid, "1", "abc"))
    real_readlink = os.readlink
    monkeypatch.setattr(os, "readlink",
                        lambda p: "1" if p == "/proc/self" else real_readlink(p))
    blind, other_blind = Instance("h1"), Instance("h1")
    for locality in (blind.locality, other_blind.locality, sighted.locality):
        assert not blind.provably_dead(Tag("h1", locality, dead.pid, "1", "abc"))
    assert not blind.provably_dead(other_blind.tag())


def test_threads_as_hosts_never_lose_an_update(root):
    """Eight "hosts" increment one counter under one lease, 25 times each."""
    counter = root / "counter"
    counter.write_text("0")
    errors = []

    def host(n: int) -> None:
        locks = ClusterLocks(_manager(root, lease=5.0, wait=30.0, host=f"h{n}"))
        try:
            for _ in range(25):
                with locks.hold("ds1/_DEFAULT/db"):
                    value = int(counter.read_text())
                    counter.write_text(str(value + 1))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=host, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert counter.read_text() == "200"


def test_lease_paths_of_the_volume_layer_keys():
    assert lease_path("ds1/_DEFAULT/db") == ("ds1", "dockvols/_DEFAULT/.lease-db",
                                             "volume db@ds1")
    assert lease_path("quota:ds1/team-a")[:2] == ("ds1", "dockvols/team-a/.quota.lease")
    assert lease_path("space:ds1")[:2] == ("ds1", "dockvols/.space.lease")
    assert lease_path("something-else") is None


def test_temp_names_are_unique_and_carry_the_writer():
    names = {temp_name("db.json") for _ in range(1000)}
    assert len(names) == 1000
    tag = temp_tag(next(iter(names)))
    assert tag is not None and tag.pid == os.getpid()
    assert parse_tag(str(tag)) == tag
    assert temp_tag(".db.json.tmp-123") is None and temp_tag("db.json") is None


def test_recovery_sweeps_dead_temp_files_but_not_a_live_writers(root):
    folder = root / "dockvols" / "_DEFAULT"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = Instance("h1")
    dead_tag = Tag(me.host, me.locality, dead.pid, "1", "abc")
    elsewhere = Tag("other-host", "0123456789", os.getpid(), "1", "abc")
    (folder / f".gone.json.tmp-{dead_tag}").write_text("{")     # dead writer, this host
    (folder / ".old.json.tmp-4242").write_text("{")             # old format, nobody holds
    (folder / f".busy.json.tmp-{elsewhere}").write_text("{")     # another host, holds busy
    (folder / f".free.vmdk.tmp-{elsewhere}").write_text("x")     # another host, lease free
    other = _manager(root, host="other-host")
    busy = other.acquire("ds1", "dockvols/_DEFAULT/.lease-busy", "volume busy@ds1")
    locks = ClusterLocks(_manager(root))
    assert locks.sweep("ds1") == 3
    left = sorted(os.listdir(folder))
    assert left == sorted([".lease-busy", f".busy.json.tmp-{elsewhere}"])
    other.release(busy)


def test_recovery_sweeps_a_dead_writers_temp_file_of_a_volume_whose_lease_it_kept(root):
    """Recovery holds each volume's lease, and keeps it: the sweep after it must not take
    its own kept lease for another host's and leave the dead writer's temp file."""
    service = VolumeService(LocalBackend({"ds1": str(root)}, run=FakeLosetup()), "ds1",
                            locks=ClusterLocks(_manager(root), keep_seconds=60.0))
    service.create("vm1", "db", {"size": "8mb"})
    elsewhere = Tag("other-host", "0123456789", 1, "1", "abc")  # never provably dead
    temp = root / "dockvols" / "_DEFAULT" / f".db.vmdk.tmp-{elsewhere}"
    temp.write_text("x")
    assert service.recover()["temp_files"] == 1
    assert not temp.exists()
    assert service.get("vm1", "db")["status"] == "detached"  # the volume itself untouched


def test_volume_operations_on_two_hosts_share_one_datastore(root):
    """The whole volume layer over leases: two services, one directory."""
    run = FakeLosetup()
    locks = [ClusterLocks(_manager(root, host=h, wait=10.0)) for h in ("a", "b")]
    services = [VolumeService(LocalBackend({"ds1": str(root)}, run=run), "ds1", locks=lock)
                for lock in locks]
    results: list[object] = []

    def create(service: VolumeService) -> None:
        try:
            results.append(service.create("vm-x", "db", {"size": "8mb"})["disk_uuid"])
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and results[0] == results[1]  # one disk, both told the same
    meta = json.loads((root / "dockvols/_DEFAULT/db.json").read_text())
    assert meta["status"] == "detached" and meta["disk_uuid"] == results[0]
    services[0].attach("vm-a", "db")
    with pytest.raises(Exception, match="attached to VM vm-a"):
        services[1].attach("vm-b", "db")
    assert services[1].get("vm-b", "db")["attached_to"] == "vm-a"
    for lock in locks:  # kept leases go soon after their operation, or at shutdown
        lock.close()
    assert sorted(os.listdir(root / "dockvols/_DEFAULT")) == ["db-flat.vmdk", "db.json",
                                                              "db.vmdk"]


def test_detach_and_recovery_release_a_loop_device_on_a_deleted_extent(root):
    run = FakeLosetup()
    backend = LocalBackend({"ds1": str(root)}, run=run)
    service = VolumeService(backend, "ds1")
    service.create("vm1", "db", {"size": "8mb"})
    service.create("vm1", "gone", {"size": "8mb"})
    attach = service.attach("vm1", "db")["attach"]
    stale = service.attach("vm1", "gone")["attach"]
    extent = str(root / "dockvols/_DEFAULT/db-flat.vmdk")
    os.unlink(extent)
    run.devices[attach["device"]] = (extent + " (deleted)", False)
    backend.detach_disk(LOC, "vm1", attach)  # the API's detach still finds it
    assert attach["device"] not in run.devices
    gone = str(root / "dockvols/_DEFAULT/gone-flat.vmdk")
    run.devices[stale["device"]] = (gone + " (deleted)", False)
    assert backend.release_orphans("ds1") == 1
    assert run.devices == {}


class _Counting(LocalLeaseStore):
    """The local store, counting the operations a remote store pays a round trip for."""

    def __init__(self, root) -> None:
        super().__init__(lambda ds: str(root))
        self.calls: list[str] = []

    def enter(self, datastore, relative):
        self.calls.append("enter")
        return super().enter(datastore, relative)

    def list_dir(self, datastore, relative):
        self.calls.append("list_dir")
        return super().list_dir(datastore, relative)

    def remove_tree(self, datastore, relative):
        self.calls.append("remove_tree")
        return super().remove_tree(datastore, relative)


def test_an_uncontended_take_enters_then_lists_once(root):
    store = _Counting(root)
    manager = LeaseManager(store, Instance("a"), lease_seconds=2.0, wait_seconds=0.5)
    held = manager.acquire("ds1", PATH, "volume db@ds1")
    assert held is not None and store.calls == ["enter", "list_dir"]


def test_a_kept_lease_serves_the_next_operation_and_excludes_others_until_let_go(root):
    clock = FakeClock()
    store = _Counting(root)
    a = ClusterLocks(LeaseManager(store, Instance("a"), lease_seconds=2.0, wait_seconds=0.5,
                                  clock=clock, sleep=lambda s: None),
                     keep_seconds=1.0, clock=clock)
    b = _manager(root, clock, host="b")
    with a.hold("ds1/_DEFAULT/db"):
        first = a.fence("ds1/_DEFAULT/db")
    store.calls.clear()
    with a.hold("ds1/_DEFAULT/db"):  # the next operation: no datastore operation at all
        assert a.fence("ds1/_DEFAULT/db") is first
    assert store.calls == []
    assert b.acquire("ds1", PATH, "volume db@ds1", wait=False) is None  # kept is held
    assert a.release_kept(older_than=1.0) == 0  # not idle long enough
    clock.now += 1.0
    assert a.release_kept(older_than=1.0) == 1
    assert store.calls == ["remove_tree"]
    assert b.acquire("ds1", PATH, "volume db@ds1", wait=False) is not None
    a.close()


def test_a_kept_lease_no_longer_trusted_is_let_go_and_a_fresh_one_taken(root):
    clock = FakeClock()
    a = ClusterLocks(_manager(root, clock, host="a"), keep_seconds=5.0, clock=clock)
    with a.hold("ds1/_DEFAULT/db"):
        first = a.fence("ds1/_DEFAULT/db")
    clock.now += 2.0 * 0.76  # not renewed (no renewer here) past the holder's margin
    with a.hold("ds1/_DEFAULT/db"):
        fresh = a.fence("ds1/_DEFAULT/db")
        assert fresh is not None and fresh.tag != first.tag
        assert os.listdir(root / PATH) == [fresh.tag]  # the old entry went
    a.close()
    assert not (root / PATH).exists()  # close lets every kept lease go


def test_a_mounted_datastore_keeps_a_lease_briefly_for_the_next_operation(root):
    locks = ClusterLocks(_manager(root))
    assert locks.keep_seconds == 0.25  # a take costs two mkdirs and two rmdirs here
    with locks.hold("ds1/_DEFAULT/db"):
        first = locks.fence("ds1/_DEFAULT/db")
    assert (root / PATH).exists()  # kept
    with locks.hold("ds1/_DEFAULT/db"):
        assert locks.fence("ds1/_DEFAULT/db") is first  # reused, nothing taken
    assert locks.release_kept(older_than=0.0) == 1
    assert not (root / PATH).exists()
    locks.close()


def test_the_local_store_removes_empty_and_full_folders_files_and_nothing(tmp_path):
    store = LocalLeaseStore(lambda ds: str(tmp_path))
    (tmp_path / "empty").mkdir()
    (tmp_path / "full" / "deeper").mkdir(parents=True)
    (tmp_path / "full" / "deeper" / ".x.tmp").write_text("left by a dead writer")
    (tmp_path / "file").write_text("x")
    for name in ("empty", "full", "file", "missing"):
        store.remove_tree("ds", name)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_datastore_file_error_is_a_backend_error_naming_the_operation_and_file(root,
                                                                                 monkeypatch):
    store = LocalLeaseStore(lambda ds: str(root))

    def eio(path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "listdir", eio)
    with pytest.raises(BackendError, match=r"listing \[ds1\] dockvols failed: .*Input/output"):
        store.list_dir("ds1", "dockvols")


def test_a_kept_lease_spares_the_next_operation_reading_the_metadata_again(root):
    """Under a lease kept since this service last wrote the metadata nobody else can have
    written it: attach, detach and remove read it from the lease's memo, not the file."""
    clock = FakeClock()
    backend = LocalBackend({"ds1": str(root)}, run=FakeLosetup())
    locks = ClusterLocks(_manager(root, clock, host="a"), keep_seconds=5.0, clock=clock)
    service = VolumeService(backend, "ds1", locks=locks)
    reads: list[str] = []
    real_read = backend.read_metadata
    backend.read_metadata = lambda loc: reads.append(loc.name) or real_read(loc)  # type: ignore[method-assign]
    service.create("vm-x", "db", {"size": "8mb"})
    assert reads == ["db"]  # a fresh lease: read
    service.attach("vm-x", "db")
    service.detach("vm-x", "db")
    assert reads == ["db"]  # kept: from the memo, and what it says is what the file says
    assert json.loads((root / "dockvols/_DEFAULT/db.json").read_text())["status"] == \
        "detached"
    locks.release_kept()
    service.remove("vm-x", "db")
    assert reads == ["db", "db"]  # a fresh lease reads again
    assert not (root / "dockvols/_DEFAULT/db.json").exists()
    locks.close()


def test_a_lease_no_longer_trusted_reads_the_metadata_again(root):
    clock = FakeClock()
    backend = LocalBackend({"ds1": str(root)}, run=FakeLosetup())
    locks = ClusterLocks(_manager(root, clock, host="a", lease=60.0), keep_seconds=5.0,
                         clock=clock)
    service = VolumeService(backend, "ds1", locks=locks)
    service.create("vm-x", "db", {"size": "8mb"})
    with locks.hold("ds1/_DEFAULT/db"):
        lease = locks.fence("ds1/_DEFAULT/db")
        assert lease is not None and lease.memo
        lease.memo["metadata"] = {"status": "from the memo"}
        assert service._read(LOC) == {"status": "from the memo"}  # trusted: used
        lease.renewed_at -= 60.0  # as if its renewals had stopped
        data = service._read(LOC)  # not trusted: read from the file
        assert data is not None and data["status"] == "detached"
    locks.close()


def test_a_lease_settles_what_was_sent_under_it_before_its_release(tmp_path):
    store = LocalLeaseStore(lambda ds: str(tmp_path))
    manager = LeaseManager(store, Instance("h1"), lease_seconds=5.0)
    lease = manager.acquire("ds1", "dockvols/g/.lease-v", "volume v@ds1")
    assert lease is not None
    seen = []
    lease.later(lambda: seen.append(os.path.isdir(tmp_path / lease.staging)))
    manager.release(lease)
    assert seen == [True]  # ran while its staging folder was still there
