"""SIGTERM or SIGINT, waited for by a process's main thread (esx_service and the plugin:
dockerd stops a managed plugin with SIGTERM, then SIGKILL after 10 s)."""

from __future__ import annotations

import contextlib
import os
import signal


class StopSignal:
    """The handler only writes a byte to a pipe: it takes no lock. Setting a threading.Event
    from a handler deadlocks when a second signal (Ctrl-C reaches the whole process group,
    then `make run` sends SIGTERM) interrupts the first handler inside the Event's lock,
    and the process then never stops."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a burst of signals never blocks the handler
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)
        # The kernel may deliver the signal to any thread (a server's connection thread,
        # say). Python's own handlers run only in the main thread, and only once it runs
        # bytecode again, which a main thread blocked in read() never does: the service then
        # never stopped (9 of 15 SIGINT+SIGTERM bursts at an esx_service with a client
        # connected). The wakeup fd is written by the C-level handler in whichever thread
        # took the signal, and wakes the read at once.
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def _handle(self, signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"s")

    def wait(self) -> None:
        os.read(self._read, 1)  # retried after each handler (PEP 475) until a byte is there
