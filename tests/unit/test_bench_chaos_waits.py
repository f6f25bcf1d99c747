"""The bench's and chaos's waits go through wait_until: a fake clock drives them, nothing waits for real time."""

from __future__ import annotations

from typing import Any

import pytest

from vaultmesh.bench import targets as tg
from vaultmesh.bench.model import Counts
from vaultmesh.chaos import inject as inj
from vaultmesh.errors import EngineError, StateError

from .fakes import FakeTime


def counts_in_turn(*values: Counts) -> Any:
    seen = list(values)

    def count(_client: object) -> Counts:
        return seen.pop(0) if len(seen) > 1 else seen[0]

    return count


def test_counts_back_at_the_baseline_report_how_long_they_took() -> None:
    t = FakeTime(0.0)
    count = counts_in_turn(Counts(tokens=5, leases=3), Counts(tokens=4, leases=1), Counts(tokens=3, leases=1))
    last, secs = tg.wait_for_baseline(None, Counts(tokens=3, leases=1), timeout=20, clock=t.clock,  # type: ignore[arg-type]
                                      sleep=t.sleep, count=count)
    assert last == Counts(tokens=3, leases=1)
    assert secs == pytest.approx(0.5)
    assert t.sleeps == [0.25, 0.25]


def test_counts_below_the_baseline_count_as_back() -> None:
    t = FakeTime(0.0)
    last, secs = tg.wait_for_baseline(None, Counts(tokens=3, leases=1), clock=t.clock, sleep=t.sleep,  # type: ignore[arg-type]
                                      count=counts_in_turn(Counts(tokens=2, leases=0)))
    assert (last, secs) == (Counts(tokens=2, leases=0), 0.0)


def test_counts_that_never_come_back_give_the_last_counts_and_no_time() -> None:
    t = FakeTime(0.0)
    last, secs = tg.wait_for_baseline(None, Counts(tokens=3, leases=1), timeout=2, clock=t.clock,  # type: ignore[arg-type]
                                      sleep=t.sleep, count=counts_in_turn(Counts(tokens=9, leases=1),
                                                                          Counts(tokens=4, leases=1)))
    assert (last, secs) == (Counts(tokens=4, leases=1), None)
    assert t.now == pytest.approx(2.0)


def test_a_count_that_fails_is_not_taken_for_a_baseline() -> None:
    def broken(_client: object) -> Counts:
        raise EngineError(403, ["permission denied"], method="LIST", path="/v1/sys/leases/lookup/")

    with pytest.raises(EngineError):
        tg.wait_for_baseline(None, Counts(tokens=3, leases=1), count=broken)  # type: ignore[arg-type]


class Client:
    def __init__(self, err: Exception | None = None) -> None:
        self.err = err
        self.writes: list[tuple[str, Any]] = []

    def write(self, path: str, data: Any) -> None:
        self.writes.append((path, data))
        if self.err:
            raise self.err


def test_revoke_prefix_says_nothing_when_it_revoked() -> None:
    c = Client()
    assert tg.revoke_prefix(c, "bench-db/creds/bench") is None  # type: ignore[arg-type]
    assert c.writes == [("sys/leases/revoke-prefix/bench-db/creds/bench", {"sync": True})]


def test_revoke_prefix_says_why_it_did_not_revoke() -> None:
    c = Client(EngineError(400, ["lease prefix not found"], method="PUT", path="/v1/sys/leases/revoke-prefix/x"))
    note = tg.revoke_prefix(c, "x")  # type: ignore[arg-type]
    assert note is not None and "revoke-prefix x failed" in note and "lease prefix not found" in note


def test_revoke_prefix_lets_an_unexpected_error_through() -> None:
    with pytest.raises(StateError):
        tg.revoke_prefix(Client(StateError("bug")), "x")  # type: ignore[arg-type]


def test_wait_leader_returns_the_first_node_that_says_it_is_active(monkeypatch: pytest.MonkeyPatch) -> None:
    t = FakeTime(0.0)
    answers = [None, None, "node-2"]
    monkeypatch.setattr(inj, "leader", lambda mesh: answers.pop(0))
    assert inj.wait_leader(object(), timeout=5, clock=t.clock, sleep=t.sleep) == "node-2"  # type: ignore[arg-type]
    assert t.sleeps == [0.1, 0.1]


def test_wait_leader_gives_none_when_no_leader_is_elected_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    t = FakeTime(0.0)
    monkeypatch.setattr(inj, "leader", lambda mesh: None)
    assert inj.wait_leader(object(), timeout=1, clock=t.clock, sleep=t.sleep) is None  # type: ignore[arg-type]
    assert t.now == pytest.approx(1.0)


def test_wait_healthy_gives_the_seconds_until_status_says_healthy() -> None:
    t = FakeTime(0.0)
    answers = [False, False, False, True]
    secs = inj.wait_healthy("/state", timeout=90, clock=t.clock, sleep=t.sleep, healthy=lambda root: answers.pop(0))
    assert secs == pytest.approx(0.75)


def test_wait_healthy_gives_none_when_the_mesh_stays_unhealthy() -> None:
    t = FakeTime(0.0)
    assert inj.wait_healthy("/state", timeout=3, clock=t.clock, sleep=t.sleep, healthy=lambda root: False) is None
    assert t.now == pytest.approx(3.0)


def test_a_mesh_that_cannot_answer_yet_is_not_healthy(tmp_path: Any) -> None:
    assert inj.mesh_healthy(tmp_path / "no-such-state") is False
