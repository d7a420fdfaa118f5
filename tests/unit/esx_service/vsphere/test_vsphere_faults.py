"""vSphere faults map to the esx_service error family by class (never by message), and task
waiting reads only state/error/result."""

from __future__ import annotations

import pytest
from pyVmomi import vim, vmodl

from esx_service import errors
from esx_service.vsphere.faults import describe, translate
from esx_service.vsphere.tasks import wait_for_task, wait_for_tasks


@pytest.mark.parametrize("fault,expected", [
    (vim.fault.NoDiskSpace(datastore="ds1"), errors.InsufficientSpace),
    (vim.fault.InsufficientStorageSpace(), errors.InsufficientSpace),
    (vim.fault.FileLocked(file="[ds1] a.vmdk"), errors.VolumeInUse),
    (vim.fault.InvalidDatastore(name="nope"), errors.UnknownDatastore),
    (vim.fault.InvalidDatastorePath(datastorePath="x"), errors.BackendError),
    (vim.fault.NoPermission(privilegeId="Datastore.AllocateSpace"), errors.AccessDenied),
    (vim.fault.NotAuthenticated(), errors.BackendError),
    (vim.fault.FileNotFound(file="[ds1] a.vmdk"), errors.BackendError),
    (vim.fault.InvalidDeviceSpec(), errors.BackendError),
    (vmodl.fault.ManagedObjectNotFound(), errors.BackendError),
])
def test_each_fault_class_maps_to_its_error(fault, expected):
    error = translate(fault, "creating disk x")
    assert type(error) is expected
    assert error.message.startswith("creating disk x failed: ")


def test_the_decision_ignores_the_message_text():
    # A message claiming one thing while the class says another: the class wins.
    lying = vim.fault.NoDiskSpace(msg="*types.FileNotFound")
    assert isinstance(translate(lying, "op"), errors.InsufficientSpace)
    other = vim.fault.FileNotFound(msg="No space left on device")
    assert type(translate(other, "op")) is errors.BackendError


def test_vcsim_type_name_messages_are_not_repeated_but_real_ones_are_kept():
    assert describe(vim.fault.FileAlreadyExists(msg="*types.FileAlreadyExists",
                                                file="/x/a-flat.vmdk")) == \
        "FileAlreadyExists file=/x/a-flat.vmdk"
    assert "(Cannot complete the operation)" in describe(
        vim.fault.FileAlreadyExists(msg="Cannot complete the operation", file="a"))


def test_the_message_names_the_file_or_datastore_involved():
    assert "name=nope" in translate(vim.fault.InvalidDatastore(name="nope"), "op").message
    assert "file=[ds1] a.vmdk" in translate(vim.fault.FileNotFound(file="[ds1] a.vmdk"),
                                            "op").message


def test_dockvols_errors_pass_through_and_foreign_exceptions_become_backend_errors():
    original = errors.VolumeInUse("held")
    assert translate(original, "op") is original
    foreign = translate(RuntimeError("boom"), "op")
    assert type(foreign) is errors.BackendError and "boom" in foreign.message


class FakeReader:
    """Answers TaskInfo reads from a script: one dict per read."""

    def __init__(self, *answers: dict) -> None:
        self.answers = list(answers)
        self.paths: list[list[str]] = []

    def retrieve_one(self, obj: object, paths: list[str]) -> dict:
        self.paths.append(paths)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


TASK = vim.Task("task-1")


def test_a_task_is_polled_until_success_reading_only_state_error_result_progress():
    reader = FakeReader({"info.state": "running"}, {"info.state": "queued"},
                        {"info.state": "success", "info.result": "done"})
    sleeps: list[float] = []
    assert wait_for_task(reader, TASK, "op", sleep=sleeps.append) == "done"
    # not the whole TaskInfo: vcsim fills its entity with something pyVmomi refuses
    assert all(p == ["info.state", "info.error", "info.result", "info.progress"]
               for p in reader.paths)
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]  # backs off


def test_a_failed_task_raises_its_fault_untranslated():
    fault = vim.fault.FileNotFound(file="x")
    reader = FakeReader({"info.state": "error", "info.error": fault})
    with pytest.raises(vim.fault.FileNotFound):
        wait_for_task(reader, TASK, "op", sleep=lambda s: None)


def test_a_task_that_never_ends_times_out_with_a_clear_error():
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    reader = FakeReader({"info.state": "running"})
    with pytest.raises(errors.BackendError, match="task-1 still running after 5s"):
        wait_for_task(reader, TASK, "op", timeout=5, sleep=sleep, clock=lambda: now[0])


class FakeManyReader:
    """Answers multi-object reads from a script: one list of dicts per read."""

    def __init__(self, *answers: list[dict]) -> None:
        self.answers = list(answers)
        self.reads: list[list] = []

    def retrieve_each(self, wanted: list) -> list[dict]:
        self.reads.append(wanted)
        return self.answers.pop(0)


def test_several_tasks_and_other_properties_are_read_in_one_round_trip_per_look():
    other = vim.Task("task-2")
    vm = vim.VirtualMachine("vm-1")
    fault = vim.fault.FileNotFound(file="x")
    reader = FakeManyReader(
        [{"info.state": "success"}, {"info.state": "running"}, {"config.hardware.device": []}],
        [{"info.state": "success", "info.result": "a"},
         {"info.state": "error", "info.error": fault}, {"config.hardware.device": ["disk"]}])
    ends, (props,) = wait_for_tasks(reader, [TASK, other], "op",
                                    also=[(vm, ["config.hardware.device"])],
                                    sleep=lambda s: None)
    assert len(reader.reads) == 2  # one read per look, all three objects in it
    assert (ends[0].result, ends[0].error) == ("a", None)
    assert ends[1].error is fault  # not raised: the caller judges it
    assert props == {"config.hardware.device": ["disk"]}  # as of the look that saw the ends
