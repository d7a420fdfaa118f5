"""A small metrics registry and its Prometheus text-format writer (standard library only).

esx_service must run on ESXi's Python, which has no prometheus_client. This module keeps the
three kinds dockvols needs (counter, gauge, histogram, each with labels) and writes the
text exposition format 0.0.4; the unit tests read its output back with prometheus_client's
own parser. Scrape-time values (volumes per datastore, free space) come from collectors:
functions called on each render that return ready families.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dockvols_common.metrics import OP_BUCKETS

Labels = tuple[str, ...]


@dataclass
class Family:
    """One metric family as written: ``samples`` are (suffix, labels, value)."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append(("", labels, value))
        return self


Collector = Callable[[], Iterable[Family]]


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> Labels:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"metric {self.name} takes labels {self.labelnames}, "
                             f"got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def _labels(self, key: Labels) -> dict[str, str]:
        return dict(zip(self.labelnames, key, strict=True))

    def family(self) -> Family:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        super().__init__(name, help, labelnames)
        # one without labels is 0 from the start, so the series exists before it moves
        self._values: dict[Labels, float] = {} if self.labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name} cannot go down ({amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def family(self) -> Family:
        with self._lock:
            items = sorted(self._values.items())
        return Family(self.name, self.kind, self.help,
                      [("", self._labels(k), v) for k, v in items])


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[Labels, float] = {} if self.labelnames else {(): 0.0}

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = value

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def family(self) -> Family:
        with self._lock:
            items = sorted(self._values.items())
        return Family(self.name, self.kind, self.help,
                      [("", self._labels(k), v) for k, v in items])


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = OP_BUCKETS) -> None:
        if "le" in labelnames:
            raise ValueError("'le' is the bucket label of a histogram")
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"histogram {name} buckets must be increasing: {buckets}")
        super().__init__(name, help, labelnames)
        self.buckets = tuple(float(b) for b in buckets)
        # per label set: counts per bucket (not cumulative; the last is +Inf), sum
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        index = bisect.bisect_left(self.buckets, value)  # le: value <= bound
        with self._lock:
            counts, total = self._series.setdefault(
                key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[index] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
            return sum(series[0]) if series else 0

    def family(self) -> Family:
        with self._lock:
            items = sorted((k, (list(c), s[0])) for k, (c, s) in self._series.items())
        samples: list[tuple[str, dict[str, str], float]] = []
        for key, (counts, total) in items:
            labels = self._labels(key)
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                samples.append(("_bucket", {**labels, "le": _number(bound)}, running))
            samples.append(("_sum", labels, total))
            samples.append(("_count", labels, running))
        return Family(self.name, self.kind, self.help, samples)


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Collector] = []
        self._lock = threading.Lock()

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is registered twice")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help, labelnames))  # type: ignore[return-value]

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = OP_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help, labelnames, buckets))  # type: ignore[return-value]

    def add_collector(self, collector: Collector) -> None:
        with self._lock:
            self._collectors.append(collector)

    def families(self) -> list[Family]:
        with self._lock:
            metrics, collectors = list(self._metrics.values()), list(self._collectors)
        families = [m.family() for m in metrics]
        for collect in collectors:
            families.extend(collect())
        return families

    def render(self) -> str:
        return render(self.families())


def render(families: Iterable[Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4) of ``families``."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            name = family.name + suffix
            if labels:
                pairs = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
                lines.append(f"{name}{{{pairs}}} {_number(value)}")
            else:
                lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(float(value))
