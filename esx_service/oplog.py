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
        start = time.monotonic()
        outcome = "ok"
        try:
            yield op_id
        except DockvolsError as exc:
            outcome = exc.code
            raise
        except Exception as exc:
            outcome = f"crash:{type(exc).__name__}"
            raise
        finally:
            elapsed_ms = (time.monotonic() - start) * 1000
            level = logging.ERROR if outcome.startswith("crash") else logging.INFO
            log.log(level, "%s op=%s volume=%s vm=%s duration_ms=%.1f outcome=%s",
                    op_id, op, volume, vm, elapsed_ms, outcome)
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Decline new operations; wait up to ``timeout`` for running ones. True if drained."""
        with self._cond:
            self._stopping = True
            return self._cond.wait_for(lambda: self._running == 0, timeout)
