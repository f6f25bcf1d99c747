"""When each job is due, decided before the clock starts. Pure.

Open loop (vegeta-style): send times are fixed in advance from the arrival rate; a job that could not start on
time (all threads busy) still has its latency measured from its scheduled time, so a slow server cannot hide its
slowness by slowing the client down (coordinated omission).
"""

from __future__ import annotations

from collections.abc import Sequence

from vaultmesh.bench.model import MAX_COUNT


def rollout_offsets(count: int, window: float) -> list[float]:
    """``count`` start times spread evenly over ``[0, window)``; all at 0 when the window is 0."""
    _check_count(count)
    if count == 0:
        return []
    step = window / count if window > 0 else 0.0
    return [i * step for i in range(count)]


def steady_offsets(rate: float, duration: float, *, limit: int = 0) -> list[float]:
    """Arrivals at a constant ``rate`` per second over ``[0, duration)``; at most ``limit`` (0: no limit)."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    n = int(rate * duration + 1e-9)
    if limit:
        n = min(n, limit)
    _check_count(n)
    return [i / rate for i in range(n)]


def split(offsets: Sequence[float], parts: int) -> list[list[tuple[int, float]]]:
    """Deal (seq, offset) pairs round-robin to ``parts`` workers, so each sees the same arrival pattern."""
    if parts < 1:
        raise ValueError("parts must be at least 1")
    out: list[list[tuple[int, float]]] = [[] for _ in range(parts)]
    for i, t in enumerate(offsets):
        out[i % parts].append((i, t))
    return out


def split_count(total: int, parts: int) -> list[int]:
    """``total`` divided into ``parts`` near-equal shares (closed-loop request budgets)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _check_count(n: int) -> None:
    if n < 0 or n > MAX_COUNT:
        raise ValueError(f"{n} jobs: must be between 0 and {MAX_COUNT}")
