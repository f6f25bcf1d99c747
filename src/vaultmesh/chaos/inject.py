"""Doing the faults: find the leader, signal node processes by pid, cut zone links, heal. Edge code."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from vaultmesh.api.client import EngineClient
from vaultmesh.errors import VaultmeshError
from vaultmesh.layout import NodeLayout
from vaultmesh.lifecycle import mesh as m
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import wait_until

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Injected:
    """What an injection did: the nodes it hit and a sentence for the report."""

    nodes: tuple[str, ...]
    detail: str


def leader(mesh: m.Mesh, *, timeout: float = 1.0) -> NodeLayout | None:
    """The node that says it is active (unsealed, not standby), asked directly."""
    client = EngineClient(mesh.node_addrs, ca_file=str(mesh.paths.ca_cert))
    try:
        for node in mesh.layout.nodes:
            with contextlib.suppress(OSError, ValueError):
                h = client.health(node.api_addr, timeout=timeout)
                if h.get("_status") == 200 and h.get("standby") is False and h.get("sealed") is False:
                    return node
    finally:
        client.close()
    return None


def wait_leader(mesh: m.Mesh, *, timeout: float = 30.0, clock: Clock = time.monotonic,
                sleep: Sleep = time.sleep) -> NodeLayout | None:
    """The active node, once one is elected (None: none within ``timeout``)."""
    return wait_until(lambda: leader(mesh), timeout=timeout, interval=0.1, clock=clock, sleep=sleep)


def node_pid(node: NodeLayout) -> int:
    pid = processes.node_process(node).pid(adopt=True)
    if pid is None:
        where = f"on {node.remote.host}" if node.remote else f"for {node.pid_file}"
        raise VaultmeshError(f"{node.name} is not running (no live process {where})")
    return pid


def _signal(node: NodeLayout, pid: int, sig: int) -> None:
    """``sig`` to the node's process: here by pid, on its host over SSH (``runtime: ssh``)."""
    if node.remote is not None:
        from vaultmesh.hosts import runtime as hosts

        hosts.kill(node, signal.Signals(sig).name.removeprefix("SIG"))
    else:
        os.kill(pid, sig)


def signal_nodes(nodes: list[NodeLayout], sig: int) -> Injected:
    """Send ``sig`` to each node's own process (by its pid file, checked against its config path; on its host
    for a node of a ``runtime: ssh`` mesh)."""
    pids = [(n, node_pid(n)) for n in nodes]
    for n, pid in pids:
        _signal(n, pid, sig)
    name = signal.Signals(sig).name
    return Injected(tuple(n.name for n, _ in pids), ", ".join(f"{name} {n.name} (pid {pid})" for n, pid in pids))


def resume_nodes(nodes: list[NodeLayout]) -> None:
    for n in nodes:
        pid = processes.node_process(n).pid(adopt=True)
        if pid is not None:
            _signal(n, pid, signal.SIGCONT)


def zone_of(mesh: m.Mesh, zone: str) -> list[NodeLayout]:
    nodes = [n for n in mesh.layout.nodes if n.zone == zone]
    if not nodes:
        zones = sorted({n.zone for n in mesh.layout.nodes})
        raise VaultmeshError(f"no node in zone {zone!r}; zones: {', '.join(zones)}")
    return nodes


def pick_standby(mesh: m.Mesh, current_leader: NodeLayout | None, target: str | None) -> NodeLayout:
    if target:
        try:
            return mesh.layout.node(target)
        except KeyError:
            raise VaultmeshError(f"no node named {target!r}") from None
    for n in mesh.layout.nodes:
        if current_leader is None or n.name != current_leader.name:
            return n
    raise VaultmeshError("the mesh has no standby to kill")


def mesh_healthy(root: os.PathLike[str] | str) -> bool:
    """`vaultmesh status` calls the mesh healthy. A mesh that cannot answer yet (a node restarting, its state
    being rewritten) is not healthy: that is what a caller waits out, not a failure."""
    from pathlib import Path

    from vaultmesh.lifecycle.up import status

    try:
        _, view, _ = status(Path(root))
    except (VaultmeshError, OSError):
        return False
    return bool(view.healthy)


def wait_healthy(root: os.PathLike[str] | str, *, timeout: float = 90.0, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep, healthy: Callable[[os.PathLike[str] | str], bool] = mesh_healthy,
                 ) -> float | None:
    """Seconds until `vaultmesh status` calls the mesh healthy (None: not within ``timeout``)."""
    t0 = clock()
    if not wait_until(lambda: healthy(root), timeout=timeout, interval=0.25, clock=clock, sleep=sleep):
        return None
    return clock() - t0


def heal_with_up(root: os.PathLike[str] | str, *, timeout: float = 120.0) -> float:
    """`vaultmesh up`: restarts stopped nodes, which rejoin and unseal; seconds until it returned healthy."""
    from pathlib import Path

    from vaultmesh.lifecycle.up import up

    t0 = time.monotonic()
    up(Path(root), None, "", timeout=timeout)
    return time.monotonic() - t0
