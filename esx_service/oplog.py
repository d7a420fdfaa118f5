"""One log line per operation (op id, op, volume, VM, duration, outcome) and the drain that
lets in-flight operations finish on stop while new ones are declined."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .errors import DockvolsError, ServiceStopping

log = logging.getLogger("dockvols.ops")
_ids = itertools.count(1)


def outcome_of(error: BaseException | None, expected: type[Exception]) -> str:
    """``ok``, the code of an ``expected`` error, or ``crash:<type>`` for anything else."""
    if error is None:
        return "ok"
    if isinstance(error, expected):
        return str(getattr(error, "code", type(error).__name__))
    return f"crash:{type(error).__name__}"


class OpObserver(Protocol):
    """Told when each operation starts and ends (metrics, the recent-operations ring)."""

    def started(self, op_id: str, op: str, vm: str, volume: str) -> Any: ...

    def finished(self, token: Any, error: BaseException | None,
                 expected: type[Exception]) -> None: ...


@contextmanager
def logged(logger: logging.Logger, expected: type[Exception], message: str,
           *args: object) -> Iterator[None]:
    """When the block ends, log ``message % args`` with its duration and outcome: ``ok``,
    the code of an ``expected`` error, or ``crash:<type>`` (at ERROR) for anything else."""
    start = time.monotonic()
    outcome = "ok"
    try:
        yield
    except Exception as exc:
        outcome = outcome_of(exc, expected)
        raise
    finally:
        level = logging.ERROR if outcome.startswith("crash") else logging.INFO
        logger.log(level, message + " duration_ms=%.1f outcome=%s", *args,
                   (time.monotonic() - start) * 1000, outcome)


class OperationGate:
    def __init__(self, observer: OpObserver | None = None) -> None:
        self._observer = observer
        self._cond = threading.Condition()
        self._running = 0
        self._stopping = False

    @contextmanager
    def operation(self, op: str, vm: str, volume: str = "-") -> Iterator[str]:
        op_id = f"op-{next(_ids)}"
        with self._cond:
            if self._stopping:
                raise ServiceStopping(f"dockvols service is stopping; {op} of {volume} declined, "
                                      "retry when it is back")
            self._running += 1
        token = self._observer.started(op_id, op, vm, volume) if self._observer else None
        error: BaseException | None = None
        try:
            with logged(log, DockvolsError, "%s op=%s volume=%s vm=%s", op_id, op, volume, vm):
                yield op_id
        except BaseException as exc:
            error = exc
            raise
        finally:
            if self._observer is not None:
                self._observer.finished(token, error, DockvolsError)
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Decline new operations; wait up to ``timeout`` for running ones. True if drained."""
        with self._cond:
            self._stopping = True
            return self._cond.wait_for(lambda: self._running == 0, timeout)
