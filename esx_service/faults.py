"""Fault injection for crash tests: ``DOCKVOLS_FAULT_POINTS=create.disk_written,...`` makes
the process kill itself with SIGKILL when it reaches a named point. Off unless set."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("dockvols.faults")


def fault_point(name: str) -> None:
    points = os.environ.get("DOCKVOLS_FAULT_POINTS")
    if points and name in points.split(","):
        log.warning("fault point %s reached: killing this process (SIGKILL)", name)
        os.kill(os.getpid(), signal.SIGKILL)
