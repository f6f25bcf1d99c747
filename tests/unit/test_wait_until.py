"""wait_until: the one poll loop with a deadline, on a fake clock (no test here waits for real time)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vaultmesh.runtime.local import wait_until

from .fakes import FakeTime


def counting(values: list[object]) -> tuple[Callable[[], object], list[int]]:
    calls = [0]

    def cond() -> object:
        calls[0] += 1
        return values[min(calls[0], len(values)) - 1]

    return cond, calls


def test_a_condition_true_at_once_returns_without_sleeping() -> None:
    t = FakeTime(100.0)
    assert wait_until(lambda: "yes", timeout=5, clock=t.clock, sleep=t.sleep) == "yes"
    assert t.sleeps == []


def test_it_returns_the_first_truthy_value_and_polls_every_interval() -> None:
    t = FakeTime(100.0)
    cond, calls = counting([None, 0, "", {"leader": "node-2"}])
    assert wait_until(cond, timeout=5, interval=0.25, clock=t.clock, sleep=t.sleep) == {"leader": "node-2"}
    assert calls[0] == 4
    assert t.sleeps == [0.25, 0.25, 0.25]


def test_when_time_runs_out_it_returns_the_last_falsy_value() -> None:
    t = FakeTime(100.0)
    cond, calls = counting([None, None, None, None, []])
    assert wait_until(cond, timeout=1.0, interval=0.25, clock=t.clock, sleep=t.sleep) == []
    assert t.now == pytest.approx(101.0)
    assert calls[0] == 5  # at 0, 0.25, 0.5, 0.75 and at the deadline


def test_no_sleep_goes_past_the_deadline_and_the_condition_is_asked_once_more_at_it() -> None:
    t = FakeTime(100.0)
    cond, calls = counting([False])
    assert wait_until(cond, timeout=1.0, interval=0.4, clock=t.clock, sleep=t.sleep) is False
    assert t.sleeps == pytest.approx([0.4, 0.4, 0.2])
    assert calls[0] == 4


def test_a_zero_timeout_asks_exactly_once() -> None:
    t = FakeTime(100.0)
    cond, calls = counting([None])
    assert wait_until(cond, timeout=0, clock=t.clock, sleep=t.sleep) is None
    assert (calls[0], t.sleeps) == (1, [])


def test_time_spent_inside_the_condition_counts_against_the_deadline() -> None:
    t = FakeTime(100.0)

    def slow() -> bool:
        t.now += 0.6  # e.g. a health check that takes its own timeout
        return False

    assert wait_until(slow, timeout=1.0, interval=0.1, clock=t.clock, sleep=t.sleep) is False
    assert t.sleeps == pytest.approx([0.1])  # asked at 0 (until 0.6), slept 0.1, asked at 0.7 (until 1.3): done


def test_an_exception_from_the_condition_is_not_swallowed() -> None:
    t = FakeTime(100.0)

    def broken() -> bool:
        raise ValueError("bug in the condition")

    with pytest.raises(ValueError, match="bug in the condition"):
        wait_until(broken, timeout=5, clock=t.clock, sleep=t.sleep)


def test_by_default_it_uses_real_time() -> None:
    assert wait_until(lambda: 1, timeout=0.01) == 1
    assert wait_until(lambda: 0, timeout=0.02, interval=0.005) == 0
