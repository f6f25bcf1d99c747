"""Decide the next steps of bring-up or healing from one MeshView. Pure: view in, decision out.

Each cycle of ``up``: observe (``gather_view``, with the run's own facts: what it started and restarted and the
last error of each node) -> ``decide`` (the steps and the reason) -> each step's executor does it and says in one
sentence what it did -> observe again, until ``Ready``, ``Fail`` or the deadline. Restarting a dead node,
starting a missing one and waiting for a voter are the same code, so ``up`` on a half-built, stopped or damaged
mesh completes or heals it and never starts over.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaultmesh.lifecycle.view import MeshView


@dataclass(frozen=True)
class _OnMesh:
    """A step about the mesh as a whole: it carries nothing (equal to every step of its own kind)."""


@dataclass(frozen=True)
class _OnNode:
    """A step about one node of the mesh, by name."""

    name: str


class StartSealNode(_OnMesh):
    """Start the transit seal node (before any mesh node: they need it to unseal)."""


class StartNode(_OnNode):
    """Start a mesh node's process (every start of one cycle runs in parallel)."""


class StartEntry(_OnMesh):
    """Start the entry (HAProxy) in front of the nodes."""


class InitShamir(_OnMesh):
    """Initialise with Shamir key shares through the API (self-initialisation needs auto-unseal)."""


class Unseal(_OnNode):
    """Send a sealed node the Shamir key shares."""


class Login(_OnMesh):
    """Get an admin token (the cached one, or a userpass login)."""


class MarkInitialized(_OnMesh):
    """Record that the mesh is initialised and drop the self-init stanza from node 1's config."""


class Restart(_OnNode):
    """Restart a node that joined Raft but is still sealed. OpenBao retries unsealing with stored keys on a
    fixed 5 s timer (runUnseal in the server command); a restarted, joined node unseals in ~0.25 s. Decided
    at most once per node per run (``RunFacts.restarted``)."""


@dataclass(frozen=True)
class _WithReason:
    """A step that ends the cycle's work, with its reason and the node it is about (None: the whole mesh)."""

    reason: str
    node: str | None = None
    """The node (``seal``, ``entry``, a node's name) whose state or log tells why."""


class Wait(_WithReason):
    """Observe again: something is under way (a node joining, an election) and needs nothing from us."""


class Ready(_OnMesh):
    """The mesh is healthy: ``up`` is done."""


class Fail(_WithReason):
    """Give up: something this run cannot mend by trying again (a process it started has died)."""


Step = (StartSealNode | StartNode | StartEntry | InitShamir | Unseal | Restart | Login | MarkInitialized | Wait
        | Ready | Fail)


@dataclass(frozen=True)
class Decision:
    """The steps of one cycle and the reason for them, naming the node it is about (None: the whole mesh)."""

    steps: tuple[Step, ...]
    reason: str
    node: str | None = None

    @property
    def why(self) -> str:
        """The reason as one phrase, led by the node: ``node-2: joining Raft: not a voter yet``."""
        return f"{self.node}: {self.reason}" if self.node else self.reason


EXITED = "exited right after it was started"


def _waiting(steps: list[Step], wait: Wait) -> Decision:
    return Decision((*steps, wait), wait.reason, wait.node)


def _starting(steps: list[Step]) -> Decision:
    names = [s.name for s in steps if isinstance(s, StartNode)]
    if any(isinstance(s, StartEntry) for s in steps):
        names.append("the entry")
    return Decision(tuple(steps), "starting " + ", ".join(names), names[0] if len(names) == 1 else None)


