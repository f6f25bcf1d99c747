"""Rendering a bench result: the text report, JSON round trip, the HTML plot."""

from __future__ import annotations

import json
import xml.dom.minidom

from vaultmesh.bench.model import BenchConfig, BenchResult, Counts, Event, Sample
from vaultmesh.bench.plot import log_ticks, render_html, thin
from vaultmesh.bench.report import error_total, from_json, overall, render_text, to_json


def result(errors: int = 0, raw: bool = False) -> BenchResult:
    samples = []
    for i in range(20):
        t = i * 0.1
        err = "http-503" if i < errors else None
        samples += [Sample("login", i, t, t, t + 0.01, err)]
        if err is None:
            samples += [Sample("kv", i, t + 0.01, t + 0.01, t + 0.012),
                        Sample("login-to-secrets", i, t, t, t + 0.02)]
        samples += [Sample("workload", i, t, t, t + 0.02, err)]
    return BenchResult(BenchConfig(scenario="rollout", count=20, window=2.0, raw=raw), samples,
                       [Event(1.0, "kill-leader", "SIGKILL node-1")], wall=2.0, before=Counts(3, 4),
                       after=Counts(3, 4), returned_after=0.5)


def test_text_report_has_phase_rows_counts_and_events() -> None:
    text = render_text(result())
    assert "rollout of 20 workloads within 2 s" in text
    for phase in ("workload", "login-to-secrets", "login", "kv"):
        assert any(line.startswith(phase + " ") for line in text.splitlines())
    assert "tokens 3 -> 3, leases 4 -> 4: back at the baseline" in text
    assert "event at 1.00 s: kill-leader SIGKILL node-1" in text


def test_errors_are_counted_by_kind_in_the_report() -> None:
    r = result(errors=2)
    assert error_total(r) == 4  # the failed login and the failed workload, twice
    assert "http-503 2" in render_text(r)


def test_counts_that_did_not_return_are_called_out() -> None:
    r = result()
    r.after, r.returned_after = Counts(9, 12), None
    assert "NOT back at the baseline" in render_text(r)


def test_ceiling_comparison_gives_a_ratio() -> None:
    assert "reaches 100% of it" in render_text(result(), ceiling=result(raw=True))


def test_overall_is_the_scenario_operation() -> None:
    o = overall(result(errors=1))
    assert (o.attempts, o.successes) == (20, 19)


def test_json_round_trips() -> None:
    r = result(errors=1)
    doc = json.loads(json.dumps(to_json(r)))
    back = from_json(doc)
    assert [s.row() for s in back.samples] == [s.row() for s in r.samples]
    assert back.events == r.events and back.before == r.before
    assert doc["sample_columns"][0] == "phase"


def test_plot_is_a_self_contained_page_with_a_valid_svg() -> None:
    page = render_html(result(errors=1))
    assert page.startswith("<!doctype html>") and "http" not in page.split("<svg", 1)[1].split("xmlns", 1)[0]
    svg = page[page.index("<svg"):page.index("</svg>") + 6]
    xml.dom.minidom.parseString(svg)
    assert "kill-leader" in svg and "stroke-dasharray" in svg
    assert "<script" not in page


def test_thinning_keeps_every_failure() -> None:
    samples = [Sample("kv", i, 0, 0, 0.001, None) for i in range(1000)] + [Sample("kv", 1, 0, 0, 1, "x")]
    kept = thin(samples, 100)
    assert len([s for s in kept if s.ok]) == 100 and any(not s.ok for s in kept)


def test_log_ticks_cover_the_range() -> None:
    assert log_ticks(0.001, 1.0) == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
