"""A frozen picture of a mesh: each node's process, health, Raft and autopilot view, and what the current run
of ``up`` has done to it (``RunFacts``). Gathering is I/O; the values are plain and feed the pure ``decide``."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.errors import RuntimeFailure, VaultmeshError
from vaultmesh.layout import NodeLayout
from vaultmesh.runtime import processes


@dataclass(frozen=True)
class NodeView:
    name: str
    zone: str
    api_addr: str
    pid: int | None
    running: bool
    reachable: bool = False
    initialized: bool | None = None
    sealed: bool | None = None
    standby: bool | None = None
    voter: bool | None = None
    """From the leader's Raft configuration (None when unknown: no token or no leader)."""
    autopilot_healthy: bool | None = None
    error: str | None = None
    version: str | None = None
    """The engine version the node reports in its health (None: not answering)."""

    @property
    def leader(self) -> bool:
        return self.reachable and self.sealed is False and self.standby is False

    @property
    def healthy(self) -> bool:
        return bool(self.running and self.reachable and self.sealed is False and self.voter
                    and self.autopilot_healthy is not False)


@dataclass(frozen=True)
class RunFacts:
    """What this run of ``up`` did so far: what no observation of the mesh can tell."""

    started: frozenset[str] = frozenset()
    """Processes started in this run: node names, ``seal`` and ``entry``."""
    restarted: frozenset[str] = frozenset()
    """Nodes restarted in this run to unseal at once (at most once each)."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """The last error of a step that may succeed on a later cycle, by node name (or ``login``)."""

    def error(self, name: str) -> str | None:
        return self.errors.get(name)


@dataclass(frozen=True)
class MeshView:
    nodes: tuple[NodeView, ...]
    seal_node: NodeView | None = None
    entry_running: bool | None = None
    """None: no entry process is wanted."""
    token_ok: bool = False
    autopilot_healthy: bool | None = None
    failure_tolerance: int | None = None
    can_write: bool | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    entry_routing: bool | None = None
    """The entry answers as the active node (None: not probed)."""
    seal_ready: bool | None = None
    """The transit seal node encrypts with the mesh's key and token (None: not probed)."""
    run: RunFacts = field(default_factory=RunFacts)

    @property
    def leader(self) -> NodeView | None:
        leaders = [n for n in self.nodes if n.leader]
        return leaders[0] if len(leaders) == 1 else None

    @property
    def initialized(self) -> bool:
        return any(n.initialized for n in self.nodes)

    @property
    def seal_node_serving(self) -> bool:
        """No seal node, or one that runs, is unsealed and (when probed) encrypts."""
        seal = self.seal_node
        return seal is None or (seal.running and seal.sealed is False and self.seal_ready is not False)

    @property
    def healthy(self) -> bool:
        return (all(n.healthy for n in self.nodes) and self.leader is not None and self.seal_node_serving
                and self.autopilot_healthy is True and self.can_write is not False
                and self.entry_running is not False and self.entry_routing is not False)


def observe_node(node: NodeLayout, client: EngineClient, *, adopt: bool = False) -> NodeView:
    """One node's process and health. ``adopt`` writes a lost pid file back (``up``); else nothing is written."""
    try:
        pid = processes.node_process(node).pid(adopt=adopt)
    except RuntimeFailure as err:  # a host out of reach: its node is not seen running
        return NodeView(node.name, node.zone, node.api_addr, None, False, error=str(err))
    running = pid is not None
    view = NodeView(node.name, node.zone, node.api_addr, pid if running else None, running)
    if not running:
        return view
    try:
        h = client.health(node.api_addr, timeout=1.0)
    except OSError as err:
        return replace(view, error=f"not answering ({err})")
    return replace(view, reachable=True, initialized=bool(h.get("initialized")), sealed=bool(h.get("sealed")),
                   standby=bool(h.get("standby")), version=h.get("version") or None)


def _raft_facts(client: EngineClient) -> tuple[dict[str, bool], dict[str, Any] | None]:
    """Voter flags from the Raft configuration and the autopilot state, both read on the active node."""
    quick = RetryPolicy(deadline=2.0)
    voters: dict[str, bool] = {}
    cfg = client.read("sys/storage/raft/configuration", retry=quick)
    for server in ((cfg or {}).get("data") or {}).get("config", {}).get("servers", []) or []:
        voters[server["node_id"]] = bool(server.get("voter"))
    ap = client.read("sys/storage/raft/autopilot/state", retry=quick)
    return voters, (ap or {}).get("data") if ap else None


def gather_view(nodes: tuple[NodeLayout, ...], client: EngineClient, *, seal_node: NodeLayout | None = None,
                entry_running: bool | None = None, probe_write: bool = False,
                entry_addr: str | None = None, login: Callable[[], str] | None = None,
                seal_probe: Callable[[], bool] | None = None, adopt: bool = False,
                run: RunFacts | None = None) -> MeshView:
    """Observe every node in parallel, then (with a token) Raft voters, autopilot and a test write.
    ``login`` gets a token for a client without one, once a leader is seen (not when the mesh is down); its
    error is a note. ``seal_probe`` tells whether an unsealed seal node serves encrypt. ``adopt`` writes lost
    pid files back (only ``up`` does). ``run`` is carried into the view as it is."""
    with cf.ThreadPoolExecutor(max_workers=len(nodes) + 1) as pool:
        views = list(pool.map(lambda n: observe_node(n, client, adopt=adopt), nodes))
        seal = pool.submit(observe_node, seal_node, client, adopt=adopt).result() if seal_node else None
    seal_ready = seal_probe() if seal is not None and seal.sealed is False and seal_probe is not None else None
    entry_routing: bool | None = None
    # Only once a leader exists: before that HAProxy has no server, holds the connection until its connect
    # timeout, and the probe would stall every cycle of bring-up.
    if entry_running and entry_addr and any(v.leader for v in views):
        # the entry must already route to the active node, not merely run
        try:
            entry_routing = client.health(entry_addr, timeout=1.0).get("standby") is False
        except OSError:
            entry_routing = False
    token_ok = False
    ap_healthy: bool | None = None
    tolerance: int | None = None
    can_write: bool | None = None
    notes: list[str] = []
    if not client.token and login is not None and any(v.leader for v in views):
        try:
            client.token = login()
        except VaultmeshError as err:
            notes.append(f"login as the admin failed: {err}")
    if client.token and any(v.leader for v in views):
        try:
            voters, ap = _raft_facts(client)
            token_ok = True
            ap_servers = (ap or {}).get("servers") or {}
            ap_healthy = bool(ap.get("healthy")) if ap else None
            tolerance = ap.get("failure_tolerance") if ap else None
            views = [replace(v, voter=voters.get(v.name, False),
                             autopilot_healthy=(ap_servers.get(v.name) or {}).get("healthy"))
                     for v in views]
            if probe_write:
                # cubbyhole: a real write through the leader's Raft log that leaves nothing behind
                client.write("cubbyhole/vaultmesh-ready", {"ok": "1"}, retry=RetryPolicy(deadline=2.0))
                can_write = True
        except VaultmeshError as err:
            notes.append(str(err))
            if probe_write and token_ok:
                can_write = False
    return MeshView(tuple(views), seal, entry_running, token_ok, ap_healthy, tolerance, can_write, tuple(notes),
                    entry_routing, seal_ready, run or RunFacts())
