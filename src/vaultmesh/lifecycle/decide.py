"""Decide the next steps of bring-up or healing from one MeshView. Pure: view in, steps out.

Each cycle of ``up``: observe (``gather_view``) -> ``decide`` -> perform the steps -> observe again, until
``Ready`` or the deadline. Restarting a dead node, starting a missing one and waiting for a voter are the
same code, so ``up`` on a half-built, stopped or damaged mesh completes or heals it and never starts over.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaultmesh.lifecycle.view import MeshView


@dataclass(frozen=True)
class StartSealNode:
    """Start the transit seal node (before any mesh node: they need it to unseal)."""


@dataclass(frozen=True)
class StartNode:
    name: str


@dataclass(frozen=True)
class StartEntry:
    pass


@dataclass(frozen=True)
class InitShamir:
    """Initialise with Shamir key shares through the API (self-initialisation needs auto-unseal)."""


@dataclass(frozen=True)
class Unseal:
    name: str


@dataclass(frozen=True)
class Login:
    """Get an admin token (the cached one, or a userpass login)."""


@dataclass(frozen=True)
class MarkInitialized:
    """Record that the mesh is initialised and drop the self-init stanza from node 1's config."""


@dataclass(frozen=True)
class Restart:
    """Restart a node that joined Raft but is still sealed. OpenBao retries unsealing with stored keys on a
    fixed 5 s timer (runUnseal in the server command); a restarted, joined node unseals in ~0.25 s. The
    executor does this at most once per node per run."""

    name: str


@dataclass(frozen=True)
class Wait:
    reason: str
    node: str | None = None


@dataclass(frozen=True)
class Ready:
    pass


Step = (StartSealNode | StartNode | StartEntry | InitShamir | Unseal | Restart | Login | MarkInitialized | Wait
        | Ready)


def decide(view: MeshView, *, shamir: bool, recorded_initialized: bool, entry_wanted: bool) -> list[Step]:
    """The steps that move the mesh toward healthy. Process starts come first and together (they run in
    parallel); after them, the first thing still missing is waited for."""
    steps: list[Step] = []
    if view.seal_node is not None and not view.seal_node.running:
        return [StartSealNode(), Wait("seal node starting", "seal")]
    if view.seal_node is not None and view.seal_node.sealed is not False:
        return [Wait("seal node unsealing and initialising its transit key", "seal")]
    missing = [n for n in view.nodes if not n.running]
    if not view.initialized and view.leader is None and not shamir and not recorded_initialized:
        # First bring-up: node 1 initialises alone; the others start once it leads, so their first
        # retry_join succeeds instead of failing and sleeping OpenBao's fixed 2 s retry interval.
        first = view.nodes[0]
        if not first.running:
            missing = [first]
        elif missing:
            return [Wait("initialising the mesh (self-initialisation) before the others join", first.name)]
    steps += [StartNode(n.name) for n in missing]
    if entry_wanted and view.entry_running is False:
        steps.append(StartEntry())
    if steps:
        return steps
    unreachable = [n for n in view.nodes if not n.reachable]
    if unreachable:
        return [Wait("starting: its API does not answer yet", unreachable[0].name)]
    if not view.initialized:
        if shamir:
            return [InitShamir()]
        return [Wait("node-1 initialising the mesh (self-initialisation)", view.nodes[0].name)]
    if view.initialized and not recorded_initialized:
        steps.append(MarkInitialized())
    sealed = [n for n in view.nodes if n.sealed is not False]
    if shamir and sealed:
        steps += [Unseal(n.name) for n in sealed]
        return steps
    if view.leader is None:
        return [*steps, Wait("no leader elected yet")]
    if not view.token_ok:
        return [*steps, Login()]
    if sealed:
        steps += [Restart(n.name) for n in sealed if n.initialized]
        return [*steps, Wait("sealed: auto-unseal has not succeeded yet", sealed[0].name)]
    non_voters = [n for n in view.nodes if not n.voter]
    if non_voters:
        return [*steps, Wait("joining Raft: not a voter yet", non_voters[0].name)]
    unhealthy = [n for n in view.nodes if n.autopilot_healthy is False]
    if unhealthy:
        return [*steps, Wait("autopilot does not yet report it healthy", unhealthy[0].name)]
    if view.autopilot_healthy is not True:
        return [*steps, Wait("autopilot does not yet report the mesh healthy")]
    if view.can_write is not True:
        return [*steps, Wait("the leader does not accept writes yet", view.leader.name)]
    if entry_wanted and view.entry_routing is False:
        return [*steps, Wait("the entry does not route to the leader yet")]
    return [*steps, Ready()]
