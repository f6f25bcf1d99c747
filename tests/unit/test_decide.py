"""decide: one frozen MeshView in, the next steps out. State in, state out; no processes, no clock."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from vaultmesh.lifecycle.decide import (
    Decision,
    Fail,
    InitShamir,
    Login,
    MarkInitialized,
    Ready,
    Restart,
    StartEntry,
    StartNode,
    StartSealNode,
    Step,
    Unseal,
    Wait,
    decide,
)
from vaultmesh.lifecycle.view import MeshView, NodeView, RunFacts

NAMES = ("node-1", "node-2", "node-3")


def up(name: str, **kw: Any) -> NodeView:
    """A healthy node: running, answering, unsealed, a voter autopilot is happy with. node-1 leads."""
    values: dict[str, Any] = dict(pid=100, running=True, reachable=True, initialized=True, sealed=False,
                                  standby=name != "node-1", voter=True, autopilot_healthy=True)
    values.update(kw)
    return NodeView(name, "zone-" + name[-1], f"https://127.0.0.1:82{name[-1]}0", **values)


def down(name: str) -> NodeView:
    """A node whose process is not running (as observe_node sees it: nothing else known)."""
    return NodeView(name, "zone-" + name[-1], f"https://127.0.0.1:82{name[-1]}0", None, False)


def starting(name: str) -> NodeView:
    """Running, API not answering yet."""
    return dataclasses.replace(down(name), pid=100, running=True)


def uninitialised(name: str) -> NodeView:
    return up(name, initialized=False, sealed=True, standby=True, voter=None, autopilot_healthy=None)


def healthy(**kw: Any) -> MeshView:
    values: dict[str, Any] = dict(nodes=tuple(up(n) for n in NAMES), token_ok=True, autopilot_healthy=True,
                                  failure_tolerance=1, can_write=True)
    values.update(kw)
    return MeshView(**values)


def with_node(view: MeshView, node: NodeView) -> MeshView:
    return dataclasses.replace(view, nodes=tuple(node if n.name == node.name else n for n in view.nodes))


def run(view: MeshView, *, shamir: bool = False, recorded_initialized: bool = True,
        entry_wanted: bool = False) -> list[Step]:
    return list(decide(view, shamir=shamir, recorded_initialized=recorded_initialized, entry_wanted=entry_wanted).steps)


def decision(view: MeshView, *, shamir: bool = False, recorded_initialized: bool = True,
             entry_wanted: bool = False) -> Decision:
    return decide(view, shamir=shamir, recorded_initialized=recorded_initialized, entry_wanted=entry_wanted)


def ran(view: MeshView, *, started: tuple[str, ...] = (), restarted: tuple[str, ...] = (),
        errors: dict[str, str] | None = None) -> MeshView:
    """``view`` as a run that started, restarted and met ``errors`` sees it."""
    return dataclasses.replace(view, run=RunFacts(frozenset(started), frozenset(restarted), errors or {}))


def actions(steps: list[Step]) -> list[Step]:
    return [s for s in steps if not isinstance(s, Wait)]


# -- first bring-up ------------------------------------------------------------------------------------------

def test_a_fresh_mesh_starts_node_1_alone():
    view = MeshView(tuple(down(n) for n in NAMES))
    assert run(view, recorded_initialized=False) == [StartNode("node-1")]


def test_a_fresh_mesh_starts_the_entry_along_with_node_1():
    view = MeshView(tuple(down(n) for n in NAMES), entry_running=False)
    assert run(view, recorded_initialized=False, entry_wanted=True) == [StartNode("node-1"), StartEntry()]


def test_while_node_1_initialises_the_others_wait():
    view = MeshView((uninitialised("node-1"), down("node-2"), down("node-3")))
    steps = run(view, recorded_initialized=False)
    assert actions(steps) == []
    assert steps[0].node == "node-1"  # type: ignore[union-attr]


def test_once_node_1_leads_and_is_initialised_the_others_are_started():
    view = healthy(nodes=(up("node-1"), down("node-2"), down("node-3")), token_ok=False)
    assert run(view, recorded_initialized=False) == [StartNode("node-2"), StartNode("node-3")]


def test_an_initialised_mesh_not_yet_recorded_is_marked_initialised():
    assert MarkInitialized() in run(healthy(), recorded_initialized=False)


def test_a_recorded_mesh_is_not_marked_again():
    assert MarkInitialized() not in run(healthy(), recorded_initialized=True)


# -- healing -------------------------------------------------------------------------------------------------

def test_a_dead_node_on_an_initialised_mesh_is_started_and_nothing_else():
    view = with_node(healthy(), down("node-3"))
    assert run(view) == [StartNode("node-3")]


def test_a_fully_stopped_recorded_mesh_starts_every_node_at_once():
    view = MeshView(tuple(down(n) for n in NAMES))
    assert run(view, recorded_initialized=True) == [StartNode(n) for n in NAMES]


def test_a_dead_leader_is_started_again():
    view = healthy(nodes=(down("node-1"), up("node-2", standby=False), up("node-3")))
    assert run(view) == [StartNode("node-1")]


def test_a_node_whose_api_does_not_answer_yet_is_waited_for_by_name():
    steps = run(with_node(healthy(), starting("node-2")))
    assert steps == [Wait("starting: its API does not answer yet", "node-2")]


def test_a_sealed_joined_node_with_auto_unseal_is_restarted():
    view = with_node(healthy(), up("node-2", sealed=True))
    steps = run(view)
    assert actions(steps) == [Restart("node-2")]
    assert isinstance(steps[-1], Wait)
    assert steps[-1].node == "node-2"


def test_a_sealed_node_that_never_joined_is_not_restarted():
    view = with_node(healthy(), uninitialised("node-3"))
    assert actions(run(view)) == []


# -- shamir --------------------------------------------------------------------------------------------------

def test_a_fresh_shamir_mesh_starts_every_node_at_once():
    view = MeshView(tuple(down(n) for n in NAMES))
    assert run(view, shamir=True, recorded_initialized=False) == [StartNode(n) for n in NAMES]


def test_an_uninitialised_shamir_mesh_is_initialised_with_key_shares():
    view = MeshView(tuple(uninitialised(n) for n in NAMES))
    assert run(view, shamir=True, recorded_initialized=False) == [InitShamir()]


def test_sealed_shamir_nodes_are_each_unsealed():
    view = healthy(nodes=tuple(up(n, sealed=True, standby=True) for n in NAMES), token_ok=False)
    assert run(view, shamir=True) == [Unseal(n) for n in NAMES]


def test_only_the_sealed_shamir_nodes_are_unsealed():
    view = with_node(healthy(), up("node-3", sealed=True, standby=True))
    assert run(view, shamir=True) == [Unseal("node-3")]


# -- token, voters, autopilot, writes ------------------------------------------------------------------------

def test_without_a_token_the_next_step_is_to_log_in():
    assert run(healthy(token_ok=False)) == [Login()]


def test_without_a_leader_the_mesh_waits_for_an_election():
    view = healthy(nodes=tuple(up(n, standby=True) for n in NAMES))
    steps = run(view)
    assert actions(steps) == []
    assert "no leader" in steps[0].reason  # type: ignore[union-attr]


def test_two_nodes_claiming_to_lead_is_no_leader():
    view = with_node(healthy(), up("node-2", standby=False))
    assert Ready() not in run(view)


def test_a_non_voter_is_waited_for_by_name():
    steps = run(with_node(healthy(), up("node-3", voter=False)))
    assert steps == [Wait("joining Raft: not a voter yet", "node-3")]


def test_a_node_autopilot_calls_unhealthy_is_waited_for_by_name():
    steps = run(with_node(healthy(), up("node-2", autopilot_healthy=False)))
    assert len(steps) == 1 and isinstance(steps[0], Wait) and steps[0].node == "node-2"


def test_a_mesh_autopilot_has_not_called_healthy_is_waited_for():
    assert actions(run(healthy(autopilot_healthy=None))) == []
    assert Ready() not in run(healthy(autopilot_healthy=None))


def test_a_leader_that_refuses_writes_is_waited_for_by_name():
    steps = run(healthy(can_write=False))
    assert steps == [Wait("the leader does not accept writes yet", "node-1")]


def test_a_healthy_mesh_is_ready():
    assert run(healthy()) == [Ready()]


# -- entry ---------------------------------------------------------------------------------------------------

def test_a_wanted_entry_that_is_not_running_is_started():
    assert run(healthy(entry_running=False), entry_wanted=True) == [StartEntry()]


def test_an_entry_not_routing_to_the_leader_yet_is_waited_for():
    steps = run(healthy(entry_running=True, entry_routing=False), entry_wanted=True)
    assert actions(steps) == []
    assert "entry" in steps[0].reason  # type: ignore[union-attr]


def test_a_healthy_mesh_with_a_routing_entry_is_ready():
    assert run(healthy(entry_running=True, entry_routing=True), entry_wanted=True) == [Ready()]


# -- transit seal node ---------------------------------------------------------------------------------------

def test_a_stopped_seal_node_is_started_before_anything_else():
    view = MeshView(tuple(down(n) for n in NAMES), seal_node=down("seal"), entry_running=False)
    steps = run(view, recorded_initialized=False, entry_wanted=True)
    assert actions(steps) == [StartSealNode()]
    assert steps[0] == StartSealNode()


def test_a_stopped_seal_node_comes_first_even_when_mesh_nodes_are_down_too():
    view = with_node(healthy(seal_node=down("seal")), down("node-2"))
    assert actions(run(view)) == [StartSealNode()]


def test_a_sealed_seal_node_is_waited_for_and_nothing_else_happens():
    view = MeshView(tuple(down(n) for n in NAMES), seal_node=uninitialised("seal"))
    steps = run(view, recorded_initialized=False)
    assert steps == [Wait("seal node unsealing and initialising its transit key", "seal")]


def test_an_unsealed_seal_node_lets_the_mesh_proceed():
    view = MeshView(tuple(down(n) for n in NAMES), seal_node=up("seal"))
    assert run(view, recorded_initialized=False) == [StartNode("node-1")]


# -- the run's own facts: what it started, restarted, and the errors it met -------------------------------------

def test_a_node_started_in_this_run_that_died_is_a_failure_not_a_second_start():
    view = ran(with_node(healthy(), down("node-2")), started=("node-2",))
    assert run(view) == [Fail("exited right after it was started", "node-2")]


def test_a_node_that_died_without_this_run_starting_it_is_started():
    view = ran(with_node(healthy(), down("node-2")), started=("node-1",))
    assert run(view) == [StartNode("node-2")]


def test_a_seal_node_started_in_this_run_that_died_is_a_failure():
    view = ran(MeshView(tuple(down(n) for n in NAMES), seal_node=down("seal")), started=("seal",))
    assert run(view, recorded_initialized=False) == [Fail("exited right after it was started", "seal")]


def test_an_entry_started_in_this_run_that_died_is_a_failure():
    view = ran(healthy(entry_running=False), started=("entry",))
    steps = run(view, entry_wanted=True)
    assert len(steps) == 1 and isinstance(steps[0], Fail) and steps[0].node == "entry"


def test_a_sealed_node_is_restarted_at_most_once_per_run():
    view = ran(with_node(healthy(), up("node-2", sealed=True)), restarted=("node-2",))
    steps = run(view)
    assert actions(steps) == []
    assert steps == [Wait("sealed: auto-unseal has not succeeded yet", "node-2")]


def test_only_the_nodes_not_yet_restarted_are_restarted():
    view = healthy(nodes=(up("node-1"), up("node-2", sealed=True), up("node-3", sealed=True)))
    assert actions(run(ran(view, restarted=("node-2",)))) == [Restart("node-3")]


def test_an_unsealed_seal_node_that_cannot_encrypt_yet_is_waited_for():
    view = MeshView(tuple(down(n) for n in NAMES), seal_node=up("seal"), seal_ready=False)
    assert run(view, recorded_initialized=False) == [
        Wait("seal node unsealing and initialising its transit key", "seal")]


def test_a_seal_node_that_encrypts_lets_the_mesh_proceed():
    view = MeshView(tuple(down(n) for n in NAMES), seal_node=up("seal"), seal_ready=True)
    assert run(view, recorded_initialized=False) == [StartNode("node-1")]


def test_a_dead_seal_node_makes_the_view_unhealthy():
    assert not healthy(seal_node=down("seal")).healthy
    assert not healthy(seal_node=up("seal"), seal_ready=False).healthy
    assert healthy(seal_node=up("seal")).healthy


def test_a_shamir_node_still_joining_is_waited_for_not_unsealed():
    view = with_node(healthy(), uninitialised("node-3"))
    steps = run(view, shamir=True)
    assert actions(steps) == []
    assert steps[-1].node == "node-3"  # type: ignore[union-attr]
    assert "challenge" in steps[-1].reason  # type: ignore[union-attr]


def test_a_shamir_node_that_refused_its_keys_is_tried_again_and_the_refusal_is_the_reason():
    view = ran(with_node(healthy(), up("node-3", sealed=True, standby=True)),
               errors={"node-3": "400 the keys are being verified"})
    d = decision(view, shamir=True)
    assert d.steps == (Unseal("node-3"),)
    assert d.node == "node-3" and "400 the keys are being verified" in d.reason


def test_a_failed_login_is_tried_again_and_its_error_is_the_reason():
    d = decision(ran(healthy(token_ok=False), errors={"login": "403 permission denied"}))
    assert d.steps == (Login(),)
    assert "403 permission denied" in d.reason


def test_a_login_not_yet_tried_has_a_reason_too():
    d = decision(healthy(token_ok=False))
    assert d.steps == (Login(),) and d.reason


# -- the reason: every decision says why, naming the node ----------------------------------------------------

def test_a_wait_is_its_own_reason():
    d = decision(with_node(healthy(), up("node-3", voter=False)))
    assert (d.reason, d.node) == ("joining Raft: not a voter yet", "node-3")
    assert d.why == "node-3: joining Raft: not a voter yet"


def test_starting_one_node_names_it():
    d = decision(with_node(healthy(), down("node-3")))
    assert d.node == "node-3" and "node-3" in d.reason


def test_a_ready_mesh_says_it_is_healthy():
    d = decision(healthy())
    assert d.steps == (Ready(),) and "healthy" in d.reason


def test_every_decision_has_a_reason():
    for label, view, entry_wanted in views():
        assert decision(view, entry_wanted=entry_wanted).reason, label


# -- invariant: never Ready unless the view is healthy -------------------------------------------------------

NODE_VALUES: dict[str, tuple[Any, ...]] = {
    "running": (False,),
    "reachable": (False,),
    "initialized": (False,),
    "sealed": (True,),
    "standby": (True, False),
    "voter": (False, None),
    "autopilot_healthy": (False, None),
}
MESH_VALUES: dict[str, tuple[Any, ...]] = {
    "token_ok": (False,),
    "autopilot_healthy": (False, None),
    "can_write": (False, None),
    "entry_running": (None, False, True),
    "entry_routing": (None, False, True),
}


def consistent(node: NodeView) -> NodeView:
    """What observe_node can report: a stopped node is unreachable, and an unreachable one says nothing."""
    if not node.running:
        node = dataclasses.replace(node, pid=None, reachable=False)
    if not node.reachable:
        node = dataclasses.replace(node, initialized=None, sealed=None, standby=None)
    return node


def perturbations() -> list[tuple[str, Any, Any]]:
    """(label, target, change): one field of one node, or one field of the mesh, moved off healthy."""
    out: list[tuple[str, Any, Any]] = []
    for name, (field, values) in itertools.product(NAMES, NODE_VALUES.items()):
        out += [(f"{name}.{field}={v}", name, {field: v}) for v in values]
    for field, values in MESH_VALUES.items():
        out += [(f"mesh.{field}={v}", None, {field: v}) for v in values]
    return out


def apply(view: MeshView, target: str | None, change: dict[str, Any]) -> MeshView:
    if target is None:
        return dataclasses.replace(view, **change)
    node = next(n for n in view.nodes if n.name == target)
    return with_node(view, consistent(dataclasses.replace(node, **change)))


def views() -> Iterator[tuple[str, MeshView, bool]]:
    """The healthy view moved by every single and every pair of perturbations, with and without an entry."""
    base = healthy()
    changes = perturbations()
    combos = [()] + [(c,) for c in changes] + list(itertools.combinations(changes, 2))
    for combo in combos:
        view = base
        for _, target, change in combo:
            view = apply(view, target, change)
        entry_wanted = view.entry_running is not None
        if not entry_wanted and view.entry_routing is not None:
            continue  # the entry is probed only when it is wanted and running
        yield " & ".join(c[0] for c in combo) or "healthy", view, entry_wanted


def test_the_invariant_table_reaches_both_ready_and_not_ready():
    outcomes = {Ready() in run(view, entry_wanted=wanted) for _, view, wanted in views()}
    assert outcomes == {True, False}


@pytest.mark.parametrize("shamir", [False, True], ids=["auto-unseal", "shamir"])
@pytest.mark.parametrize("recorded", [False, True], ids=["unrecorded", "recorded"])
def test_decide_never_says_ready_unless_the_view_is_healthy(shamir: bool, recorded: bool):
    checked = 0
    for label, view, entry_wanted in views():
        steps = run(view, shamir=shamir, recorded_initialized=recorded, entry_wanted=entry_wanted)
        if Ready() in steps:
            assert view.healthy, f"Ready on an unhealthy view: {label}"
        checked += 1
    assert checked > 500


@pytest.mark.parametrize("shamir", [False, True], ids=["auto-unseal", "shamir"])
def test_decide_always_returns_at_least_one_step(shamir: bool):
    for label, view, entry_wanted in views():
        assert run(view, shamir=shamir, entry_wanted=entry_wanted), label


def test_ready_is_always_the_last_step():
    for label, view, entry_wanted in views():
        steps = run(view, recorded_initialized=False, entry_wanted=entry_wanted)
        assert Ready() not in steps[:-1], label
