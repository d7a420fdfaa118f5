"""Progress of long admin commands: one redrawn line on a terminal, nothing otherwise."""

from __future__ import annotations

import io
import threading

import pytest

from esx_service.admin.progress import describe, run_with_progress
from esx_service.backends.local import LocalBackend
from esx_service.options import MB
from esx_service.telemetry import Telemetry
from esx_service.volumes import VolumeService

from .conftest import FakeLosetup


def test_a_long_command_redraws_one_progress_line_and_erases_it() -> None:
    polls = [
        [{"op": "create", "volume": "big", "vm": "admin",
          "progress": {"done": 2 * 1024 * MB, "total": 10 * 1024 * MB, "unit": "bytes"}},
         {"op": "attach", "volume": "x", "vm": "vm-7", "progress": None}],  # not the admin's
        [{"op": "resize", "volume": "db", "vm": "admin",
          "progress": {"done": 45, "total": 100, "unit": "percent"}}],
    ]
    done = threading.Event()
    out = io.StringIO()

    def poll() -> list[dict]:
        ops = polls.pop(0) if polls else []
        if not polls:
            done.set()
        return ops

    def command() -> str:
        assert done.wait(5)
        return "result"

    assert run_with_progress(command, poll, out, delay=0, interval=0.01) == "result"
    text = out.getvalue()
    assert "\r\x1b[Kcreate big: 20% (2gb of 10gb) [" in text
    assert "\r\x1b[Kresize db: 45% [" in text
    assert "attach x" not in text
    assert text.endswith("\r\x1b[K")  # the line is erased before the command's output


def test_a_quick_command_draws_nothing_and_errors_pass_through() -> None:
    out = io.StringIO()
    assert run_with_progress(lambda: 7, lambda: [], out, delay=1.0) == 7
    assert out.getvalue() == ""

    def fails() -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        run_with_progress(fails, lambda: [], out, delay=0)


def test_a_failing_poll_does_not_fail_the_command() -> None:
    release = threading.Event()

    def poll() -> list[dict]:
        release.set()
        raise OSError("socket gone")

    out = io.StringIO()
    assert run_with_progress(lambda: release.wait(5), poll, out, delay=0, interval=0.01)
    assert out.getvalue() == ""


def test_operations_without_progress_say_running() -> None:
    assert describe([{"op": "admin-remove", "volume": "v@ds1", "progress": None}], 3.2) == \
        "admin-remove v@ds1: running [3s]"
    assert describe([], 1) == ""


def test_an_eagerzeroedthick_create_on_local_reports_bytes_written(tmp_path) -> None:
    telemetry = Telemetry("local")
    backend = LocalBackend({"ds1": str(tmp_path / "ds1")}, run=FakeLosetup())
    VolumeService(backend, observer=telemetry).create(
        "vm1", "big", {"size": "12mb", "diskformat": "eagerzeroedthick"})
    assert telemetry.recent()[0]["progress"] == {"done": 12 * MB, "total": 12 * MB,
                                                 "unit": "bytes"}
