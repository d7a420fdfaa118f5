"""Real processes for the benchmarks and the integration tests: dockerd, esx_service and the
plugin, each started with its own paths so neither touches a system dockerd's state. Test code
imports this module; bench/ never imports tests/."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from dockvols_common.http_client import UnixHTTPConnection

REPO = Path(__file__).resolve().parents[1]


CAP_SYS_RESOURCE = 24


def has_sys_resource() -> bool:
    """Whether this machine's capability bounding set has CAP_SYS_RESOURCE, which online
    ext4 growth (resize2fs on a mounted filesystem) needs; a plugin started here can only
    have it then. Read from /proc by hand: psutil does not show capability sets."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def answers_activate(path: str | Path, timeout: float = 2.0) -> bool:
    """True when a VolumeDriver answers /Plugin.Activate on that unix socket."""
    conn = UnixHTTPConnection(str(path), timeout)
    try:
        conn.request("POST", "/Plugin.Activate", body=b"")
        response = conn.getresponse()
        return response.status == 200 and b"VolumeDriver" in response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def remove_dead_socket(path: str) -> bool:
    """Unlink a unix socket nobody listens on (left by a kill -9). dockerd retries every
    socket in /run/docker/plugins for 30 s per call, so a dead one slows every volume ls."""
    if not os.path.exists(path) or not stat.S_ISSOCK(os.stat(path).st_mode):
        return False
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
            return False
        except ConnectionRefusedError:
            os.unlink(path)
            return True
        except OSError:
            return False


class Daemon:
    """A background process with a readiness check, restartable and killable."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path,
                 ready_path: str) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.ready_path = ready_path
        self.proc: subprocess.Popen | None = None

    def start(self, extra_env: Mapping[str, str] | None = None, wait: bool = True) -> None:
        if os.path.exists(self.ready_path) and not os.path.isdir(self.ready_path):
            os.unlink(self.ready_path)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env={**self.env, **(extra_env or {})},
                                     stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=True)
        log.close()
        if wait:
            wait_for(lambda: os.path.exists(self.ready_path) or self.proc.poll() is not None,
                     30, f"{self.name} to listen on {self.ready_path}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"log:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        remove_dead_socket(self.ready_path)
        return self.proc.returncode

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, extra_env: Mapping[str, str] | None = None) -> None:
        self.stop()
        self.start(extra_env)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def python_daemon(name: str, module: str, env: Mapping[str, str], log_path: Path,
                  ready_path: str) -> Daemon:
    return Daemon(name, [sys.executable, "-m", module], env, log_path, ready_path)
