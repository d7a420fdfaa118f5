from __future__ import annotations

import logging
import threading

import pytest

from esx_service.errors import ServiceStopping, VolumeInUse
from esx_service.op_gate import OperationGate

WAIT = 5.0


def test_drain_on_an_idle_gate_returns_at_once():
    assert OperationGate().drain(timeout=WAIT) is True


def test_after_drain_new_operations_are_declined_naming_the_operation():
    gate = OperationGate()
    gate.drain(timeout=WAIT)
    with pytest.raises(ServiceStopping) as err:
        with gate.operation("create", "vm1", "db@ds1"):
            pytest.fail("the body of a declined operation ran")
    assert "create of db@ds1 declined" in err.value.message
    assert err.value.http_status == 503


def test_drain_waits_for_running_operations_and_declines_new_ones():
    gate = OperationGate()
    inside, release, finished = threading.Event(), threading.Event(), threading.Event()

    def running_op():
        with gate.operation("attach", "vm1", "db"):
            inside.set()
            assert release.wait(WAIT)
        finished.set()

    op = threading.Thread(target=running_op, daemon=True)
    op.start()
    assert inside.wait(WAIT)

    assert gate.drain(timeout=0.05) is False  # still running: not drained
    with pytest.raises(ServiceStopping):
        with gate.operation("create", "vm1", "other"):
            pass

    result = []
    drainer = threading.Thread(target=lambda: result.append(gate.drain(timeout=WAIT)),
                               daemon=True)
    drainer.start()
    release.set()
    drainer.join(WAIT)
    assert result == [True]
    assert finished.is_set()


def test_a_failed_operation_still_counts_as_finished():
    gate = OperationGate()
    with pytest.raises(VolumeInUse):
        with gate.operation("remove", "vm1", "db"):
            raise VolumeInUse("attached")
    assert gate.drain(timeout=0.5) is True


def test_one_log_line_per_operation_with_its_outcome(caplog):
    gate = OperationGate()
    caplog.set_level(logging.INFO, logger="dockvols.ops")
    with gate.operation("get", "vm7", "db@ds1") as op_id:
        pass
    with pytest.raises(VolumeInUse):
        with gate.operation("remove", "vm7", "db@ds1"):
            raise VolumeInUse("attached")
    with pytest.raises(KeyError):
        with gate.operation("list", "vm7"):
            raise KeyError("x")
    lines = [r for r in caplog.records if r.name == "dockvols.ops"]
    assert len(lines) == 3
    first = lines[0].getMessage()
    assert first.startswith(op_id) and "op=get" in first and "volume=db@ds1" in first
    assert "vm=vm7" in first and "outcome=ok" in first and "duration_ms=" in first
    assert "outcome=VolumeInUse" in lines[1].getMessage() and lines[1].levelno == logging.INFO
    assert "outcome=crash:KeyError" in lines[2].getMessage()
    assert lines[2].levelno == logging.ERROR


def test_operation_ids_are_unique():
    gate = OperationGate()
    ids = set()
    for _ in range(5):
        with gate.operation("get", "vm1") as op_id:
            ids.add(op_id)
    assert len(ids) == 5
