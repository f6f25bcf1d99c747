"""A real Prometheus (Debian's `prometheus`) on a free loopback port, with the rendered config and rules, against
a real mesh: every target (each node over verified TLS, the keeper, the entry) is `up`, every rule evaluates
without error, and a quiet mesh has no alert firing. Prometheus is stopped by pid, also on failure."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.keeper_process import read_status
from vaultmesh.monitoring.config import render_prometheus_config
from vaultmesh.monitoring.names import JOB_ENTRY, JOB_KEEPER, JOB_NODE
from vaultmesh.monitoring.rules import mesh_rules, render_rules
from vaultmesh.runtime.local import free_ports
from vaultmesh.waiting import wait_until

from .conftest import MeshHandle

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus is not installed (Debian package `prometheus`; .ci/run "
                                        "installs it)")]


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)["data"]


def ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def prometheus(shared_mesh: MeshHandle, tmp_path: Path) -> Iterator[tuple[str, bool]]:
    """Prometheus scraping the shared mesh: (its base URL, whether the mesh has an entry)."""
    mesh = shared_mesh.mesh

    def keeper_address() -> str | None:
        record = read_status(mesh.paths)
        return record.metrics if record else None

    keeper = wait_until(keeper_address, timeout=15)
    assert keeper, "the keeper never recorded its metrics address"
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(mesh.spec))
    config = tmp_path / "prometheus.yml"
    entry = m.entry_wanted(mesh.spec)
    config.write_text(render_prometheus_config(mesh.layout, rules_file=rules, keeper=keeper, entry=entry))
    port = free_ports(1)[0]
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        assert wait_until(lambda: proc.poll() is None and ready(f"http://127.0.0.1:{port}"), timeout=20), \
            (tmp_path / "prometheus.log").read_text()[-2000:]
        yield base, entry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def test_prometheus_sees_every_target_up_and_evaluates_every_rule(prometheus: tuple[str, bool],
                                                                  shared_mesh: MeshHandle) -> None:
    base, entry = prometheus
    mesh = shared_mesh.mesh
    want = {(JOB_NODE, f"{n.host}:{n.api_port}") for n in mesh.layout.nodes} | {(JOB_KEEPER, None)}
    if entry:
        want.add((JOB_ENTRY, f"127.0.0.1:{mesh.layout.entry_port}"))

    def targets() -> list[dict[str, Any]] | None:
        active = api(base, "/targets", state="active")["activeTargets"]
        up = [t for t in active if t["health"] == "up"]
        return active if len(up) == len(want) == len(active) else None

    active = wait_until(targets, timeout=30, interval=0.5)
    assert active, api(base, "/targets", state="active")
    assert {(t["labels"]["job"], None if t["labels"]["job"] == JOB_KEEPER else t["labels"]["instance"])
            for t in active} == want
    assert {t["labels"]["node"] for t in active if t["labels"]["job"] == JOB_NODE} == {
        n.name for n in mesh.layout.nodes}

    unsealed = api(base, "/query", query=f'max by (node) (vault_core_unsealed{{mesh="{mesh.spec.name}"}})')
    assert sorted((r["metric"]["node"], r["value"][1]) for r in unsealed["result"]) == [
        (n.name, "1") for n in mesh.layout.nodes]

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in api(base, "/rules", type="alert")["groups"] for r in g["rules"]]
        never = "0001-01-01T00:00:00Z"  # Prometheus's time of a rule not evaluated yet
        return rules if rules and all(r.get("lastEvaluation", never) != never for r in rules) else None

    rules = wait_until(evaluated, timeout=20, interval=0.5)
    assert rules, api(base, "/rules", type="alert")
    assert {r["name"] for r in rules} == {r.alert for r in mesh_rules(mesh.spec)}
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert [r["name"] for r in rules if r["state"] == "firing"] == []
