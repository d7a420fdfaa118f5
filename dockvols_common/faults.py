"""Fault injection for crash tests: ``DOCKVOLS_FAULT_POINTS=create.disk_written,...`` makes
the process group kill itself with SIGKILL when it reaches a named point (the group, so a
command it is running, mkfs or losetup, dies with it, as in the tests' kill -9). ``point=SECONDS``
instead stalls there that long (a slow host, so a crash elsewhere lands mid-operation).
Off unless set."""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger("dockvols.faults")


def fault_point(name: str) -> None:
    points = os.environ.get("DOCKVOLS_FAULT_POINTS")
    if not points:
        return
    for point in points.split(","):
        point_name, _, delay = point.partition("=")
        if point_name != name:
            continue
        if delay:
            log.warning("fault point %s reached: stalling %s s", name, delay)
            time.sleep(float(delay))
            return
        log.warning("fault point %s reached: killing this process group (SIGKILL)", name)
        os.killpg(os.getpgrp(), signal.SIGKILL)
        # Still here only as PID 1 of a PID namespace, which ignores a SIGKILL sent from
        # inside it: it went on writing files for a moment after its "death" until the
        # kernel killed it with its parent. Die here, as the point promises.
        os._exit(137)
