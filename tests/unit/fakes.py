"""Fakes the unit tests share."""

from __future__ import annotations


class FakeTime:
    """A clock that moves only when ``sleep`` is called; records every sleep (``wait_until``'s clock and sleep)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds
