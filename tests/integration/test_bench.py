"""vaultmesh bench against a real mesh: short, bounded runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vaultmesh.bench.model import BenchConfig
from vaultmesh.bench.report import error_total, overall
from vaultmesh.bench.runner import bench_mesh
from vaultmesh.bench.targets import SEED_ENV, admin_client, bench_mesh_file, setup_targets
from vaultmesh.cli.bench import bench
from vaultmesh.cli.main import Ctx
from vaultmesh.reconcile.apply import apply, make_plan
from vaultmesh.reconcile.plan import Delete
from vaultmesh.spec.load import parse_spec

from .conftest import MeshHandle

pytestmark = [pytest.mark.integration, pytest.mark.alone]  # timing-sensitive: run alone, after the rest


def test_small_rollout_completes_without_errors_and_counts_return(shared_mesh: MeshHandle,
                                                                   postgres_dsn: str) -> None:
    cfg = BenchConfig(scenario="rollout", count=20, window=1.0, hold=0.5, concurrency=8)
    result = bench_mesh(shared_mesh.mesh, cfg)
    o = overall(result)
    assert (o.attempts, o.successes) == (20, 20), [s for s in result.samples if not s.ok][:3]
    assert error_total(result) == 0
    phases = {s.phase for s in result.samples}
    assert {"mint", "login", "kv", "db", "revoke", "login-to-secrets", "workload"} <= phases
    assert result.returned, (result.before, result.after)
    assert result.after is not None and result.before is not None
    assert result.after.leases <= result.before.leases and result.after.tokens <= result.before.tokens


def test_raw_ceiling_sends_the_same_requests(shared_mesh: MeshHandle, postgres_dsn: str) -> None:
    cfg = BenchConfig(scenario="rollout", count=20, window=0.5, hold=0.0, concurrency=8, raw=True)
    result = bench_mesh(shared_mesh.mesh, cfg)
    assert error_total(result) == 0
    assert {s.phase for s in result.samples} >= {"login", "kv", "db", "revoke"}
    assert result.returned


def test_closed_loop_kv_read_stops_at_its_count(shared_mesh: MeshHandle) -> None:
    cfg = BenchConfig(scenario="kv-read", count=300, duration=20.0, concurrency=4)
    result = bench_mesh(shared_mesh.mesh, cfg)
    assert len([s for s in result.samples if s.phase == "kv-read"]) == 300
    assert error_total(result) == 0 and result.returned


def test_cli_reports_and_writes_json_and_plot(shared_mesh: MeshHandle, postgres_dsn: str, tmp_path: Path) -> None:
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    res = CliRunner().invoke(bench, ["steady", "--rate", "20", "--duration", "1", "--hold", "0.2", "-c", "4",
                                     "--json", str(out), "--plot", str(page)],
                             obj=Ctx(shared_mesh.dir, None, False))
    assert res.exit_code == 0, res.output
    assert "overall: 20/20 workloads ok, 0 errors" in res.output
    doc = json.loads(out.read_text())
    assert len([r for r in doc["samples"] if r[0] == "workload"]) == 20
    assert "<svg" in page.read_text()
    record = json.loads(shared_mesh.mesh.paths.load_record.read_text())  # what `vaultmesh doctor` reads
    assert record["run"] == "bench steady" and record["passed"] is True and record["errors"] == 0


def test_the_benchs_objects_come_from_its_own_file_and_no_other_file_offers_to_prune_them(
        shared_mesh: MeshHandle, postgres_dsn: str) -> None:
    mesh = shared_mesh.mesh
    admin = admin_client(mesh)
    try:
        targets = setup_targets(mesh, client=admin)
        assert targets.auth_mount.startswith("vaultmesh-bench")
        # the bench's file is in place: applying it again changes nothing
        again = apply(mesh, admin, parse_spec(bench_mesh_file()), base_dir=shared_mesh.dir, env=SEED_ENV,
                      partial=True)
        assert again.performed == ()
        # a user's file that declares none of it: its plan lists no bench object for pruning
        plan, _ = make_plan(mesh, admin, parse_spec("version: 1\n"), base_dir=shared_mesh.dir)
        prunes = [a.key.id for a in plan.actions if isinstance(a, Delete) and a.prune]
        assert not [p for p in prunes if "bench" in p], prunes
    finally:
        admin.close()
