"""vaultmesh chaos against real meshes: a leader killed under load, a zone cut off in network namespaces."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from vaultmesh.bench.model import BenchConfig
from vaultmesh.chaos.fault import Fault
from vaultmesh.chaos.run import render_chaos, run_chaos
from vaultmesh.runtime import netns

from .conftest import MeshHandle, stop_all

pytestmark = [pytest.mark.integration, pytest.mark.alone]  # timing-sensitive: run alone, after the rest

LOAD = BenchConfig(scenario="steady", op="workload", rate=20.0, duration=6.0, hold=0.5, concurrency=8)
"""20 workloads/s: the rate at which a leader kill used to leave ghost tokens and leases behind."""


def test_leader_kill_under_load_loses_no_acknowledged_write(make_mesh: Callable[..., MeshHandle],
                                                             postgres_dsn: str) -> None:
    handle = make_mesh()
    result = run_chaos(handle.mesh, Fault("kill-leader", at=2.0), LOAD)
    report = render_chaos(result)
    assert result.t_inject is not None, report
    assert result.leader_before and result.leader_after and result.leader_after != result.leader_before, report
    assert result.acked > 50, report
    assert result.lost == [], report
    # writes come back (how fast they do is the benchmark's to report: `vaultmesh chaos`, not a test's to assert)
    assert result.recovery is not None and result.recovery.recovery_s is not None, report
    assert result.healthy_after_s is not None, report  # `up` restarted the killed node
    # logins and credentials whose answers the election lost are revoked by the keeper within the reap interval
    assert result.bench.returned, report
    assert result.passed, report
    # the run's write log is gone with it: its mount (the bench's mesh file declares it) stays, empty
    assert handle.client().list("vaultmesh-bench-chaos") == [] and not result.notes, report


@pytest.fixture
def netns_mesh(make_mesh: Callable[..., MeshHandle]) -> Iterator[MeshHandle]:
    why = netns.unavailable()
    if why:
        pytest.skip(f"network-namespace hosts are not possible here: {why}")
    handle = make_mesh("runtime: netns\n")
    try:
        yield handle
    finally:
        stop_all(handle, set(handle.pids().values()))
        netns.remove(handle.mesh.layout)


def test_partitioned_minority_refuses_writes_and_the_mesh_heals(netns_mesh: MeshHandle) -> None:
    assert all(n.netns for n in netns_mesh.mesh.layout.nodes)
    load = BenchConfig(scenario="steady", op="workload", rate=20.0, duration=8.0, hold=0.5, concurrency=8)
    result = run_chaos(netns_mesh.mesh, Fault("partition-zone", at=2.0, lift_after=4.0), load)
    report = render_chaos(result)
    assert result.minority_attempts and result.minority_acked == 0, report
    assert result.lost == [], report
    assert result.recovery is not None and result.recovery.recovery_s is not None, report
    assert result.healthy_after_s is not None, report
    # the 20 logins of the cut-off zone that nobody received come back to nobody: the keeper revokes them
    assert result.bench.returned, report
    assert result.passed, report
