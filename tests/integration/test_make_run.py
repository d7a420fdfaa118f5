"""`make run` ends every process it started: on Ctrl-C (SIGINT to its whole process group,
as a terminal sends it) and on SIGTERM to the script alone (kill, a service manager)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.processes import REPO, answers_activate, wait_for

from .conftest import DRIVER, Docker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[str]:
    """'pid command' of every live process in session ``sid``."""
    found = []
    for proc in psutil.process_iter(["status", "cmdline"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) == sid:
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}".strip())
        except OSError:
            continue  # gone meanwhile
    return found


@pytest.fixture
def make_run(docker: Docker, busybox: str, run_dir: Path) -> Iterator:
    started: list[subprocess.Popen] = []
    driver = f"{DRIVER}-mr"

    def start(argv: list[str]) -> subprocess.Popen:
        root = run_dir / "make-run"
        env = {**os.environ,
               "DOCKER_HOST": docker.host,
               "DOCKVOLS_DRIVER_NAME": driver,
               "DOCKVOLS_SOCKET": str(root / "esx.sock"),
               "DOCKVOLS_ESX_ADDRESS": f"unix://{root / 'esx.sock'}",
               "DOCKVOLS_ADMIN_SOCKET": str(root / "admin.sock"),
               "DOCKVOLS_DATA_DIR": str(root / "data"),
               "DOCKVOLS_DB": str(root / "dockvols.db"),
               "DOCKVOLS_DATASTORES": f"datastore1={root / 'ds1'}",
               "DOCKVOLS_VM_NAME": "make-run-vm",
               "DOCKVOLS_CONFIG": "",
               "DOCKVOLS_MOUNT_ROOT": str(root / "mnt"),
               "DOCKVOLS_STATE_DIR": str(root / "state"),
               "DOCKVOLS_LOG_DIR": str(root / "logs"),
               "DOCKVOLS_SKIP_APT": "1",
               "DOCKVOLS_WEB_LISTEN": f"127.0.0.1:{_free_port()}"}
        root.mkdir(exist_ok=True)
        with open(root / "make-run.out", "wb") as out:  # a pipe nobody reads could fill
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        started.append(proc)
        socket_path = f"/run/docker/plugins/{driver}.sock"
        wait_for(lambda: answers_activate(socket_path) or proc.poll() is not None, 120,
                 "make run to serve the plugin")
        assert proc.poll() is None, (root / "make-run.out").read_text(errors="replace")
        # a volume through the plugin: both halves did real work before the signal
        Docker(docker.host, driver)("volume", "create", "-d", driver, "mr-vol")
        return proc

    yield start
    for proc in started:  # whatever a failed test left
        for line in session_processes(proc.pid):
            os.kill(int(line.split()[0]), signal.SIGKILL)
    Docker(docker.host, driver)("volume", "rm", "-f", "mr-vol", check=False)


def _signal_masks(pid: str) -> str:
    # /proc by hand: psutil does not show a process's ignored and caught signals
    try:
        with open(f"/proc/{pid}/status") as f:
            return pid + " " + " ".join(line.split()[1] for line in f
                                        if line.startswith(("SigIgn", "SigCgt")))
    except OSError:
        return pid + " gone"


def _ends_everything(proc: subprocess.Popen, run_dir: Path, deadline: float = 60) -> int:
    sid = proc.pid
    try:
        wait_for(lambda: not session_processes(sid), deadline, "every process to end",
                 interval=0.2)
    except TimeoutError as exc:
        left = session_processes(sid)
        raise AssertionError(f"still running after the signal: {left}; signals: "
                             f"{[_signal_masks(p.split()[0]) for p in left]}; output:\n"
                             f"{(run_dir / 'make-run' / 'make-run.out').read_text()}") from exc
    out = (run_dir / "make-run" / "make-run.out").read_text(errors="replace")
    assert "make run: stopping" in out, out
    assert "killed" not in out, out  # each ended by itself, none needed SIGKILL
    return proc.wait(5)


def test_ctrl_c_on_make_run_ends_every_process_it_started(make_run, run_dir: Path) -> None:
    proc = make_run(["make", "--no-print-directory", "run"])
    assert any("esx_service" in p for p in session_processes(proc.pid))
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _ends_everything(proc, run_dir)  # make itself says "Interrupt" and exits non-zero
    assert time.monotonic() - started < 45


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_run_sh_alone_ends_every_process_it_started(make_run, run_dir: Path,
                                                                sig: int) -> None:
    proc = make_run(["scripts/run.sh"])
    os.kill(proc.pid, sig)  # the script only, not its group (kill, a service manager)
    assert _ends_everything(proc, run_dir) == 0
