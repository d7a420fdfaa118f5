"""The host's operations: each gets an id and its one log line (dockvols_common.oplog), its
observer is told when it starts and ends, and the drain lets in-flight operations finish on
stop while new ones are declined."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from dockvols_common.oplog import logged

from .errors import DockvolsError, ServiceStopping

log = logging.getLogger("dockvols.ops")
_ids = itertools.count(1)


class OpObserver(Protocol):
    """Told when each operation starts and ends (metrics, the recent-operations ring)."""

    def started(self, op_id: str, op: str, vm: str, volume: str) -> Any: ...

    def finished(self, token: Any, error: BaseException | None,
                 expected: type[Exception]) -> None: ...


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
