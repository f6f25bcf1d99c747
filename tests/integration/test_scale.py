"""`vaultmesh scale` on a real 3-node mesh: 3 -> 5 with the command, 5 -> 3 with `up -f` and a changed `nodes`,
under a steady write load through the retrying EngineClient that reads back every acknowledged write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultmesh.waiting import wait_until

from .conftest import MeshHandle, owned_mesh
from .workloads import WriteLoad

pytestmark = pytest.mark.integration

VAULTMESH = [sys.executable, "-m", "vaultmesh.cli.main"]
SPEC = "nodes: 3\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VAULTMESH_DIR"}
    return subprocess.run([*VAULTMESH, *args], capture_output=True, text=True, timeout=300, env=env)


def voters(handle: MeshHandle) -> list[str]:
    """The voters of the leader's Raft configuration (what `bao operator raft list-peers` prints)."""
    conf = handle.client().read("sys/storage/raft/configuration") or {}
    servers = ((conf.get("data") or {}).get("config") or {}).get("servers") or []
    return sorted(s["node_id"] for s in servers if s.get("voter"))


def nodes_line(handle: MeshHandle) -> str:
    return next(line for line in handle.mesh.paths.spec_file.read_text().splitlines() if line.startswith("nodes:"))


@pytest.fixture
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHandle]:
    with owned_mesh(tmp_path_factory.mktemp("scale") / "state", SPEC) as handle:
        yield handle


def test_scale_3_to_5_and_up_f_back_to_3_under_load_loses_nothing(mesh: MeshHandle, tmp_path: Path) -> None:
    with WriteLoad(mesh, "scale-load") as load:
        out = cli("scale", "--dir", str(mesh.dir), "--nodes", "5", "--json")
        assert out.returncode == 0, out.stderr
        mesh.reopen()
        assert voters(mesh) == [f"node-{i}" for i in range(1, 6)]
        assert nodes_line(mesh) == "nodes: 5"
        assert [n.zone for n in mesh.mesh.layout.nodes] == ["zone-a", "zone-b", "zone-c", "zone-a", "zone-b"]
        doc = json.loads(out.stdout)
        assert doc["before"] == 3 and doc["nodes"] == 5 and len(doc["voters"]) == 5

        file = tmp_path / "mesh.yaml"
        file.write_text(SPEC)
        back = cli("up", "--dir", str(mesh.dir), "-f", str(file))
        assert back.returncode == 0, back.stderr
    mesh.reopen()

    assert load.errors == []
    assert load.lost() == []
    assert len(load.acked) > 50
    assert voters(mesh) == ["node-1", "node-2", "node-3"]
    assert nodes_line(mesh) == "nodes: 3"
    assert len(mesh.mesh.layout.nodes) == 3
    assert not (mesh.mesh.paths.nodes_dir / "node-4").exists() and not (mesh.mesh.paths.nodes_dir / "node-5").exists()
    status = json.loads(cli("status", "--dir", str(mesh.dir), "--json").stdout)
    assert status["healthy"] and len(status["nodes"]) == 3
    again = cli("scale", "--dir", str(mesh.dir), "--nodes", "3")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr


def test_a_scale_killed_after_its_first_new_node_started_completes_when_run_again(mesh: MeshHandle) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VAULTMESH_DIR"}
    node4 = mesh.mesh.paths.nodes_dir / "node-4"
    proc = subprocess.Popen([*VAULTMESH, "scale", "--dir", str(mesh.dir), "--nodes", "5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        assert wait_until(lambda: (node4 / "bao.pid").exists(), timeout=60, interval=0.02), "node-4 never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(voters(mesh)) < 5  # it was cut off part-way
    assert nodes_line(mesh) == "nodes: 3"

    out = cli("scale", "--dir", str(mesh.dir), "--nodes", "5", "--json")
    assert out.returncode == 0, out.stderr
    mesh.reopen()
    assert voters(mesh) == [f"node-{i}" for i in range(1, 6)]
    assert nodes_line(mesh) == "nodes: 5"
    status = json.loads(cli("status", "--dir", str(mesh.dir), "--json").stdout)
    assert status["healthy"] and len(status["nodes"]) == 5
