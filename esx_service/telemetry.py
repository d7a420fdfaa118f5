"""What esx_service measures about itself: every volume operation (latency histogram by op,
backend, outcome and fault; a bounded ring of recent ones with their errors; progress of
the running ones) and every vSphere API call (latency by method).

One ``Telemetry`` per process, made in ``main()`` and handed to whoever reports into it.
Backends report progress of long work with ``report_progress()``, which finds the running
operation of the calling thread through a context variable, so no backend signature
changes for it.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from dockvols_common.oplog import outcome_of

from . import __version__
from .metrics import Registry

RECENT_OPS = 200
# Reads are many (dockerd asks Get before every create and polls List) and say little:
# they are counted in the histogram but kept out of the ring of recent operations.
READS = frozenset({"get", "list"})


@dataclass
class OpRecord:
    id: str
    op: str
    volume: str
    vm: str
    started_at: float  # epoch seconds
    duration_s: float | None = None
    outcome: str = "running"  # running | ok | error | crash
    fault: str = ""
    error: str = ""
    # Long work (clone, eagerzeroedthick create, resize): units done of total, and what a
    # unit is ("bytes" on local, "percent" from a vSphere task).
    progress: tuple[int, int, str] | None = None
    _start: float = field(default=0.0, repr=False)

    def view(self) -> dict:
        progress = None
        if self.progress is not None:
            done, total, unit = self.progress
            progress = {"done": done, "total": total, "unit": unit}
        return {"id": self.id, "op": self.op, "volume": self.volume, "vm": self.vm,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
                "duration_ms": None if self.duration_s is None
                else round(self.duration_s * 1000, 1),
                "outcome": self.outcome, "fault": self.fault, "error": self.error,
                "progress": progress}


_current: contextvars.ContextVar[OpRecord | None] = contextvars.ContextVar(
    "dockvols_current_op", default=None)


def report_progress(done: int, total: int, unit: str) -> None:
    """Long-running backend work says how far it is; a no-op outside an operation."""
    record = _current.get()
    if record is not None:
        record.progress = (done, total, unit)


class Telemetry:
    def __init__(self, backend: str, registry: Registry | None = None,
                 recent: int = RECENT_OPS) -> None:
        self.backend = backend
        self.registry = registry or Registry()
        r = self.registry
        self.ops = r.histogram(
            "dockvols_volume_ops_seconds", "Volume operations of esx_service by operation, "
            "backend, outcome (ok, error, crash) and fault code, in seconds",
            ("op", "backend", "outcome", "fault"))
        self.in_flight = r.gauge("dockvols_volume_ops_in_flight",
                                 "Volume operations running now")
        self.api_calls = r.histogram(
            "dockvols_vsphere_api_calls_seconds",
            "vSphere API requests (SOAP methods, /folder file transfers) by method, in seconds",
            ("method",))
        build = r.gauge("dockvols_build_info", "dockvols version and backend of this service",
                        ("version", "backend"))
        build.set(1, version=__version__, backend=backend)
        self._lock = threading.Lock()
        self._recent: deque[OpRecord] = deque(maxlen=recent)
        self._running: dict[str, OpRecord] = {}

    # -- operations (the OperationGate's observer) -------------------------------------
    def started(self, op_id: str, op: str, vm: str, volume: str) -> contextvars.Token:
        record = OpRecord(op_id, op, volume, vm, time.time(),
                          _start=time.monotonic())
        with self._lock:
            self._running[record.id] = record
        self.in_flight.inc()
        return _current.set(record)

    def finished(self, token: contextvars.Token, error: BaseException | None,
                 expected: type[Exception]) -> None:
        record = _current.get()
        _current.reset(token)
        if record is None:
            return
        record.duration_s = time.monotonic() - record._start
        outcome = outcome_of(error, expected)
        record.outcome = "ok" if outcome == "ok" else (
            "crash" if outcome.startswith("crash") else "error")
        record.fault = "" if outcome == "ok" else outcome.removeprefix("crash:")
        if error is not None:
            record.error = str(getattr(error, "message", None) or error)
        self.in_flight.dec()
        self.ops.observe(record.duration_s, op=record.op, backend=self.backend,
                         outcome=record.outcome, fault=record.fault)
        with self._lock:
            self._running.pop(record.id, None)
            if record.op not in READS:
                self._recent.append(record)

    def recent(self, limit: int = RECENT_OPS) -> list[dict]:
        """The last operations, newest first."""
        with self._lock:
            records = list(self._recent)[-limit:]
        return [r.view() for r in reversed(records)]

    def running(self) -> list[dict]:
        with self._lock:
            records = sorted(self._running.values(), key=lambda r: r.started_at)
        return [r.view() for r in records]

    # -- vSphere API calls (the session's observer) ------------------------------------
    def api_call(self, method: str, seconds: float) -> None:
        self.api_calls.observe(seconds, method=method)
