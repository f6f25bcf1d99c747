"""Restore and the restore drill on real meshes: a snapshot restored into a new mesh brings back the data as of
the snapshot (and not later writes), a restore in place with --force goes back to a snapshot after saving the
current state, and the drill passes on a healthy mesh with a JWT role and fails, with the reason, on a snapshot
of another mesh; afterwards no process and no network namespace of a scratch mesh is left.

Three meshes: the source (``meshes/drill.yaml`` applied: a JWT role trusting its issuer, a seeded KV mount), the
mesh restored from it (then restored in place), and another mesh, whose snapshot has another seal key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from vaultmesh.dr.drill import drill
from vaultmesh.layout import StatePaths
from vaultmesh.lifecycle import mesh as m
from vaultmesh.runtime import netns
from vaultmesh.snapshot import save as snap

from .conftest import MeshHandle, owned_mesh, stop_state_dir
from .test_lifecycle import bao, cli_env
from .workloads import MESHES, apply_file

pytestmark = pytest.mark.integration

VAULTMESH = [sys.executable, "-m", "vaultmesh.cli.main"]
SEED = {"TEST_DRILL_REGION": "eu-north-1"}
"""The value of drill.yaml's KV seed (the plan check needs it to compare the seed's digest)."""
BACKUP_LEAVES_OUT = {"nodes", "entry", "keeper", "identity", "snapshots", "drills"}
QUIET = "snapshots:\n  every: null\n"
"""The keeper takes no snapshot of its own (the drill must find the test's)."""


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VAULTMESH, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def scratch_processes(root: Path) -> list[int]:
    """Processes working in, or naming, the mesh's drills folder (a scratch mesh's nodes, issuer)."""
    drills = str(StatePaths(root).drills_dir)
    found = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        cwd, argv = proc.info.get("cwd") or "", proc.info.get("cmdline") or []
        if cwd.startswith(drills) or any(drills in arg for arg in argv):
            found.append(proc.pid)
    return found


@dataclass
class Source:
    handle: MeshHandle
    snapshot: Path
    ciphertext: str
    """A transit ciphertext of ``b"before"`` made before the snapshot."""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    with owned_mesh(tmp_path_factory.mktemp("dr-source") / "state", QUIET) as handle:
        admin = handle.client()
        apply_file(handle, admin, "drill", env=SEED)
        admin.write("secret-drill/data/before", {"data": {"value": "before"}})
        admin.write("vaultmesh-transit/keys/test-before", {})
        ciphertext = admin.write("vaultmesh-transit/encrypt/test-before",
                                 {"plaintext": base64.b64encode(b"before").decode()})["data"]["ciphertext"]
        manifest = snap.save(handle.mesh)
        admin.write("secret-drill/data/after", {"data": {"value": "after"}})
        assert manifest.path is not None
        yield Source(handle, manifest.path, ciphertext)


@pytest.fixture(scope="module")
def restored(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``vaultmesh --dir BACKUP restore FILE --into DIR``: the restored mesh's state dir. BACKUP is what survives
    a lost machine: a copy of the source's state dir without its nodes' data, the entry, the keeper and the pid
    files (the seal key, the admin password, mesh.yaml, state.json, PKI and records: a few KB)."""
    target = tmp_path_factory.mktemp("dr-restored") / "state"
    backup = tmp_path_factory.mktemp("dr-backup") / "state"
    shutil.copytree(source.handle.dir, backup,
                    ignore=lambda folder, names: [n for n in names if n in BACKUP_LEAVES_OUT or n.endswith(".pid")])
    try:
        proc = run_cli("--dir", str(backup), "restore", str(source.snapshot), "--into", str(target), "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["dir"] == str(target) and set(doc["phases"]) == {"create", "up", "restore", "restart"}
        yield target
    finally:
        stop_state_dir(target)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A snapshot of another mesh: another seal key."""
    with owned_mesh(tmp_path_factory.mktemp("dr-other") / "state", QUIET) as handle:
        manifest = snap.save(handle.mesh)
        assert manifest.path is not None
        yield manifest.path


def test_restore_into_brings_back_the_data_as_of_the_snapshot(source: Source, restored: Path) -> None:
    env = cli_env(restored)  # `vaultmesh env` logs in with the source's admin password, rotated at once
    got = bao(env, "kv", "get", "-field=value", "secret-drill/before")
    assert got.returncode == 0 and got.stdout.strip() == "before", got.stderr
    after = bao(env, "kv", "get", "-field=value", "secret-drill/after")
    assert after.returncode != 0 and "No value found" in after.stdout + after.stderr
    mesh = m.open_mesh(restored)
    client = mesh.client(token=env["BAO_TOKEN"])
    plain = client.write("vaultmesh-transit/decrypt/test-before", {"ciphertext": source.ciphertext})
    assert base64.b64decode(plain["data"]["plaintext"]) == b"before"
    for node in mesh.layout.nodes:  # every node serves the snapshot's data, none the fresh cluster's
        assert client.request("GET", "secret-drill/data/before", nodes=[node.api_addr]).status == 200
        assert client.request("GET", "secret-drill/data/after", nodes=[node.api_addr]).status == 404
    servers = client.read("sys/storage/raft/configuration")["data"]["config"]["servers"]
    assert sorted(s["address"] for s in servers) == sorted(n.cluster_addr.removeprefix("https://")
                                                          for n in mesh.layout.nodes)
    assert mesh.paths.admin_password.read_bytes() != source.handle.mesh.paths.admin_password.read_bytes()
    record = json.loads(mesh.paths.restored_from.read_text())
    assert record["snapshot"] == str(source.snapshot) and record["manifest"]["index"] > 0


def test_restore_without_into_or_force_is_refused(source: Source) -> None:
    proc = run_cli("--dir", str(source.handle.dir), "restore", str(source.snapshot))
    assert proc.returncode == 1 and "nothing was done" in proc.stderr and "--force" in proc.stderr


def test_restore_in_place_with_force_goes_back_to_the_snapshot(restored: Path) -> None:
    mesh = m.open_mesh(restored)
    back = snap.save(mesh)
    with mesh.client(token=m.admin_token(mesh)) as client:
        client.write("secret-drill/data/later", {"data": {"value": "later"}})
    proc = run_cli("--dir", str(restored), "restore", str(back.path), "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    mesh = m.open_mesh(restored)
    with mesh.client(token=m.admin_token(mesh)) as client:
        assert client.read("secret-drill/data/later") is None
        assert client.read("secret-drill/data/before")["data"]["data"] == {"value": "before"}
    saved = [s for s in snap.listing(mesh) if s.reason == "before-restore"]
    assert [str(s.path) for s in saved] == [doc["before"]]


def test_the_drill_passes_on_a_healthy_mesh_and_leaves_nothing(source: Source) -> None:
    root = source.handle.dir
    before = namespaces()
    proc = run_cli("--dir", str(root), "drill", "--snapshot", str(source.snapshot), "--file",
                   str(MESHES / "drill.yaml"), "--json", env=SEED)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert {c["name"]: c["ok"] for c in report["checks"]} == {"restore": True, "plan": True, "canary": True,
                                                              "transit": True, "login": True}, report["checks"]
    login = next(c for c in report["checks"] if c["name"] == "login")
    assert "jwt-drill/role/batch" in login["detail"]
    assert 0 < report["rto_s"] <= report["seconds"] and report["rpo_s"] >= 0
    assert json.loads(StatePaths(root).drill_report.read_text())["rto_s"] == report["rto_s"]
    assert scratch_processes(root) == [] and namespaces() - before == set()
    assert [p.name for p in StatePaths(root).drills_dir.iterdir()] == ["last.json"]


def test_the_drill_fails_with_the_reason_for_a_snapshot_of_another_mesh(source: Source, other: Path) -> None:
    root = source.handle.dir
    before = namespaces()
    report = drill(root, snapshot=other, isolation=not netns.unavailable())
    assert not report.ok and report.rto_s is None
    first, *rest = report.checks
    assert first.name == "restore" and first.ok is False and "sealed with another key" in first.detail
    assert [(c.name, c.ok) for c in rest] == [("plan", None), ("canary", None), ("transit", None), ("login", None)]
    assert scratch_processes(root) == [] and namespaces() - before == set()
    with contextlib.suppress(FileNotFoundError):
        assert [p.name for p in StatePaths(root).drills_dir.iterdir()] == ["last.json"]
