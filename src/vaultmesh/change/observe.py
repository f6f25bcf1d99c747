"""Gather a ``ChangeView`` of a running mesh: the edge a change plans from (processes, health, Raft indexes,
autopilot). Reads only: nothing here writes to the mesh or the state dir."""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.change.plan import ChangeView, NodeFacts
from vaultmesh.durations import parse_seconds
from vaultmesh.errors import VaultmeshError
from vaultmesh.layout import NodeLayout
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import seal_ready
from vaultmesh.runtime import processes

QUICK = RetryPolicy(deadline=1.5)

HANDOVER_TIMEOUT = 15.0
"""Seconds a step-down gets to bring a leader where the change wants it before it is asked again (an election
takes ~2 s)."""
HANDOVER_TRIES = 3
POLL = 0.2
"""Seconds between observations while a step settles (each observation is a handful of local requests)."""


def quiet(_: str) -> None:
    """The progress callback of a change nobody watches."""


def step_down(client: EngineClient, node: NodeLayout, settled: Callable[[], bool]) -> bool:
    """Ask ``node`` to give up leadership (``sys/step-down``), up to ``HANDOVER_TRIES`` times, until
    ``settled()`` (the step's invariant: a leader where the change wants it); whether it came."""
    for _ in range(HANDOVER_TRIES):
        client.request("PUT", "sys/step-down", {}, nodes=[node.api_addr], retry=RetryPolicy(deadline=5.0))
        if settled():
            return True
    return False
"""One observation must not stall a change: a node that does not answer within this is seen as not answering."""


def _since(stamp: str | None, now: float) -> float:
    """Seconds since an RFC 3339 time (autopilot's ``stable_since``, nanoseconds and all); 0 when unreadable."""
    if not stamp:
        return 0.0
    try:
        head, _, frac = stamp.rstrip("Z").partition(".")
        t = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC).timestamp() + float(f"0.{frac or 0}")
    except ValueError:
        return 0.0
    return max(0.0, now - t)


def _node(node: NodeLayout, client: EngineClient) -> dict[str, Any]:
    """What one node says about itself: running, health, its applied index."""
    pid = processes.node_process(node).pid()
    out: dict[str, Any] = {"running": pid is not None, "has_data": node.dir.exists()}
    if pid is None:
        return out
    try:
        h = client.health(node.api_addr, timeout=1.0)
        out.update(unsealed=h.get("sealed") is False, version=h.get("version") or None,
                   leader=h.get("sealed") is False and h.get("standby") is False)
        leader = client.request("GET", "sys/leader", token=None, nodes=[node.api_addr], retry=QUICK).data or {}
        out["applied_index"] = int(leader.get("raft_applied_index") or 0)
        out["committed_index"] = int(leader.get("raft_committed_index") or 0)
    except (OSError, VaultmeshError, ValueError):
        out.update(unsealed=False, leader=False)
    return out


def _applied(node: NodeLayout, seen: dict[str, Any], client: EngineClient) -> int | None:
    if not seen.get("unsealed"):
        return None
    try:
        data = client.request("GET", "sys/leader", token=None, nodes=[node.api_addr], retry=QUICK).data or {}
        return int(data.get("raft_applied_index") or 0)
    except (OSError, VaultmeshError, ValueError):
        return None


def _seal(mesh: m.Mesh, client: EngineClient) -> tuple[NodeFacts | None, bool | None]:
    """The transit seal node (None: the mesh has none) and whether it serves the transit key."""
    node = mesh.layout.seal_node
    if node is None:
        return None, None
    seen = _node(node, client)
    facts = NodeFacts(node.name, node.zone, running=seen["running"], unsealed=bool(seen.get("unsealed")),
                      version=seen.get("version"), member=False, voter=False, has_data=seen["has_data"])
    return facts, bool(seen.get("unsealed")) and seal_ready(mesh, client)


def observe(mesh: m.Mesh, client: EngineClient, *, now: float | None = None) -> ChangeView:
    """The mesh as a change sees it. ``client`` carries an admin token (autopilot's state needs one). The
    leader's commit index is the one it reported with the nodes' applied indexes, in the same round."""
    nodes = mesh.layout.nodes
    with cf.ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        seen = list(pool.map(lambda n: _node(n, client), nodes))
    leaders = [i for i, s in enumerate(seen) if s.get("leader")]
    commit = seen[leaders[0]].get("committed_index") if len(leaders) == 1 else None
    if commit is not None:  # the followers' applied indexes again, read after the leader's commit index
        with cf.ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            again = list(pool.map(lambda pair: _applied(*pair, client),
                                  [(n, s) for i, (n, s) in enumerate(zip(nodes, seen, strict=True))
                                   if i not in leaders]))
        for s, applied in zip([s for i, s in enumerate(seen) if i not in leaders], again, strict=True):
            if applied is not None:
                s["applied_index"] = applied
    servers: dict[str, Any] = {}
    ap: dict[str, Any] = {}
    if leaders:
        try:
            ap = (client.read("sys/storage/raft/autopilot/state", retry=QUICK) or {}).get("data") or {}
            servers = ap.get("servers") or {}
        except VaultmeshError:
            ap = {}
    t = time.time() if now is None else now
    facts = []
    for node, s in zip(nodes, seen, strict=True):
        server = servers.get(node.name) or {}
        facts.append(NodeFacts(
            node.name, node.zone, running=s["running"], unsealed=bool(s.get("unsealed")), version=s.get("version"),
            member=bool(server) if ap else True, voter=server.get("status") in ("leader", "voter") if ap else True,
            leader=bool(s.get("leader")), applied_index=s.get("applied_index"),
            healthy=bool(server.get("healthy")) and server.get("node_status") == "alive",
            stable_for=_since(server.get("stable_since"), t) if server.get("healthy") else 0.0,
            has_data=s["has_data"]))
    seal, ready = _seal(mesh, client)
    return ChangeView(tuple(facts), commit_index=commit, seal=seal, seal_ready=ready,
                      autopilot_healthy=bool(ap.get("healthy")) if ap else None,
                      failure_tolerance=ap.get("failure_tolerance") if ap else None,
                      stabilization=parse_seconds(mesh.spec.raft.autopilot.server_stabilization_time),
                      shamir=mesh.spec.seal.type == "shamir")
