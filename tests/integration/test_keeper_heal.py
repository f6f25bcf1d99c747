"""The keeper heals a mesh with nobody at the keyboard: a SIGKILLed standby and a SIGKILLed leader come back as
healthy voters with no command run; a SIGSTOPped node is left alone (frozen is not dead)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from vaultmesh.lifecycle.keeper_process import read_status
from vaultmesh.lifecycle.status import status
from vaultmesh.runtime.local import wait_until
from vaultmesh.snapshot.archive import verify_file

from .conftest import MeshHandle
from .test_lifecycle import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.alone]  # timing-sensitive: run alone, after the rest


def _leader(handle: MeshHandle) -> str:
    client = handle.client()
    for node in handle.mesh.layout.nodes:
        try:
            if client.health(node.api_addr).get("standby") is False:
                return node.name
        except OSError:
            continue
    raise AssertionError("no leader")


def _healthy_again(handle: MeshHandle, name: str, old_pid: int) -> bool:
    _, view, _ = status(handle.dir)
    node = next(n for n in view.nodes if n.name == name)
    return view.healthy and node.pid is not None and node.pid != old_pid


def test_keeper_restarts_a_killed_standby_and_a_killed_leader(make_mesh: Callable[..., MeshHandle]) -> None:
    handle = make_mesh()
    for pick in ("standby", "leader"):
        leader = _leader(handle)
        name = leader if pick == "leader" else next(n.name for n in handle.mesh.layout.nodes if n.name != leader)
        pid = handle.pids()[name]
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda name=name, pid=pid: _healthy_again(handle, name, pid), timeout=30), \
            f"{pick} {name} not back: {status(handle.dir)[1]}"
        print(f"SIGKILLed {pick} {name} back as a healthy voter after {time.monotonic() - t0:.1f} s")
    record = read_status(handle.mesh.paths)
    assert record is not None and record.restarts >= 2 and record.backing_off is None
    assert any("started node" in line or "started " in line for line in record.recent), record.recent


def test_keeper_leaves_a_frozen_node_alone(make_mesh: Callable[..., MeshHandle]) -> None:
    handle = make_mesh()
    leader = _leader(handle)
    name = next(n.name for n in handle.mesh.layout.nodes if n.name != leader)
    pid = handle.pids()[name]
    before = wait_until(lambda: read_status(handle.mesh.paths), timeout=20)
    os.kill(pid, signal.SIGSTOP)
    try:
        # several heal cycles (0.5 s each) see it not answering; none may restart it
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert handle.pids()[name] == pid
            time.sleep(0.5)
        after = read_status(handle.mesh.paths)
        assert after is not None and before is not None and after.restarts == before.restarts
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_until(lambda: status(handle.dir)[1].healthy, timeout=30)
    assert handle.pids()[name] == pid


def test_status_shows_the_keeper_and_its_metrics(shared_mesh: MeshHandle) -> None:
    record = wait_until(lambda: (r := read_status(shared_mesh.mesh.paths)) is not None and r.metrics and r,
                        timeout=20)
    assert record and record.metrics and record.metrics.startswith("https://127.0.0.1:")
    ctx = ssl.create_default_context(cafile=shared_mesh.ca)  # verified against the mesh CA
    with urllib.request.urlopen(record.metrics, context=ctx, timeout=5) as resp:
        body = resp.read().decode()
    assert "vaultmesh_keeper_up 1.0" in body and "vaultmesh_keeper_restarts_total" in body
    doc = json.loads(run_cli(shared_mesh.dir, "status", "--json").stdout)
    assert doc["keeper"]["running"] is True and "restarted" in doc["keeper"]["summary"]


def test_the_keeper_takes_snapshots_on_schedule_and_exports_them(make_mesh: Callable[..., MeshHandle]) -> None:
    """``snapshots.every``: the keeper takes one with nobody asking, keeps ``keep`` of them, and its /metrics and
    status record say when, how big and at which Raft index."""
    handle = make_mesh("snapshots:\n  every: 10s\n  keep: 1\nkeeper:\n  heal: false\n")
    paths = handle.mesh.paths
    record = wait_until(lambda: (r := read_status(paths)) is not None and r.snapshot and r.metrics and r,
                        timeout=40)
    assert record and record.snapshot and record.snapshot["error"] is None, record
    taken = Path(record.snapshot["path"])
    assert taken.parent == paths.snapshots_dir and taken.is_file() and record.snapshot["index"] > 0
    assert verify_file(taken).index == record.snapshot["index"]
    ctx = ssl.create_default_context(cafile=handle.ca)
    with urllib.request.urlopen(record.metrics, context=ctx, timeout=5) as resp:
        body = resp.read().decode()
    size = next(line for line in body.splitlines() if line.startswith("vaultmesh_snapshot_last_size_bytes "))
    assert float(size.split()[1]) == taken.stat().st_size
    assert "vaultmesh_snapshot_last_success_timestamp_seconds " in body
    second = wait_until(lambda: (r := read_status(paths)) is not None and r.snapshot
                        and r.snapshot["path"] != str(taken) and r, timeout=30)
    assert second, "no second scheduled snapshot"
    assert [p.name for p in paths.snapshots_dir.glob("*.snap")] == [Path(second.snapshot["path"]).name]
