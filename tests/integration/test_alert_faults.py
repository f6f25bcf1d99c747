"""The fault → alert table of the README's monitoring section, on real processes: one 3-node mesh whose keeper
runs Prometheus with the mesh's rules (``monitoring: prometheus``), its ``/api/v1/alerts`` polled over HTTPS
verified with the mesh CA (as ``benchmarks/alerts.py`` does). A quiet mesh fires nothing once every rule has been
evaluated; a SIGKILLed standby (the keeper heals it) fires ``VaultmeshKeeperRestarted``; a SIGSTOPped standby
fires ``VaultmeshTargetDown`` for its instance (SIGCONT after, also on failure). Each time from the injection to
*firing* is printed (``pytest -s``) to compare with the table; the deadlines are 60 s, the table's promise.

The kill runs before the SIGSTOP: ``VaultmeshKeeperRestarted`` stays firing for 5 minutes after a restart (an
``increase`` over 5m), while a healed kill is back before ``VaultmeshTargetDown``'s 30 s ``for:``. Each test
checks its own alert is not firing before it injects. The faults come from the chaos code
(``vaultmesh.chaos.inject``); every process is stopped by pid at the end, also on failure (``owned_mesh``).
The benchmark's other faults (zones, quorum, partitions) stay in ``benchmarks/alerts.py``: each needs a mesh of
its own."""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from vaultmesh.chaos import inject
from vaultmesh.layout import NodeLayout
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.status import monitoring_json
from vaultmesh.monitoring.names import JOB_KEEPER, JOB_NODE
from vaultmesh.monitoring.rules import mesh_rules
from vaultmesh.waiting import wait_until

from .conftest import MeshHandle, owned_mesh

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus is not installed (Debian package `prometheus`; .ci/run "
                                        "installs it)")]

DEADLINE = 60.0
"""Seconds from an injection to its alert firing: what the README's table promises for every fault."""


def api(prom: str, path: str, ca: str) -> Any:
    with urllib.request.urlopen(f"{prom}/api/v1/{path}", timeout=5,
                                context=ssl.create_default_context(cafile=ca)) as resp:
        return json.load(resp)["data"]


def firing(prom: str, ca: str) -> dict[str, list[dict[str, str]]]:
    """The labels of every firing alert, by alert name."""
    out: dict[str, list[dict[str, str]]] = {}
    for alert in api(prom, "alerts", ca)["alerts"]:
        if alert["state"] == "firing":
            out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return out


def instance(node: NodeLayout) -> str:
    return f"{node.host}:{node.api_port}"


def all_up(handle: MeshHandle, prom: str) -> bool:
    """Every node and the keeper scraped, and up."""
    try:
        active = api(prom, "targets?state=active", handle.ca)["activeTargets"]
    except OSError:  # Prometheus not listening yet
        return False
    nodes = {t["labels"]["instance"] for t in active if t["labels"]["job"] == JOB_NODE}
    return (nodes == {instance(n) for n in handle.mesh.layout.nodes}
            and any(t["labels"]["job"] == JOB_KEEPER for t in active)
            and all(t["health"] == "up" for t in active))


