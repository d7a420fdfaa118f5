"""The fenced metadata write over the vSphere file API, with a scripted session: the two
moves (into the lease's staging folder, then into place) are sent back to back and waited
for in one read. vcsim runs every task before answering the call, so the case where a
server runs the second move before the first has finished is covered here only."""

from __future__ import annotations

from typing import Any

import pytest
from pyVmomi import vim

from esx_service.errors import LeaseLost
from esx_service.leases import Lease
from esx_service.vsphere.datastore_files import HttpDatastoreFiles
from esx_service.vsphere.tasks import TaskEnd


class Moves:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.deleted: list[str] = []

    def MoveDatastoreFile_Task(self, sourceName: str, destinationName: str,
                               **_: Any) -> vim.Task:
        self.sent.append((sourceName, destinationName))
        return vim.Task(f"task-{len(self.sent)}")

    def DeleteDatastoreFile_Task(self, name: str, **_: Any) -> vim.Task:
        self.deleted.append(name)
        return vim.Task("task-delete")


class Session:
    """Answers the pair of moves with ``ends``; any single move waited for on its own
    (a repeat of the second) succeeds."""

    def __init__(self, *ends: TaskEnd) -> None:
        self.file_manager = Moves()
        self.ends = list(ends)
        self.single_waits = 0

    def invoke(self, call: Any, idempotent: bool = False) -> Any:
        return call()

    def http(self, method: str, path: str, query: dict, body: bytes | None = None
             ) -> tuple[int, bytes]:
        return 201, b""

    def wait_all(self, tasks: list, what: str, also: Any = None) -> tuple[list, list]:
        return self.ends, []

    def wait(self, task: Any, what: str) -> None:
        self.single_waits += 1


def _lease() -> Lease:
    return Lease("ds1", "dockvols/g/.lease-v", "h_1_2_3_ab", "volume v@ds1", 15.0,
                 clock=lambda: 0.0, renewed_at=0.0)


def _files(session: Session) -> HttpDatastoreFiles:
    return HttpDatastoreFiles(session, vim.Datacenter("dc-1"), "DC0",  # type: ignore[arg-type]
                              browser=lambda ds: None)


def test_a_fenced_write_sends_both_moves_before_waiting_and_reads_them_once():
    session = Session(TaskEnd(), TaskEnd())
    _files(session).write("ds1", "dockvols/g/v.json", b"{}", fence=_lease())
    (tmp, staged), (staged_again, target) = session.file_manager.sent
    assert staged.startswith("[ds1] dockvols/g/.lease-v/h_1_2_3_ab/") and staged == staged_again
    assert target == "[ds1] dockvols/g/v.json" and session.single_waits == 0


def test_a_second_move_run_before_the_first_finished_is_sent_again():
    session = Session(TaskEnd(), TaskEnd(error=vim.fault.FileNotFound(file="staged")))
    _files(session).write("ds1", "dockvols/g/v.json", b"{}", fence=_lease())
    assert len(session.file_manager.sent) == 3 and session.single_waits == 1
    assert session.file_manager.sent[2] == session.file_manager.sent[1]


def test_a_first_move_refused_for_a_missing_staging_folder_is_a_lost_lease():
    missing = vim.fault.FileNotFound(file="staging")
    session = Session(TaskEnd(error=missing), TaskEnd(error=vim.fault.FileNotFound(file="x")))
    lease = _lease()
    with pytest.raises(LeaseLost):
        _files(session).write("ds1", "dockvols/g/v.json", b"{}", fence=lease)
    assert lease.lost and len(session.file_manager.sent) == 2
    (tmp, _), _ = session.file_manager.sent
    assert session.file_manager.deleted == [tmp]  # its temporary file does not linger


class Ordered(Session):
    """Records, in order, every move sent and every single wait."""

    def __init__(self, *ends: TaskEnd, failing_wait: Exception | None = None) -> None:
        super().__init__(*ends)
        self.log: list[str] = []
        self.failing_wait = failing_wait
        moves = self.file_manager
        sent = moves.MoveDatastoreFile_Task

        def move(sourceName: str, destinationName: str, **kw: Any) -> vim.Task:
            self.log.append(f"move {sourceName.rpartition('/')[2]}")
            return sent(sourceName=sourceName, destinationName=destinationName, **kw)

        moves.MoveDatastoreFile_Task = move  # type: ignore[method-assign]

    def wait(self, task: Any, what: str) -> None:
        self.log.append(f"wait {task._moId}")
        if self.failing_wait is not None:
            raise self.failing_wait


def test_a_fenced_delete_sends_its_move_and_reads_its_end_only_when_the_lease_settles():
    session = Ordered(TaskEnd(), TaskEnd())
    lease = _lease()
    files = _files(session)
    files.delete("ds1", "dockvols/g/v.json", fence=lease)
    assert session.log == ["move v.json"]  # answered without waiting for the move
    # the next write under the lease (a create of the same name) reads that end first,
    # so its record can never be moved away by the delete sent before it
    files.write("ds1", "dockvols/g/v.json", b"{}", fence=lease)
    assert session.log[:2] == ["move v.json", "wait task-1"]
    assert len(session.log) == 4 and not lease.pending


def test_a_fenced_delete_refused_later_marks_the_lease_lost_and_forgets_the_memo():
    session = Ordered(failing_wait=vim.fault.FileNotFound(file="staging"))
    session.http = lambda *a, **k: (200, b"{}")  # type: ignore[method-assign]
    lease = _lease()
    lease.memo["metadata"] = None
    _files(session).delete("ds1", "dockvols/g/v.json", fence=lease)
    lease.settle()  # the record is still there: the staging folder was gone
    assert lease.lost and lease.memo == {} and not lease.pending
