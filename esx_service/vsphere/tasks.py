"""Waiting for vSphere tasks by reading ``info.state``/``info.error``/``info.result`` only.

pyVim's WaitForTask reads the whole TaskInfo, whose ``entity`` vcsim fills with a
non-entity (VirtualDiskManager), which pyVmomi refuses to deserialise. Reading just the
three properties we need works on vcsim and real hosts alike. Polling (not
WaitForUpdatesEx) because our tasks are short: the first read usually sees them finished,
so a task costs its call plus one read, where a property filter would cost three
(CreateFilter, WaitForUpdatesEx, DestroyPropertyFilter).

One read serves several tasks at once, and can carry other properties too (``also``): the
reconfigure that attaches a disk and the VM's devices after it are one read (issue 15).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pyVmomi import vim

from ..errors import BackendError
from ..telemetry import report_progress

TASK_PATHS = ["info.state", "info.error", "info.result", "info.progress"]
FIRST_DELAY = 0.02   # seconds before the second look; doubled each time ...
MAX_DELAY = 1.0      # ... up to this
DEFAULT_TIMEOUT = 600.0  # eager-zeroing a large disk can take minutes


class PropertyReader(Protocol):
    def retrieve_one(self, obj: Any, paths: list[str]) -> dict[str, Any]: ...


class ManyReader(Protocol):
    def retrieve_each(self, wanted: list[tuple[Any, list[str]]]) -> list[dict[str, Any]]: ...


@dataclass
class TaskEnd:
    """How a task ended: its result, or its fault (not raised, for the caller to judge)."""

    result: Any = None
    error: BaseException | None = None


def wait_for_tasks(reader: ManyReader, tasks: list[vim.Task], what: str,
                   also: list[tuple[Any, list[str]]] | None = None,
                   timeout: float = DEFAULT_TIMEOUT,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic
                   ) -> tuple[list[TaskEnd], list[dict[str, Any]]]:
    """Block until every task ends, reading all of them (and the ``also`` properties) in
    one round trip per look. Answers each task's end and the ``also`` properties as read
    in the last look, which saw every task finished."""
    wanted = [(task, TASK_PATHS) for task in tasks] + list(also or [])
    deadline = clock() + timeout
    delay = FIRST_DELAY
    while True:
        found = reader.retrieve_each(wanted)
        states = [props.get("info.state") for props in found[:len(tasks)]]
        if all(state in (vim.TaskInfo.State.success, vim.TaskInfo.State.error)
               for state in states):
            ends = []
            for task, props in zip(tasks, found[:len(tasks)], strict=True):
                error = props.get("info.error")
                if props.get("info.state") == vim.TaskInfo.State.error and not isinstance(
                        error, BaseException):
                    error = BackendError(f"{what}: vSphere task {task._moId} failed "
                                         "without a fault")
                ends.append(TaskEnd(props.get("info.result"),
                                    error if isinstance(error, BaseException) else None))
            return ends, found[len(tasks):]
        if clock() >= deadline:
            raise BackendError(f"{what}: vSphere tasks still {states} after {timeout:.0f}s; "
                               "giving up waiting (they may still finish)")
        sleep(delay)
        delay = min(delay * 2, MAX_DELAY)


def wait_for_task(reader: PropertyReader, task: vim.Task, what: str,
                  timeout: float = DEFAULT_TIMEOUT,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> Any:
    """Block until ``task`` ends; return its result or raise its vSphere fault as is.

    Raising the fault untranslated lets callers treat some as success (a missing file on
    delete) before translating the rest with ``faults.translate``.
    """
    deadline = clock() + timeout
    delay = FIRST_DELAY
    while True:
        props = reader.retrieve_one(task, TASK_PATHS)
        state = props.get("info.state")
        if state == vim.TaskInfo.State.success:
            return props.get("info.result")
        if state == vim.TaskInfo.State.error:
            error = props.get("info.error")
            if isinstance(error, BaseException):
                raise error
            raise BackendError(f"{what}: vSphere task {task._moId} failed without a fault")
        if isinstance(props.get("info.progress"), int):
            report_progress(props["info.progress"], 100, "percent")  # the admin CLI shows it
        if clock() >= deadline:
            raise BackendError(f"{what}: vSphere task {task._moId} still {state} after "
                               f"{timeout:.0f}s; giving up waiting (the task may still finish)")
        sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
