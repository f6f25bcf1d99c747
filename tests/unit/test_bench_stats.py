"""Percentiles and summaries of bench samples."""

from __future__ import annotations

import pytest

from vaultmesh.bench.model import Sample
from vaultmesh.bench.stats import percentile, summarize, summarize_phases


def s(phase: str, start: float, latency: float, error: str | None = None, sched: float | None = None) -> Sample:
    t_sched = start if sched is None else sched
    return Sample(phase, 0, t_sched, start, start + latency, error)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0


def test_percentile_of_a_small_sample_is_a_measured_value() -> None:
    assert percentile([0.1, 0.2, 0.9], 99) == 0.9
    assert percentile([0.1, 0.2, 0.9], 50) == 0.2


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 99) == 0.0


def test_percentile_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_summary_counts_errors_by_kind_and_times_only_successes() -> None:
    items = [s("login", 0.0, 0.010), s("login", 0.5, 0.020), s("login", 1.0, 5.0, "http-503"),
             s("login", 1.5, 0.030, "unavailable"), s("login", 1.9, 0.1, "http-503")]
    got = summarize("login", items)
    assert (got.attempts, got.successes, got.error_count) == (5, 2, 3)
    assert got.errors == {"http-503": 2, "unavailable": 1}
    assert got.max == pytest.approx(0.020)


def test_throughput_is_successes_over_the_phase_span() -> None:
    items = [s("kv", float(i), 0.5) for i in range(4)]  # span 0 .. 3.5
    assert summarize("kv", items).throughput == pytest.approx(4 / 3.5)
    assert summarize("kv", items, span=2.0).throughput == pytest.approx(2.0)


def test_open_loop_latency_runs_from_the_scheduled_time() -> None:
    late = s("workload", 2.0, 0.1, sched=1.0)  # waited a second for a thread
    assert late.latency == pytest.approx(1.1)
    assert summarize("workload", [late]).p50 == pytest.approx(1.1)


def test_phases_come_in_the_given_order_then_sorted() -> None:
    items = [s("zeta", 0, 1), s("kv", 0, 1), s("login", 0, 1), s("alpha", 0, 1)]
    assert [x.phase for x in summarize_phases(items, ("login", "kv"))] == ["login", "kv", "alpha", "zeta"]


def test_sample_rows_round_trip() -> None:
    x = Sample("db", 7, 1.0, 1.25, 1.5, "http-500")
    assert Sample.from_row(x.row()) == x
