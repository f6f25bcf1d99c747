"""The pure core of a change to a running mesh: a ``ChangePlan`` of steps, each with the invariant that must
hold after it (Patroni's ``quorum.py`` shape). Facts in, plan out: no processes, sockets or clocks.

- ``plan_upgrade(view, target)``: the transit seal node first (the nodes stay unsealed while it restarts; every
  node replaced after it unseals through the new one), then the standbys one at a time, then the leader last after a
  clean handover (``sys/step-down``) once every other node runs the target, so a newer node never hands leadership
  to an older one.
- ``plan_scale(view, n)``: add nodes one at a time (start: it joins Raft as a non-voter; promote: autopilot makes it
  a voter once it caught up and is stable), remove them one at a time (step the leader away from a node that goes,
  remove the peer, stop it, delete its data); names and zones round-robin, so zones stay balanced; the voters never
  drop below a quorum of the old or the new configuration.
- ``refusal(view, ...)``: one line saying why a change must not start (None: it may).
- ``resume(plan, view)``: the step an interrupted run picks up at, read off the mesh as it is now (the first step
  whose invariant does not hold), never off a local progress file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Action = Literal["replace", "settle", "step-down", "start", "promote", "remove-peer", "stop", "delete-data"]
"""What a step does to its node:

- ``replace``: stop the node, start it again on the target binary;
- ``settle``: wait for a node already on the target to be a caught-up, stable, healthy voter (an interrupted run
  restarted it and stopped before it settled);
- ``step-down``: the leader gives up leadership (``PUT sys/step-down``);
- ``start``: start a new node (it joins Raft through retry_join, as a non-voter);
- ``promote``: wait for autopilot to make the new node a voter (after it caught up and was stable);
- ``remove-peer``: ``sys/storage/raft/remove-peer`` for a node that goes;
- ``stop``, ``delete-data``: end its process, remove its folder."""

Check = Literal["on-target", "seal-on-target", "led-by-target", "joined", "voter", "led-elsewhere", "not-a-peer",
                "stopped", "no-data"]
"""The invariant after a step (``holds`` says what each one asks)."""


@dataclass(frozen=True)
class NodeFacts:
    """What the mesh says about one node (or what its state dir says: ``running``, ``has_data``)."""

    name: str
    zone: str
    running: bool = True
    unsealed: bool = True
    version: str | None = None
    member: bool = True
    """In the leader's Raft configuration."""
    voter: bool = True
    leader: bool = False
    applied_index: int | None = None
    healthy: bool = True
    """Autopilot reports it healthy."""
    stable_for: float = 0.0
    """Seconds autopilot has reported it healthy without a break (its ``stable_since``)."""
    has_data: bool = True
    """Its folder (config, data) exists."""


@dataclass(frozen=True)
class ChangeView:
    """The mesh frozen at one moment, as a change sees it."""

    nodes: tuple[NodeFacts, ...]
    commit_index: int | None = None
    """The leader's Raft commit index, read before the nodes' applied indexes."""
    autopilot_healthy: bool | None = None
    failure_tolerance: int | None = None
    stabilization: float = 0.5
    """Seconds a replaced or added node must stay healthy (autopilot's ``server_stabilization_time``)."""
    shamir: bool = False
    seal: NodeFacts | None = None
    """The transit seal node (None: the mesh has none); its ``name`` is ``seal``."""
    seal_ready: bool | None = None
    """The seal node encrypts with the mesh's transit key and seal token (None: not probed)."""

    def node(self, name: str) -> NodeFacts | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def leader(self) -> NodeFacts | None:
        leaders = [n for n in self.nodes if n.leader and n.running]
        return leaders[0] if len(leaders) == 1 else None

    @property
    def voters(self) -> int:
        return sum(1 for n in self.nodes if n.member and n.voter)

    @property
    def members(self) -> tuple[NodeFacts, ...]:
        return tuple(n for n in self.nodes if n.member)


@dataclass(frozen=True)
class Step:
    node: str
    action: Action
    check: Check
    """The invariant that must hold once the step is done."""

    def __str__(self) -> str:
        return f"{self.action} {self.node}"


@dataclass(frozen=True)
class ChangePlan:
    """The steps of one change, in order, and what they keep true."""

    kind: Literal["upgrade", "scale"]
    target: str
    """The target version (upgrade) or node count (scale)."""
    steps: tuple[Step, ...]
    min_voters: int
    """The voters never drop below this. One voter is added or removed at a time, so every configuration keeps
    a quorum of the one before it; for 3 <-> 5 this is a quorum of both the old and the new configuration."""
    zones: tuple[str, ...] = ()
    """Scale: the zone of each node of the target shape, in order (node-1 first)."""

    @property
    def done(self) -> bool:
        return not self.steps

    def lines(self) -> list[str]:
        """One line per step: ``1. replace node-2 (then: on-target)``."""
        return [f"{i + 1}. {s} (then: {s.check})" for i, s in enumerate(self.steps)]


# -- versions ------------------------------------------------------------------------------------------------

