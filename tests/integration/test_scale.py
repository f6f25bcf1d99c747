"""`vaultmesh scale` on a real 3-node mesh: 3 -> 5 with `up -f` and a changed `nodes`, 5 -> 3 with the command
once a node it removes leads, under a steady write load through the retrying EngineClient that reads back every
acknowledged write; a scale SIGKILLed part-way and run again; a Shamir-sealed netns mesh 3 -> 5 -> 3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultmesh.api.client import EngineClient
from vaultmesh.layout import NETNS_PREFIX
from vaultmesh.runtime import netns
from vaultmesh.waiting import wait_until

from .conftest import MeshHandle, owned_mesh, stop_state_dir
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


def leader(handle: MeshHandle) -> str | None:
    probe = EngineClient(handle.addrs, ca_file=handle.ca)
    for node in handle.mesh.layout.nodes:
        try:
            h = probe.health(node.api_addr, timeout=1.0)
        except OSError:
            continue
        if h.get("sealed") is False and h.get("standby") is False:
            return node.name
    return None


def lead_from(handle: MeshHandle, names: set[str]) -> str:
    """Make one of ``names`` lead; its name. OpenBao's step-down hands leadership to the most caught-up follower,
    the first in the Raft configuration on a tie (never an added node), so the followers not in ``names`` are
    paused (SIGSTOP; the leader and ``names`` keep a quorum) for one write and the step-down, then resumed."""
    client = handle.client()
    for _ in range(5):
        now = leader(handle)
        if now in names:
            return now
        if now is None:
            wait_until(lambda: leader(handle) is not None, timeout=10, interval=0.1)
            continue
        paused = [pid for name, pid in handle.pids().items()
                  if name.startswith("node-") and name != now and name not in names]
        try:
            for pid in paused:
                os.kill(pid, signal.SIGSTOP)
            client.write("scale-load/lead", {"v": "ahead"})  # names' logs now run ahead
            client.request("PUT", "sys/step-down", {}, nodes=[handle.mesh.layout.node(now).api_addr])
            wait_until(lambda was=now: leader(handle) not in (None, was), timeout=10, interval=0.1)
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
    raise AssertionError(f"none of {sorted(names)} took the lead after 5 step-downs")


def test_up_f_3_to_5_then_scale_back_to_3_removing_the_leader_under_load_loses_nothing(
        mesh: MeshHandle, tmp_path: Path) -> None:
    with WriteLoad(mesh, "scale-load") as load:
        file = tmp_path / "mesh.yaml"
        file.write_text("nodes: 5\n")
        grow = cli("up", "--dir", str(mesh.dir), "-f", str(file))
        assert grow.returncode == 0, grow.stderr
        mesh.reopen()
        assert voters(mesh) == [f"node-{i}" for i in range(1, 6)]
        assert nodes_line(mesh) == "nodes: 5"
        assert [n.zone for n in mesh.mesh.layout.nodes] == ["zone-a", "zone-b", "zone-c", "zone-a", "zone-b"]

        first = lead_from(mesh, {"node-4", "node-5"})  # a node the scale removes leads
        out = cli("scale", "--dir", str(mesh.dir), "--nodes", "3", "--json")
        assert out.returncode == 0, out.stderr
    mesh.reopen()
    doc = json.loads(out.stdout)

    assert load.errors == []
    assert load.lost() == []
    assert len(load.acked) > 50
    assert doc["before"] == 5 and doc["nodes"] == 3 and doc["voters"] == ["node-1", "node-2", "node-3"]
    handovers = [s for s in doc["steps"] if "handed leadership" in s]
    assert handovers and handovers[0].startswith(f"{first} handed leadership"), doc["steps"]
    # each leadership change is a step-down the plan asked for: none other, and the last leader stays
    assert doc["leaders"][0] == first and len(doc["leaders"]) == len(handovers) + 1, doc
    assert doc["leaders"][-1] in {"node-1", "node-2", "node-3"} and leader(mesh) == doc["leaders"][-1]
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


def sealed(handle: MeshHandle) -> list[str]:
    probe = EngineClient(handle.addrs, ca_file=handle.ca)
    out = []
    for node in handle.mesh.layout.nodes:
        try:
            if probe.health(node.api_addr, timeout=1.0).get("sealed") is not False:
                out.append(node.name)
        except OSError:
            out.append(node.name)
    return out


def test_a_shamir_netns_mesh_scales_3_to_5_unsealing_each_new_node_in_its_own_namespace_and_back(
        make_mesh: Callable[..., MeshHandle]) -> None:
    """One mesh for both refusals lifted: Shamir-sealed, and in network namespaces where they can be made (as root
    with iproute2; elsewhere the same test runs it on loopback and says so)."""
    why = netns.unavailable()
    spec = "seal:\n  type: shamir\n  key_shares: 3\n  key_threshold: 2\n" + ("" if why else "runtime: netns\n")
    layouts = []
    try:
        handle = make_mesh(spec)
        layouts.append(handle.mesh.layout)
        keys = handle.mesh.paths.shamir_keys.read_bytes()
        out = cli("scale", "--dir", str(handle.dir), "--nodes", "5")
        handle.reopen()
        layouts.append(handle.mesh.layout)
        assert out.returncode == 0, out.stderr
        assert voters(handle) == [f"node-{i}" for i in range(1, 6)]
        assert sealed(handle) == []
        assert "unsealed node-4 with the Shamir keys" in out.stderr and "unsealed node-5" in out.stderr, out.stderr
        assert handle.mesh.paths.shamir_keys.read_bytes() == keys  # the same shares: nothing re-initialised
        added = handle.mesh.layout.nodes[3:]
        if not why:
            assert all(n.netns and n.host.startswith(NETNS_PREFIX) for n in added)
            assert len({n.host for n in handle.mesh.layout.nodes}) == 5  # each its own address
            assert {n.netns for n in added} <= set(namespaces())

        back = cli("scale", "--dir", str(handle.dir), "--nodes", "3")
        assert back.returncode == 0, back.stderr
        handle.reopen()
        assert voters(handle) == ["node-1", "node-2", "node-3"] and sealed(handle) == []
        if not why:
            assert not {n.netns for n in added} & set(namespaces())  # the removed nodes' namespaces are gone
            assert {n.netns for n in handle.mesh.layout.nodes} <= set(namespaces())
    finally:
        for layout in layouts:
            stop_state_dir(layout.paths.root)
            if not why:
                netns.remove(layout)
    if why:
        pytest.skip(f"ran on loopback: network-namespace hosts are not possible here: {why}")


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]
