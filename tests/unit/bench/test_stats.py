"""The pure statistics and formatting helpers the benchmarks report with."""

from __future__ import annotations

import math
import threading

import pytest

from bench.profile_slowest import attribute
from bench.run_all import _returns_dict
from bench.stats import (
    fmt_ms,
    fmt_ratio,
    md_table,
    percentile,
    ratio,
    sample_concurrently,
    summarize,
    verdict,
)


def test_percentile_interpolates_between_closest_ranks_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)


def test_percentile_of_one_value_is_that_value_and_of_none_is_nan() -> None:
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize("p", [-1, 100.5])
def test_percentile_outside_0_100_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="outside 0-100"):
        percentile([1.0], p)


def test_summarize_reports_milliseconds() -> None:
    s = summarize([0.001, 0.002, 0.003])
    assert s["n"] == 3
    assert s["p50_ms"] == pytest.approx(2.0)
    assert s["min_ms"] == pytest.approx(1.0)
    assert s["max_ms"] == pytest.approx(3.0)
    assert s["mean_ms"] == pytest.approx(2.0)


def test_summarize_of_nothing_is_nan_not_an_error() -> None:
    s = summarize([])
    assert s["n"] == 0 and math.isnan(s["p50_ms"]) and math.isnan(s["max_ms"])


def test_ratio_and_its_formatting() -> None:
    assert ratio(23.0, 20.0) == pytest.approx(1.15)
    assert fmt_ratio(ratio(23.0, 20.0)) == "1.15x"
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
    assert fmt_ratio(math.nan) == "n/a"


@pytest.mark.parametrize("value, text", [(0.4123, "0.412"), (3.514, "3.51"), (48.24, "48.2"),
                                         (1234.4, "1234"), (math.nan, "n/a")])
def test_fmt_ms_precision_follows_magnitude(value: float, text: str) -> None:
    assert fmt_ms(value) == text


def test_verdict_is_inclusive_of_the_target() -> None:
    assert verdict(1.15, 1.15) == "meets"
    assert verdict(1.16, 1.15) == "misses"
    assert verdict(math.nan, 1.15) == "n/a"


def test_md_table() -> None:
    assert md_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"


def test_attribute_charges_samples_to_the_innermost_dockvols_frame() -> None:
    raw = "\n".join([
        "thread (1);run (gunicorn/x.py:1);Api.handle (esx_service/api.py:29);"
        "atomic_write_bytes (dockvols_common/atomic.py:18) 3",
        "thread (1);Api.handle (esx_service/api.py:29);run_command (esx_service/commands.py:18);"
        "Popen.communicate (subprocess.py:1209) 1",
        "thread (2);idle (threading.py:1) 50",  # outside request handling: not counted
    ])
    total, ours, leaves = attribute(raw, "Api.handle ")
    assert total == 4
    assert ours["atomic_write_bytes (dockvols_common/atomic.py:18)"] == 3
    assert ours["run_command (esx_service/commands.py:18)"] == 1
    assert leaves["Popen.communicate (subprocess.py:1209)"] == 1


def test_only_mains_declared_to_return_a_dict_are_called_in_process() -> None:
    def ours(env: object = None) -> dict:
        return {}

    def theirs() -> int:
        return 0

    def untyped():  # type: ignore[no-untyped-def]
        return {}

    assert _returns_dict(ours)
    assert not _returns_dict(theirs)
    assert not _returns_dict(untyped)


def test_sample_concurrently_runs_every_thread_at_once_and_keeps_each_steps_timings() -> None:
    barrier = threading.Barrier(3, timeout=5)  # would time out unless all three run at once

    def step(k: int, i: int) -> tuple[float, float]:
        if i == 0:
            barrier.wait()
        return (float(k), float(i))

    done = sample_concurrently(3, step, lambda _k, i: i < 2)
    assert sorted(done.steps) == [(k, i) for k in (0.0, 1.0, 2.0) for i in (0.0, 1.0)]
    assert sorted(done.column(1)) == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert done.errors == [] and done.wall > 0


def test_sample_concurrently_counts_a_failing_step_and_goes_on_with_the_next() -> None:
    def step(k: int, i: int) -> tuple[float]:
        if i == 1:
            raise RuntimeError(f"step {i} of thread {k} failed")
        return (1.0,)

    done = sample_concurrently(2, step, lambda _k, i: i < 3)
    assert done.column(0) == [1.0] * 4
    assert sorted(done.errors) == ["step 1 of thread 0 failed", "step 1 of thread 1 failed"]