def parse_version(text: str) -> tuple[int, ...]:
    """``v2.7.2``, ``2.7.2+ent``, ``2.8.0-beta1`` -> (2, 7, 2), ... (a suffix is ignored)."""
    core = text.strip().lstrip("v").split("+")[0].split("-")[0]
    parts = []
    for word in core.split("."):
        digits = "".join(c for c in word if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts)


def _on(node: NodeFacts, target: str) -> bool:
    return node.version is not None and parse_version(node.version) == parse_version(target)


# -- invariants ----------------------------------------------------------------------------------------------

def quorum(n: int) -> int:
    return n // 2 + 1


def _serving(n: NodeFacts, view: ChangeView) -> str | None:
    """What keeps a node from being a caught-up, stable, healthy voter (None: nothing)."""
    if not n.running:
        return "not running"
    if not n.unsealed:
        return "sealed"
    if not n.member:
        return "not in the Raft configuration yet"
    if not n.voter:
        return "not a voter yet"
    if view.commit_index is not None and (n.applied_index or 0) < view.commit_index:
        return f"catching up (applied index {n.applied_index} < leader's commit index {view.commit_index})"
    if not n.healthy:
        return "autopilot does not report it healthy yet"
    if n.stable_for < view.stabilization:
        return f"healthy for {n.stable_for:.1f} s of the {view.stabilization:g} s stabilisation time"
    return None


def holds(step: Step, view: ChangeView, target: str | None = None) -> str | None:
    """None when the invariant after ``step`` holds in ``view``, else what is still missing (one phrase)."""
    node = view.node(step.node)
    leader = view.leader
    match step.check:
        case "seal-on-target":
            sealed = [x.name for x in view.nodes if x.member and x.running and not x.unsealed]
            if sealed:
                return f"{', '.join(sealed)} sealed while the seal node restarted"
            seal = view.seal
            if seal is None or not seal.running:
                return "the seal node is not running"
            if not seal.unsealed:
                return "the seal node is sealed"
            if target is not None and not _on(seal, target):
                return f"the seal node runs {seal.version or 'an unknown version'}, not {target}"
            return None if view.seal_ready else "the seal node does not serve the transit key yet"
        case "on-target":
            if node is None:
                return "not found"
            if target is not None and not _on(node, target):
                return f"runs {node.version or 'an unknown version'}, not {target}"
            why = _serving(node, view)
            if why is None and view.autopilot_healthy is False:
                why = "autopilot does not report the mesh healthy yet"
            return why
        case "led-by-target":
            if leader is None:
                return "no leader yet"
            if target is not None and not _on(leader, target):
                return f"the leader {leader.name} runs {leader.version}, not {target}"
            return None
        case "joined":
            if node is None or not node.running:
                return "not running"
            if not node.unsealed:
                return "sealed"
            return None if node.member else "not in the Raft configuration yet"
        case "voter":
            return "not found" if node is None else _serving(node, view)
        case "led-elsewhere":
            if leader is None:
                return "no leader yet"
            return f"{leader.name} still leads" if leader.name == step.node else None
        case "not-a-peer":
            return "still a Raft peer" if node is not None and node.member else None
        case "stopped":
            return "still running" if node is not None and node.running else None
        case "no-data":
            return "its folder is still there" if node is not None and node.has_data else None
    raise AssertionError(step.check)


def resume(plan: ChangePlan, view: ChangeView) -> int:
    """The index of the step an interrupted run picks up at: the first whose invariant does not hold in the mesh
    as it is now (``len(plan.steps)``: every invariant holds, nothing is left)."""
    target = plan.target if plan.kind == "upgrade" else None
    for i, step in enumerate(plan.steps):
        if holds(step, view, target) is not None:
            return i
    return len(plan.steps)


# -- planners ------------------------------------------------------------------------------------------------

def plan_upgrade(view: ChangeView, target: str) -> ChangePlan:
    """The transit seal node first when it is not on ``target`` (or not serving); every node not on it: the
    standbys one at a time (by name), then, when the leader is not on it, a step-down (every other node now runs
    the target, so the next leader does too) and the old leader. Each node replaced after the seal node unseals
    through it: the check that the new seal node still unseals the mesh."""
    n = len(view.members) or len(view.nodes)
    leader = view.leader
    # a node an interrupted run left unsettled or stopped first: it serves nobody until it runs again
    # (not the index or the stable time: under load a healthy node lags the commit index by a few entries at
    # any instant, and a new leader's stable time starts again; the step before waited for both)
    seal = view.seal
    steps = [Step(seal.name, "replace", "seal-on-target")] if seal is not None and not (
        _on(seal, target) and seal.running and seal.unsealed and view.seal_ready) else []
    steps += [Step(x.name, "settle", "on-target") for x in view.nodes
              if _on(x, target) and not (x.running and x.unsealed and x.member and x.voter and x.healthy)]
    stale = sorted((x for x in view.nodes if not _on(x, target)), key=lambda x: x.running)
    steps += [Step(x.name, "replace", "on-target") for x in stale if leader is None or x.name != leader.name]
    if leader is not None and not _on(leader, target):
        steps += [Step(leader.name, "step-down", "led-by-target"), Step(leader.name, "replace", "on-target")]
    return ChangePlan("upgrade", target, tuple(steps), quorum(n))


