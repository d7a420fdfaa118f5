"""One log line per operation (op id, op, volume, VM, duration, outcome) and the drain that
lets in-flight operations finish on stop while new ones are declined."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import DockvolsError, ServiceStopping

log = logging.getLogger("dockvols.ops")
_ids = itertools.count(1)


@contextmanager
def logged(logger: logging.Logger, expected: type[Exception], message: str,
           *args: object) -> Iterator[None]:
    """When the block ends, log ``message % args`` with its duration and outcome: ``ok``,
    the code of an ``expected`` error, or ``crash:<type>`` (at ERROR) for anything else."""
    start = time.monotonic()
    outcome = "ok"
    try:
        yield
    except expected as exc:
        outcome = str(getattr(exc, "code", type(exc).__name__))
        raise
    except Exception as exc:
        outcome = f"crash:{type(exc).__name__}"
        raise
    finally:
        level = logging.ERROR if outcome.startswith("crash") else logging.INFO
        logger.log(level, message + " duration_ms=%.1f outcome=%s", *args,
                   (time.monotonic() - start) * 1000, outcome)


class OperationGate:
    def __init__(self) -> None:
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
        try:
            with logged(log, DockvolsError, "%s op=%s volume=%s vm=%s", op_id, op, volume, vm):
                yield op_id
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Decline new operations; wait up to ``timeout`` for running ones. True if drained."""
        with self._cond:
            self._stopping = True
            return self._cond.wait_for(lambda: self._running == 0, timeout)
