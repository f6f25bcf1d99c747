"""The Grafana dashboard, validated structurally: schema version, unique panel ids, a data source and a
non-empty PromQL query on every panel, a grid without overlaps; every query reads only names OpenBao 2.7.2
or vaultmesh emit, is scoped to the mesh, and parses (promtool checks them as recording rules)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vaultmesh.monitoring.dashboard import SCHEMA_VERSION, WIDTH, render_dashboard, render_dashboard_json
from vaultmesh.monitoring.names import unknown_metrics
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.models import MeshSpec

SPECS = {
    "default": MeshSpec(),
    "five": parse_spec("name: five\nnodes: 5\nzones: [a, b, c, d, e]\n"),
    "drills": parse_spec("name: drilled\ndrills: {every: 1h}\n"),
    "nokeeper": parse_spec("keeper: false\n"),
}


def panels(spec: MeshSpec) -> list[dict[str, Any]]:
    return render_dashboard(spec)["panels"]


def queries(spec: MeshSpec) -> list[str]:
    return [t["expr"] for p in panels(spec) for t in p["targets"]]


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> MeshSpec:
    return SPECS[request.param]


def test_the_document_is_a_grafana_dashboard(spec: MeshSpec) -> None:
    doc = json.loads(render_dashboard_json(spec))
    assert doc["schemaVersion"] == SCHEMA_VERSION
    assert doc["uid"] == f"vaultmesh-{spec.name}" and len(doc["uid"]) <= 40
    assert doc["title"] and doc["panels"]
    assert [v["name"] for v in doc["templating"]["list"]] == ["datasource"]
    assert doc["templating"]["list"][0]["type"] == "datasource"


def test_panel_ids_are_unique(spec: MeshSpec) -> None:
    ids = [p["id"] for p in panels(spec)]
    assert len(ids) == len(set(ids))


def test_every_panel_has_a_datasource_and_a_query(spec: MeshSpec) -> None:
    for p in panels(spec):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["type"] in ("stat", "timeseries") and p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"] == p["datasource"]


def test_the_grid_has_no_overlap_and_fits_the_width(spec: MeshSpec) -> None:
    taken: set[tuple[int, int]] = set()
    for p in panels(spec):
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= WIDTH
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, p["title"]
        taken |= cells


def test_every_query_reads_only_emitted_names_of_this_mesh(spec: MeshSpec) -> None:
    for expr in queries(spec):
        assert not unknown_metrics(expr), (expr, unknown_metrics(expr))
        assert f'mesh="{spec.name}"' in expr


def test_the_raft_panels_are_there() -> None:
    titles = {p["title"] for p in panels(MeshSpec())}
    assert {"Leader", "Servers in autopilot (of 3)", "Failure tolerance", "Applied-index lag per follower",
            "Raft commit time", "Autopilot: node healthy", "Request latency", "Leases", "Audit failures (5m)",
            "Certificate days left", "Snapshot age", "Tokens created by auth mount (5m)"} <= titles


def test_the_leader_stat_shows_a_node_name() -> None:
    leader = next(p for p in panels(MeshSpec()) if p["title"] == "Leader")
    assert leader["options"]["textMode"] == "name" and leader["targets"][0]["legendFormat"] == "{{node}}"


def test_thresholds_follow_the_spec() -> None:
    five = {p["title"]: p for p in panels(SPECS["five"])}
    steps = five["Failure tolerance"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 1, 2]
    snap = {p["title"]: p for p in panels(MeshSpec())}["Snapshot age"]
    assert [s["value"] for s in snap["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 1350, 1800]


def test_keeper_job_panels_only_when_scheduled() -> None:
    assert not {p["title"] for p in panels(MeshSpec())} & {"Last drill", "Drill RTO"}
    assert {"Last drill", "Drill RTO"} <= {p["title"] for p in panels(SPECS["drills"])}
    off = {p["title"] for p in panels(SPECS["nokeeper"])}
    assert not off & {"Snapshot age", "Keeper restarts (1h)", "Lease budgets exceeded"}
    assert not {p["title"] for p in panels(parse_spec("snapshots: {every: null}\n"))} & {"Snapshot age"}


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
def test_every_query_parses(spec: MeshSpec, tmp_path: Path) -> None:
    rules = [{"record": f"vaultmesh:panel_{i}", "expr": expr} for i, expr in enumerate(queries(spec))]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