def shape(n: int, zones: Sequence[str]) -> list[tuple[str, str]]:
    """Names and zones of an ``n``-node mesh, round-robin (as ``spec.models.zone_layout`` lays them out)."""
    return [(f"node-{i + 1}", zones[i % len(zones)]) for i in range(n)]


def plan_scale(view: ChangeView, n: int, zones: Sequence[str] = ("zone-a", "zone-b", "zone-c")) -> ChangePlan:
    """From the nodes the mesh has to ``n``: each missing node of the target shape (lowest first): start (it
    joins as a non-voter), promote; each node beyond it (highest first): step the leader away when it is that
    node, remove the peer, stop it, delete its data. Adding and removing one at a time with round-robin zones
    keeps the zones balanced after every step."""
    present = [x for x in view.nodes if x.member or x.running or x.has_data]
    want = shape(n, zones)
    names = {name for name, _ in want}
    steps: list[Step] = []
    for name, _ in want:
        node = view.node(name)
        if node is None or not (node.member and node.voter and node.running):
            steps += [Step(name, "start", "joined"), Step(name, "promote", "voter")]
    leader = view.leader
    going = sorted((x for x in present if x.name not in names), key=lambda x: _number(x.name), reverse=True)
    for x in going:
        if leader is not None and leader.name == x.name:
            steps.append(Step(x.name, "step-down", "led-elsewhere"))
        steps += [Step(x.name, "remove-peer", "not-a-peer"), Step(x.name, "stop", "stopped"),
                  Step(x.name, "delete-data", "no-data")]
    old = len(view.members) or len(present)
    return ChangePlan("scale", str(n), tuple(steps), min(old, n),
                      tuple(zone for _, zone in want))


def _number(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0


# -- refusals ------------------------------------------------------------------------------------------------

def refusal(view: ChangeView, *, target: str | None = None, allow_downgrade: bool = False,
            nodes: int | None = None, have_snapshot: bool = True) -> str | None:
    """Why this change must not start, in one line (None: it may). ``target`` is an upgrade's version, ``nodes``
    a scale's node count. A mesh already part-way through the same change (some nodes on ``target``) is resumed,
    not refused."""
    down = [x.name for x in view.nodes if x.member and not (x.running and x.unsealed)]
    if target is not None:
        try:
            want = parse_version(target)
        except ValueError:
            return f"the engine's version {target!r} is not a version number"
        every = (*view.nodes, *((view.seal,) if view.seal is not None else ()))
        unknown = [x.name for x in every if x.running and x.version is None]
        if unknown:
            return f"cannot read the version of {', '.join(unknown)}; nothing was changed"
        newer = sorted({x.version for x in every if x.version and parse_version(x.version) > want})
        if newer and not allow_downgrade:
            return (f"refusing to downgrade from {', '.join(newer)} to {target}: a newer node must never hand "
                    "leadership to an older one (--allow-downgrade, with a snapshot to go back to)")
        if newer and not have_snapshot:
            return "a downgrade needs a verified snapshot to go back to, and none could be taken"
        versions = {x.version for x in view.nodes if x.version and parse_version(x.version) != want}
        if len(versions) > 1:
            return (f"the nodes run {len(versions)} versions besides the target ({', '.join(sorted(versions))}); "
                    "move them to one version first")
        if all(_on(x, target) for x in every) and not down:
            return None  # nothing to do: not a refusal
        unsettled = [x for x in view.nodes if _serving(x, view) is not None]
        if len(unsettled) == 1 and view.leader is not None and len(view.members) >= 3:
            return None  # an interrupted run left one node stopped or unsettled: it comes first
    if nodes is not None:
        if nodes < 1:
            return f"a mesh needs at least 1 node, not {nodes}"
        if nodes % 2 == 0:
            return f"{nodes} nodes tolerate no more failures than {nodes - 1}: choose an odd number"
        added = [x for x in view.nodes if x.name in down and not x.voter]
        if view.leader is not None and len(down) == 1 and added and (view.failure_tolerance or 0) >= 1:
            return None  # an interrupted run left the node it added (not a voter yet) stopped: it starts it
    if view.leader is None:
        return "the mesh has no leader; nothing was changed (run `vaultmesh up` to heal it first)"
    if down:
        return f"{', '.join(down)} is down or sealed; nothing was changed (run `vaultmesh up` to heal it first)"
    if view.autopilot_healthy is not True:
        return "autopilot does not report the mesh healthy; nothing was changed (see `vaultmesh status`)"
    if view.failure_tolerance is None or view.failure_tolerance < 1:
        return (f"the mesh tolerates {view.failure_tolerance if view.failure_tolerance is not None else 'no'} "
                "failure(s): taking one node out could lose quorum (a change needs a failure tolerance of 1)")
    return None