def until_firing(prom: str, ca: str, alert: str, t0: float, *,
                 labels: dict[str, str] | None = None) -> tuple[float, dict[str, str]]:
    """Seconds from ``t0`` until ``alert`` (with ``labels``) fires, and its labels; fails after ``DEADLINE``."""
    want = labels or {}

    def fired() -> dict[str, str] | None:
        return next((one for one in firing(prom, ca).get(alert, [])
                     if all(one.get(k) == v for k, v in want.items())), None)

    found = wait_until(fired, timeout=DEADLINE - (time.monotonic() - t0), interval=0.5)
    assert found, f"{alert} {want} not firing {DEADLINE:.0f} s after the injection; firing: {firing(prom, ca)}"
    return time.monotonic() - t0, found


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshHandle, str]]:
    """One 3-node mesh whose keeper runs Prometheus, every target up and every alert rule evaluated once:
    (the mesh, Prometheus's HTTPS base URL)."""
    text = "monitoring: prometheus\nsnapshots:\n  every: null\n"  # no scheduled snapshot: nothing pending on it
    with owned_mesh(tmp_path_factory.mktemp("alert-faults") / "state", text) as handle:
        prom = wait_until(lambda: monitoring_json(m.open_mesh(handle.dir))["prometheus_url"], timeout=30,
                          interval=0.5)
        assert prom, f"the keeper started no Prometheus: {monitoring_json(m.open_mesh(handle.dir))}"
        assert wait_until(lambda: all_up(handle, prom), timeout=60, interval=0.5), \
            api(prom, "targets?state=active", handle.ca)

        def evaluated() -> list[dict[str, Any]] | None:
            rules = [r for g in api(prom, "rules?type=alert", handle.ca)["groups"] for r in g["rules"]]
            never = "0001-01-01T00:00:00Z"  # Prometheus's time of a rule not evaluated yet
            return rules if rules and all(r.get("lastEvaluation", never) != never for r in rules) else None

        rules = wait_until(evaluated, timeout=30, interval=0.5)
        assert rules, api(prom, "rules?type=alert", handle.ca)
        assert {r["name"] for r in rules} == {r.alert for r in mesh_rules(handle.mesh.spec)}
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
        # the restart counter's first sample: an increase needs two, so a kill before it would go unseen
        assert wait_until(lambda: api(prom, "query?query=vaultmesh_keeper_restarts_total", handle.ca)["result"],
                          timeout=30, interval=0.5)
        yield handle, prom


def test_a_quiet_mesh_fires_nothing(watched: tuple[MeshHandle, str]) -> None:
    handle, prom = watched
    assert firing(prom, handle.ca) == {}


def test_a_sigkilled_standby_fires_keeper_restarted(watched: tuple[MeshHandle, str]) -> None:
    handle, prom = watched
    mesh = handle.mesh
    assert "VaultmeshKeeperRestarted" not in firing(prom, handle.ca)
    leader = inject.wait_leader(mesh)
    assert leader, "no active node"
    node = inject.pick_standby(mesh, leader, None)
    killed = inject.node_pid(node)
    t0 = time.monotonic()
    inject.signal_nodes([node], signal.SIGKILL)
    seconds, labels = until_firing(prom, handle.ca, "VaultmeshKeeperRestarted", t0)
    print(f"\nSIGKILL {node.name}: VaultmeshKeeperRestarted firing after {seconds:.1f} s")
    assert labels["mesh"] == mesh.spec.name and labels["severity"] == "warning"
    assert inject.node_pid(node) != killed  # the keeper healed it
    # healed before TargetDown's `for:` ran out, and the next test's SIGSTOP starts from a whole mesh
    assert wait_until(lambda: all_up(handle, prom), timeout=30, interval=0.5), \
        api(prom, "targets?state=active", handle.ca)
    assert "VaultmeshTargetDown" not in firing(prom, handle.ca)


def test_a_sigstopped_standby_fires_target_down(watched: tuple[MeshHandle, str]) -> None:
    handle, prom = watched
    mesh = handle.mesh
    assert wait_until(lambda: all_up(handle, prom), timeout=30, interval=0.5)
    assert "VaultmeshTargetDown" not in firing(prom, handle.ca)
    leader = inject.wait_leader(mesh)
    assert leader, "no active node"
    node = inject.pick_standby(mesh, leader, None)
    stopped = inject.node_pid(node)
    t0 = time.monotonic()
    inject.signal_nodes([node], signal.SIGSTOP)
    try:
        seconds, labels = until_firing(prom, handle.ca, "VaultmeshTargetDown", t0,
                                       labels={"job": JOB_NODE, "instance": instance(node)})
        print(f"\nSIGSTOP {node.name}: VaultmeshTargetDown firing after {seconds:.1f} s")
        assert labels["severity"] == "critical"
    finally:
        inject.resume_nodes([node])
    assert inject.node_pid(node) == stopped  # a hung node is left alone by the keeper, not restarted
    assert wait_until(lambda: all_up(handle, prom), timeout=30, interval=0.5), \
        api(prom, "targets?state=active", handle.ca)  # answering again once resumed
