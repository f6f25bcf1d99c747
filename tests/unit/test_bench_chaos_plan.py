"""The fault plan and the figures computed from the write probe's log (pure)."""

from __future__ import annotations

import pytest

from vaultmesh.chaos.fault import Attempt, Fault, lost_writes, recovery
from vaultmesh.errors import VaultmeshError
from vaultmesh.runtime.netns import choose_octet


def test_kill_faults_heal_with_up_others_by_themselves() -> None:
    assert Fault("kill-leader").kills
    assert Fault("lose-quorum").kills
    assert Fault("stop-zone", signal="kill").kills
    assert not Fault("stop-zone", signal="stop").kills
    assert not Fault("partition-zone").kills
    assert "vaultmesh up" in Fault("kill-node").heal_how
    assert "automatic" in Fault("partition-zone").heal_how


def test_steps_inject_then_lift() -> None:
    assert Fault("stop-zone", at=2.0, lift_after=3.0).steps() == [(2.0, "inject"), (5.0, "lift")]
    assert Fault("kill-leader", at=1.0).steps() == [(1.0, "inject")]


def test_partition_needs_namespaces() -> None:
    assert Fault("partition-zone").needs_netns
    assert not Fault("kill-leader").needs_netns


@pytest.mark.parametrize("plan", [Fault("nope"), Fault("kill-leader", at=20.0),
                                  Fault("kill-leader", lift_after=0.0), Fault("stop-zone",
                                                                                      signal="hup")])  # type: ignore[arg-type]
def test_bad_plans_are_refused(plan: Fault) -> None:
    with pytest.raises(VaultmeshError):
        plan.check(10.0)


def log(*entries: tuple[float, float, bool]) -> list[Attempt]:
    return [Attempt(i, a, b, ok) for i, (a, b, ok) in enumerate(entries)]


def test_recovery_is_the_first_ack_of_a_write_started_after_the_fault() -> None:
    attempts = log((0.0, 0.01, True), (0.9, 0.91, True), (1.0, 2.0, False), (2.0, 3.0, False),
                   (3.0, 3.2, True), (3.3, 3.31, True))
    r = recovery(attempts, t_fault=1.0)
    assert r.recovery_s == pytest.approx(2.2)
    assert r.outage_s == pytest.approx(3.2 - 0.91)
    assert (r.failed, r.acked, r.attempts) == (2, 4, 6)


def test_a_write_in_flight_at_the_fault_does_not_count_as_recovery() -> None:
    attempts = log((0.95, 1.5, True), (1.5, 1.6, False), (1.6, 1.8, True))
    assert recovery(attempts, t_fault=1.0).recovery_s == pytest.approx(0.8)


def test_writes_that_never_come_back_have_no_recovery() -> None:
    r = recovery(log((0.0, 0.1, True), (1.0, 2.0, False), (2.0, 3.0, False)), t_fault=1.0)
    assert r.recovery_s is None
    assert r.outage_s == pytest.approx(2.9)


def test_lost_writes_are_acked_but_not_found() -> None:
    assert lost_writes([1, 2, 3, 5], [1, 3, 4, 5]) == [2]
    assert lost_writes([1, 2], [1, 2]) == []


def test_namespace_subnet_skips_ones_in_use() -> None:
    first = choose_octet("00000a", [])
    assert 10 <= first < 250
    assert choose_octet("00000a", [first]) != first
    with pytest.raises(VaultmeshError):
        choose_octet("00000a", range(256))