def decide(view: MeshView, *, shamir: bool, recorded_initialized: bool, entry_wanted: bool) -> Decision:
    """The steps that move the mesh toward healthy and why. Process starts come first and together (they run
    in parallel); after them, the first thing still missing is waited for. A process this run started that no
    longer runs is a failure, not something to start again."""
    run = view.run
    seal = view.seal_node
    if seal is not None and not seal.running:
        if "seal" in run.started:
            return Decision((Fail(EXITED, "seal"),), EXITED, "seal")
        return Decision((StartSealNode(), Wait("seal node starting", "seal")), "seal node starting", "seal")
    died = [n for n in view.nodes if not n.running and n.name in run.started]
    if died:
        return Decision((Fail(EXITED, died[0].name),), EXITED, died[0].name)
    if seal is not None and (seal.sealed is not False or view.seal_ready is False):
        return _waiting([], Wait("seal node unsealing and initialising its transit key", "seal"))
    steps: list[Step] = []
    missing = [n for n in view.nodes if not n.running]
    if not view.initialized and view.leader is None and not shamir and not recorded_initialized:
        # First bring-up: node 1 initialises alone; the others start once it leads, so their first
        # retry_join succeeds instead of failing and sleeping OpenBao's fixed 2 s retry interval.
        first = view.nodes[0]
        if not first.running:
            missing = [first]
        elif missing:
            return _waiting([], Wait("initialising the mesh (self-initialisation) before the others join",
                                     first.name))
    steps += [StartNode(n.name) for n in missing]
    if entry_wanted and view.entry_running is False:
        if "entry" in run.started:
            reason = "the entry (haproxy) exited right after start"
            return Decision((Fail(reason, "entry"),), reason, "entry")
        steps.append(StartEntry())
    if steps:
        return _starting(steps)
    unreachable = [n for n in view.nodes if not n.reachable]
    if unreachable:
        return _waiting([], Wait("starting: its API does not answer yet", unreachable[0].name))
    if not view.initialized:
        if shamir:
            return Decision((InitShamir(),), "initialising with Shamir key shares")
        return _waiting([], Wait("node-1 initialising the mesh (self-initialisation)", view.nodes[0].name))
    if view.initialized and not recorded_initialized:
        steps.append(MarkInitialized())
    sealed = [n for n in view.nodes if n.sealed is not False]
    if shamir and sealed:
        # A joining node takes keys only once its retry_join has fetched the challenge; until then its health
        # says it is not initialised.
        ready = [n for n in sealed if n.initialized]
        steps += [Unseal(n.name) for n in ready]
        if ready:
            node = ready[0].name
            err = run.error(node)
            reason = "unsealing with the Shamir keys" + (f" (the last attempt: {err})" if err else "")
            return Decision(tuple(steps), reason, node if len(ready) == 1 or err else None)
        return _waiting(steps, Wait("joining Raft: waiting for the challenge before it can take unseal keys",
                                    sealed[0].name))
    if view.leader is None:
        return _waiting(steps, Wait("no leader elected yet"))
    if not view.token_ok:
        err = run.error("login")
        reason = "logging in as the admin" + (f" (the last attempt: {err})" if err else "")
        return Decision((*steps, Login()), reason)
    if sealed:
        steps += [Restart(n.name) for n in sealed if n.initialized and n.name not in run.restarted]
        return _waiting(steps, Wait("sealed: auto-unseal has not succeeded yet", sealed[0].name))
    non_voters = [n for n in view.nodes if not n.voter]
    if non_voters:
        return _waiting(steps, Wait("joining Raft: not a voter yet", non_voters[0].name))
    unhealthy = [n for n in view.nodes if n.autopilot_healthy is False]
    if unhealthy:
        return _waiting(steps, Wait("autopilot does not yet report it healthy", unhealthy[0].name))
    if view.autopilot_healthy is not True:
        return _waiting(steps, Wait("autopilot does not yet report the mesh healthy"))
    if view.can_write is not True:
        return _waiting(steps, Wait("the leader does not accept writes yet", view.leader.name))
    if entry_wanted and view.entry_routing is False:
        return _waiting(steps, Wait("the entry does not route to the leader yet"))
    return Decision((*steps, Ready()), "the mesh is healthy")


