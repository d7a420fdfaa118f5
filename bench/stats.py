"""The statistics every benchmark reports with: percentiles, ratios, verdicts, markdown
tables, and the timed-call loops (``sample()`` for one caller, ``sample_concurrently()`` for
many threads at once). Pure apart from the clock (unit-tested in tests/unit/bench)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks (numpy's
    default); NaN for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0-100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict:
    """n, min, p50, p90, p99, max and mean of a list of seconds, in milliseconds."""
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "min_ms": min(ms) if ms else math.nan,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
    }


def ratio(value: float, baseline: float) -> float:
    """value / baseline; NaN when the baseline is zero or missing."""
    if not baseline or math.isnan(baseline) or math.isnan(value):
        return math.nan
    return value / baseline


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def fmt_ms(value: float) -> str:
    """Milliseconds with precision that suits the magnitude: 0.412, 3.51, 48.2, 1234."""
    if math.isnan(value):
        return "n/a"
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 1000:
        return f"{value:.1f}"
    return f"{value:.0f}"


def verdict(value: float, target: float) -> str:
    """``meets`` when value <= target, else ``misses``."""
    if math.isnan(value):
        return "n/a"
    return "meets" if value <= target else "misses"


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sample(fn: Callable[[], object], calls: int, warmup: int) -> list[float]:
    """Seconds per call of ``calls`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(fn) for _ in range(calls)]


@dataclass
class ConcurrentSamples:
    """What ``sample_concurrently()`` measured: the timings of each step that succeeded (in
    the order they finished), the message of each that raised, and the wall seconds from the
    first thread's start to the last one's end."""

    steps: list[tuple[float, ...]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = math.nan

    def column(self, index: int) -> list[float]:
        """The ``index``-th timing of every step (e.g. attach of each attach+detach pair)."""
        return [step[index] for step in self.steps]


def sample_concurrently(threads: int, step: Callable[[int, int], tuple[float, ...]],
                        more: Callable[[int, int], bool]) -> ConcurrentSamples:
    """``threads`` threads at once; thread k calls ``step(k, i)`` for i = 0, 1, ... while
    ``more(k, i)``. A step returns its own timings; one that raises is counted in ``errors``
    (the benchmark shows them) and its thread goes on with the next step."""
    result = ConcurrentSamples()
    lock = threading.Lock()

    def worker(k: int) -> None:
        i = 0
        while more(k, i):
            try:
                timings = step(k, i)
            except Exception as exc:  # noqa: BLE001 - counted and shown, not hidden
                with lock:
                    result.errors.append(str(exc))
            else:
                with lock:
                    result.steps.append(timings)
            i += 1

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    result.wall = time.perf_counter() - started
    return result
