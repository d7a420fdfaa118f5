"""The stdlib metrics writer, read back with prometheus_client's own text parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dockvols_common.metrics import OP_BUCKETS
from esx_service.metrics import Family, Registry, render


def parse(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_counters_gauges_and_histograms_read_back_with_prometheus_client_parser() -> None:
    reg = Registry()
    ops = reg.counter("x_ops_total", "ops done", ("op",))
    free = reg.gauge("x_free_bytes", "free space", ("ds",))
    lat = reg.histogram("x_seconds", "latency", ("op",), buckets=(0.1, 1.0, 10.0))
    ops.inc(op="create")
    ops.inc(2, op="create")
    ops.inc(op="remove")
    free.set(12345678901234, ds="ds1")
    for value in (0.05, 0.1, 0.5, 3.0, 60.0):
        lat.observe(value, op="create")

    families = parse(reg.render())

    assert families["x_ops"].type == "counter"
    assert samples(families["x_ops"]) == {("x_ops_total", (("op", "create"),)): 3.0,
                                          ("x_ops_total", (("op", "remove"),)): 1.0}
    assert families["x_free_bytes"].type == "gauge"
    assert samples(families["x_free_bytes"]) == {
        ("x_free_bytes", (("ds", "ds1"),)): 12345678901234.0}
    hist = samples(families["x_seconds"])
    assert families["x_seconds"].type == "histogram"
    # cumulative, a value on a bound counts in that bound's bucket (le), +Inf == count
    assert [hist[("x_seconds_bucket", (("le", le), ("op", "create")))]
            for le in ("0.1", "1.0", "10.0", "+Inf")] == [2, 3, 4, 5]
    assert hist[("x_seconds_count", (("op", "create"),))] == 5
    assert hist[("x_seconds_sum", (("op", "create"),))] == pytest.approx(63.65)


def test_label_values_and_help_with_quotes_backslashes_newlines_and_unicode_survive() -> None:
    reg = Registry()
    gauge = reg.gauge("x_g", 'help with "quotes", a \\ and a\nnewline', ("name",))
    odd = 'db "prod"\\x\nnext ünïcode'
    gauge.set(1, name=odd)
    family = parse(reg.render())["x_g"]
    assert family.documentation == 'help with "quotes", a \\ and a\nnewline'
    assert family.samples[0].labels == {"name": odd}


def test_special_values_and_collector_families_are_written() -> None:
    reg = Registry()
    reg.add_collector(lambda: [Family("x_c", "gauge", "from a collector")
                               .add(math.inf, k="a").add(-1.5, k="b")])
    values = samples(parse(reg.render())["x_c"])
    assert values[("x_c", (("k", "a"),))] == math.inf
    assert values[("x_c", (("k", "b"),))] == -1.5


def test_wrong_labels_a_falling_counter_and_a_twice_registered_name_are_refused() -> None:
    reg = Registry()
    counter = reg.counter("x_total", "c", ("op",))
    with pytest.raises(ValueError, match=r"takes labels \('op',\)"):
        counter.inc(volume="db")
    with pytest.raises(ValueError, match="cannot go down"):
        counter.inc(-1, op="a")
    with pytest.raises(ValueError, match="registered twice"):
        reg.gauge("x_total", "again")
    with pytest.raises(ValueError, match="must end in _total"):
        reg.counter("x_count", "c")


def test_operation_buckets_span_5_ms_to_10_minutes() -> None:
    assert OP_BUCKETS[0] == 0.005 and OP_BUCKETS[-1] == 600.0
    assert list(OP_BUCKETS) == sorted(OP_BUCKETS)


def test_an_empty_registry_renders_a_valid_empty_exposition() -> None:
    assert render([]) == "\n"
    assert list(text_string_to_metric_families(Registry().render())) == []
