"""Percentiles and per-phase summaries. Pure."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vaultmesh.bench.model import Sample


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of already sorted values; 0.0 when empty.

    Nearest rank never invents a value that was not measured, which matters for p99 of small runs.
    """
    if not sorted_values:
        return 0.0
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True)
class Summary:
    phase: str
    attempts: int
    successes: int
    errors: dict[str, int] = field(default_factory=dict)
    throughput: float = 0.0
    """Successes per second over the phase's span (first start to last end)."""
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    mean: float = 0.0

    @property
    def error_count(self) -> int:
        return self.attempts - self.successes


def summarize(phase: str, samples: Iterable[Sample], *, span: float | None = None) -> Summary:
    """Attempts, successes, errors by kind, throughput and latency percentiles of successful samples.

    ``span`` overrides the time base of the throughput (e.g. the whole run's wall time).
    """
    items = list(samples)
    ok = sorted(s.latency for s in items if s.ok)
    errors = Counter(s.error for s in items if s.error is not None)
    if span is None:
        span = (max(s.t_end for s in items) - min(s.t_start for s in items)) if items else 0.0
    throughput = len(ok) / span if span > 0 else 0.0
    return Summary(
        phase=phase, attempts=len(items), successes=len(ok), errors=dict(sorted(errors.items())),
        throughput=throughput, p50=percentile(ok, 50), p90=percentile(ok, 90), p99=percentile(ok, 99),
        max=ok[-1] if ok else 0.0, mean=sum(ok) / len(ok) if ok else 0.0,
    )


def summarize_phases(samples: Iterable[Sample], order: Sequence[str] = ()) -> list[Summary]:
    """One summary per phase: those named in ``order`` first, in that order, then the rest sorted."""
    by_phase: dict[str, list[Sample]] = {}
    for s in samples:
        by_phase.setdefault(s.phase, []).append(s)
    names = [p for p in order if p in by_phase] + sorted(p for p in by_phase if p not in order)
    return [summarize(p, by_phase[p]) for p in names]


def windows(samples: Iterable[Sample], *, start: float, end: float) -> list[Sample]:
    """The samples that ended within [start, end) (per-phase figures around a chaos event)."""
    return [s for s in samples if start <= s.t_end < end]
