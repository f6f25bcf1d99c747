"""Renderings of a bench result: a text report and a JSON document. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from vaultmesh.bench.model import WORKLOAD, WORKLOAD_PHASES, BenchResult, Counts, Event, Sample
from vaultmesh.bench.stats import Summary, summarize, summarize_phases

PHASE_ORDER = (WORKLOAD, *WORKLOAD_PHASES, "kv-read", "jwt-login", "db-creds")

JSON_FORMAT = 1


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def phase_table(summaries: Sequence[Summary]) -> list[str]:
    """An aligned table: one row per phase."""
    head = ["phase", "attempts", "ok", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    rows = [head]
    for s in summaries:
        errs = ", ".join(f"{k} {v}" for k, v in s.errors.items()) or "0"
        rows.append([s.phase, str(s.attempts), str(s.successes), errs, f"{s.throughput:.1f}", ms(s.p50),
                     ms(s.p90), ms(s.p99), ms(s.max)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i in (0, 3) else c.rjust(widths[i]) for i, c in enumerate(r)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def overall(result: BenchResult) -> Summary:
    """The scenario's headline: whole workloads for rollout/steady workloads, else the single operation,
    throughput over the run's wall time."""
    phase = result.config.job_op
    items = [s for s in result.samples if s.phase == phase]
    span = max((s.t_end for s in items), default=0.0) - min((s.t_sched for s in items), default=0.0)
    return summarize(f"{phase} (overall)", items, span=span if span > 0 else None)


def counts_line(before: Counts | None, after: Counts | None, returned_after: float | None) -> str:
    if before is None or after is None:
        return "tokens/leases: not measured"
    verdict = (f"back at the baseline {returned_after:.1f} s after the run" if returned_after is not None
               else "NOT back at the baseline")
    return (f"tokens {before.tokens} -> {after.tokens}, leases {before.leases} -> {after.leases}: {verdict}")


def error_total(result: BenchResult) -> int:
    return sum(1 for s in result.samples if not s.ok) + result.abandoned


def render_text(result: BenchResult, *, ceiling: BenchResult | None = None) -> str:
    """The report printed by ``vaultmesh bench``."""
    c = result.config
    mode = "raw ceiling (pre-minted tokens, raw http.client, no retries)" if c.raw else "workload path"
    what = {"rollout": f"rollout of {c.count} workloads within {c.window:g} s, hold {c.hold:g} s",
            "steady": f"steady {c.op} at {c.rate:g}/s for {c.duration:g} s"
                      + (f", hold {c.hold:g} s" if c.op == WORKLOAD else "")}.get(
        c.scenario, f"{c.scenario} " + (f"at {c.rate:g}/s for {c.duration:g} s" if c.rate
                                        else (f"x{c.count}" if c.count else f"for {c.duration:g} s")))
    lines = [f"{what}; {mode}; {c.processes} processes x {max(1, -(-c.concurrency // c.processes))} threads",
             ""]
    lines += phase_table(summarize_phases(result.samples, PHASE_ORDER))
    o = overall(result)
    lines += ["", f"overall: {o.successes}/{o.attempts} {c.job_op}s ok, {error_total(result)} errors, "
                  f"{o.throughput:.1f}/s, p50 {ms(o.p50)} ms, p99 {ms(o.p99)} ms, max {ms(o.max)} ms "
                  f"(latency from each job's scheduled start)" if c.open_loop else
              f"overall: {o.successes}/{o.attempts} ok, {error_total(result)} errors, {o.throughput:.1f}/s, "
              f"p50 {ms(o.p50)} ms, p99 {ms(o.p99)} ms"]
    if result.abandoned:
        lines.append(f"abandoned: {result.abandoned} jobs not started before the run's hard deadline")
    lines.append(counts_line(result.before, result.after, result.returned_after))
    if result.cleanup:
        lines.append(f"cleanup: {result.cleanup}")
    if ceiling is not None:
        co = overall(ceiling)
        ratio = o.throughput / co.throughput if co.throughput else 0.0
        lines.append(f"raw ceiling: {co.throughput:.1f}/s, p50 {ms(co.p50)} ms, p99 {ms(co.p99)} ms; the workload "
                     f"path reaches {ratio:.0%} of it")
    for e in result.events:
        lines.append(f"event at {e.t:.2f} s: {e.kind} {e.detail}".rstrip())
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def to_json(result: BenchResult) -> dict[str, Any]:
    """The raw results: config, every sample (columns named once), events, counts, summaries."""
    return {
        "format": JSON_FORMAT,
        "config": result.config.to_dict(),
        "wall": result.wall,
        "abandoned": result.abandoned,
        "counts": {"before": asdict(result.before) if result.before else None,
                   "after": asdict(result.after) if result.after else None,
                   "returned_after": result.returned_after},
        "cleanup": result.cleanup,
        "notes": result.notes,
        "events": [asdict(e) for e in result.events],
        "summary": [asdict(s) for s in [overall(result), *summarize_phases(result.samples, PHASE_ORDER)]],
        "sample_columns": ["phase", "seq", "t_sched", "t_start", "t_end", "error"],
        "samples": [s.row() for s in result.samples],
    }


def from_json(doc: dict[str, Any]) -> BenchResult:
    from vaultmesh.bench.model import BenchConfig

    counts = doc.get("counts") or {}
    return BenchResult(
        config=BenchConfig(**doc["config"]),
        samples=[Sample.from_row(r) for r in doc["samples"]],
        events=[Event(**e) for e in doc.get("events", [])],
        wall=float(doc.get("wall", 0.0)),
        before=Counts(**counts["before"]) if counts.get("before") else None,
        after=Counts(**counts["after"]) if counts.get("after") else None,
        returned_after=counts.get("returned_after"),
        cleanup=doc.get("cleanup", ""),
        notes=list(doc.get("notes", [])),
        abandoned=int(doc.get("abandoned", 0)),
    )
