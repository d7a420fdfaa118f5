"""Progress of long admin commands on a terminal: while a command's request runs (a clone,
an eagerzeroedthick create, a resize, removing a vmgroup's volumes), poll the service's
running operations and keep one status line up to date on stderr.

Standard library only (the admin CLI runs on ESXi). Progress is what the backend reports:
a vSphere task's percentage, or bytes written on the local backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO, TypeVar

from dockvols_common.sizes import rounded_size_text

T = TypeVar("T")
ADMIN_VM = "admin"  # the identity of every call on the admin socket
MB = 1024 * 1024


def describe(ops: list[dict], elapsed: float) -> str:
    """One line for the admin's running operations, e.g. ``create db: 45% (4.5gb of 10gb)``."""
    parts = []
    for op in ops:
        p = op.get("progress")
        head = f"{op['op']} {op['volume']}"
        if p and p.get("total"):
            pct = 100 * p["done"] / p["total"]
            if p.get("unit") == "bytes":
                parts.append(f"{head}: {pct:.0f}% ({rounded_size_text(p['done'] / MB)} of "
                             f"{rounded_size_text(p['total'] / MB)})")
            else:
                parts.append(f"{head}: {pct:.0f}%")
        else:
            parts.append(f"{head}: running")
    return "; ".join(parts) + f" [{elapsed:.0f}s]" if parts else ""


def run_with_progress(run: Callable[[], T], running_ops: Callable[[], list[dict]],
                      out: TextIO, delay: float = 1.0, interval: float = 0.5,
                      clock: Callable[[], float] = time.monotonic) -> T:
    """Run ``run`` in a thread; after ``delay`` seconds, redraw a progress line on ``out``
    every ``interval`` until it ends, then erase the line. Its result or error is returned
    or raised as if it ran here."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = run()
        except BaseException as exc:  # re-raised in the caller's thread below
            outcome["error"] = exc

    started = clock()
    worker = threading.Thread(target=target, name="admin-command", daemon=True)
    worker.start()
    worker.join(delay)
    drawn = False
    while worker.is_alive():
        try:
            ops = [o for o in running_ops() if o.get("vm") == ADMIN_VM]
        except Exception:  # progress is a nicety: a failed poll must not fail the command
            ops = []
        line = describe(ops, clock() - started)
        if line:
            out.write("\r\x1b[K" + line)
            out.flush()
            drawn = True
        worker.join(interval)
    if drawn:
        out.write("\r\x1b[K")
        out.flush()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
