"""A bench workload that holds its secrets heartbeats like `vaultmesh run`, so the reaper leaves it alone."""

from __future__ import annotations

from vaultmesh.bench.ops import Holding
from vaultmesh.bench.runner import HEARTBEAT, _Agenda, _hold


def test_a_bench_workload_holding_longer_than_a_heartbeat_is_stepped_every_heartbeat_until_its_release() -> None:
    class Stepper:
        token = "t"

    agenda = _Agenda([], "start")
    held = Holding(1, "t", None, Stepper())  # type: ignore[arg-type]
    _hold(agenda, 100.0, 112.0, 1, held)
    assert agenda.heap == [(100.0 + HEARTBEAT, 1, "keep", (held, 112.0))]
    agenda.heap.clear()
    _hold(agenda, 110.0, 112.0, 1, held)  # less than a heartbeat left: the revocation itself
    assert agenda.heap == [(112.0, 1, "revoke", held)]
    agenda.heap.clear()
    _hold(agenda, 100.0, 112.0, 1, Holding(1, "t", None, None))  # the raw path has no session to step
    assert agenda.heap == [(112.0, 1, "revoke", Holding(1, "t", None, None))]
