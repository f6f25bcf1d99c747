"""The change planner: plans, refusals, invariants, and (Patroni's test_quorum shape) a run interrupted at every
intermediate state that resumes from what the mesh is and reaches the target, its invariants holding throughout."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from vaultmesh.change.plan import (
    ChangeView,
    NodeFacts,
    Step,
    holds,
    parse_version,
    plan_scale,
    plan_upgrade,
    quorum,
    refusal,
    resume,
)

OLD, NEW = "2.6.2", "2.7.2"
ZONES = ("zone-a", "zone-b", "zone-c")


def healthy_node(i: int, version: str = OLD, *, leader: bool = False) -> NodeFacts:
    return NodeFacts(f"node-{i}", ZONES[(i - 1) % 3], version=version, leader=leader, applied_index=10,
                     stable_for=60.0)


def mesh(n: int = 3, version: str = OLD, leader: int = 1) -> ChangeView:
    return ChangeView(tuple(healthy_node(i, version, leader=i == leader) for i in range(1, n + 1)),
                      commit_index=10, autopilot_healthy=True, failure_tolerance=(n - 1) // 2)


def with_node(view: ChangeView, name: str, **kw: object) -> ChangeView:
    return replace(view, nodes=tuple(replace(x, **kw) if x.name == name else x for x in view.nodes))  # type: ignore[arg-type]


# -- plans ---------------------------------------------------------------------------------------------------

def test_upgrade_replaces_standbys_one_at_a_time_then_hands_over_and_replaces_the_leader_last() -> None:
    plan = plan_upgrade(mesh(leader=2), NEW)
    assert [(s.node, s.action) for s in plan.steps] == [
        ("node-1", "replace"), ("node-3", "replace"), ("node-2", "step-down"), ("node-2", "replace")]
    assert [s.check for s in plan.steps] == ["on-target", "on-target", "led-by-target", "on-target"]
    assert plan.min_voters == 2


def seal_node(version: str = OLD, **kw: object) -> NodeFacts:
    return NodeFacts("seal", "seal", version=version, member=False, voter=False, **kw)  # type: ignore[arg-type]


def test_upgrade_replaces_the_transit_seal_node_first_with_its_own_invariant() -> None:
    view = replace(mesh(leader=2), seal=seal_node(), seal_ready=True)
    plan = plan_upgrade(view, NEW)
    assert plan.steps[0] == Step("seal", "replace", "seal-on-target")
    assert [(s.node, s.action) for s in plan.steps[1:]] == [
        ("node-1", "replace"), ("node-3", "replace"), ("node-2", "step-down"), ("node-2", "replace")]
    assert plan_upgrade(replace(view, seal=seal_node(NEW)), NEW).steps[0].node == "node-1"
    # on the target but not serving (an interrupted run stopped it): it is done again
    assert plan_upgrade(replace(view, seal=seal_node(NEW), seal_ready=False), NEW).steps[0].node == "seal"


def test_the_seal_node_is_done_once_it_serves_the_transit_key_and_every_node_stayed_unsealed() -> None:
    step = Step("seal", "replace", "seal-on-target")
    view = replace(mesh(), seal=seal_node(NEW), seal_ready=True)
    assert holds(step, view, NEW) is None
    assert "not running" in (holds(step, replace(view, seal=seal_node(NEW, running=False)), NEW) or "")
    assert "runs 2.6.2" in (holds(step, replace(view, seal=seal_node()), NEW) or "")
    assert "transit key" in (holds(step, replace(view, seal_ready=False), NEW) or "")
    assert "node-2 sealed while the seal node restarted" in (
        holds(step, with_node(view, "node-2", unsealed=False), NEW) or "")


def test_a_seal_node_newer_than_the_target_is_a_downgrade_and_one_on_it_is_nothing_to_do() -> None:
    view = replace(mesh(version=NEW), seal=seal_node("2.8.0"), seal_ready=True)
    assert "downgrade from 2.8.0" in (refusal(view, target=NEW) or "")
    assert plan_upgrade(replace(view, seal=seal_node(NEW)), NEW).done


def test_upgrade_of_a_mesh_on_the_target_has_no_steps() -> None:
    assert plan_upgrade(mesh(version=NEW), NEW).done


def test_upgrade_needs_no_step_down_when_the_leader_already_runs_the_target() -> None:
    view = with_node(mesh(version=NEW), "node-3", version=OLD)
    assert [(s.node, s.action) for s in plan_upgrade(view, NEW).steps] == [("node-3", "replace")]


def test_upgrade_starts_with_a_node_an_interrupted_run_left_stopped() -> None:
    view = with_node(with_node(mesh(), "node-2", version=NEW), "node-3", running=False, version=None)
    assert [(s.node, s.action) for s in plan_upgrade(view, NEW).steps][:1] == [("node-3", "replace")]


def test_upgrade_waits_first_for_a_replaced_node_that_has_not_settled() -> None:
    view = with_node(mesh(), "node-2", version=NEW, healthy=False)
    assert plan_upgrade(view, NEW).steps[0] == Step("node-2", "settle", "on-target")


def test_a_replaced_node_lagging_the_commit_index_by_a_few_entries_is_not_waited_for_again() -> None:
    view = with_node(mesh(), "node-2", version=NEW, applied_index=8, stable_for=0.1)
    assert [s.action for s in plan_upgrade(view, NEW).steps] == ["replace", "step-down", "replace"]


def test_scale_up_adds_each_node_as_a_non_voter_then_promotes_it_one_at_a_time() -> None:
    plan = plan_scale(mesh(3), 5)
    assert [(s.node, s.action) for s in plan.steps] == [
        ("node-4", "start"), ("node-4", "promote"), ("node-5", "start"), ("node-5", "promote")]
    assert plan.min_voters == 3 and plan.zones == ("zone-a", "zone-b", "zone-c", "zone-a", "zone-b")


def test_scale_down_removes_the_highest_first_and_steps_a_leaving_leader_away() -> None:
    plan = plan_scale(mesh(5, leader=5), 3)
    assert [(s.node, s.action) for s in plan.steps] == [
        ("node-5", "step-down"), ("node-5", "remove-peer"), ("node-5", "stop"), ("node-5", "delete-data"),
        ("node-4", "remove-peer"), ("node-4", "stop"), ("node-4", "delete-data")]
    assert plan.min_voters == 3


def test_scale_to_the_same_size_has_no_steps() -> None:
    assert plan_scale(mesh(3), 3).done


# -- refusals ------------------------------------------------------------------------------------------------

def test_a_healthy_mesh_may_be_upgraded() -> None:
    assert refusal(mesh(), target=NEW) is None


def test_a_downgrade_is_refused_in_one_line() -> None:
    why = refusal(mesh(version=NEW), target=OLD)
    assert why is not None and "downgrade from 2.7.2 to 2.6.2" in why and "\n" not in why


def test_a_downgrade_is_allowed_with_allow_downgrade_and_a_snapshot() -> None:
    assert refusal(mesh(version=NEW), target=OLD, allow_downgrade=True) is None
    assert "snapshot" in (refusal(mesh(version=NEW), target=OLD, allow_downgrade=True, have_snapshot=False) or "")


def test_a_mesh_without_failure_tolerance_is_refused() -> None:
    assert "tolerates 0 failure" in (refusal(replace(mesh(), failure_tolerance=0), target=NEW) or "")


def test_an_unhealthy_autopilot_is_refused() -> None:
    assert "autopilot" in (refusal(replace(mesh(), autopilot_healthy=False), target=NEW) or "")


def test_a_mesh_without_a_leader_is_refused() -> None:
    assert "no leader" in (refusal(with_node(mesh(), "node-1", leader=False), target=NEW) or "")


def test_two_nodes_down_are_refused() -> None:
    view = with_node(with_node(mesh(leader=1), "node-2", running=False), "node-3", running=False)
    assert "down or sealed" in (refusal(replace(view, failure_tolerance=0, autopilot_healthy=False),
                                        target=NEW) or "")


def test_one_node_an_interrupted_run_left_stopped_is_resumed_not_refused() -> None:
    view = with_node(mesh(), "node-2", running=False, version=None)
    assert refusal(replace(view, failure_tolerance=0, autopilot_healthy=False), target=NEW) is None


def test_a_scale_resumes_a_node_it_added_and_left_stopped_but_not_a_stopped_voter() -> None:
    view = with_node(mesh(4), "node-4", running=False, voter=False)
    view = replace(view, autopilot_healthy=False, failure_tolerance=1)
    assert refusal(view, nodes=5) is None
    assert [(s.node, s.action) for s in plan_scale(view, 5).steps][:1] == [("node-4", "start")]
    assert "down or sealed" in (refusal(with_node(view, "node-4", voter=True), nodes=5) or "")


def test_three_versions_at_once_are_refused() -> None:
    view = with_node(mesh(), "node-3", version="2.5.0")
    assert "versions besides the target" in (refusal(view, target=NEW) or "")


def test_an_unreadable_version_is_refused() -> None:
    assert "cannot read the version" in (refusal(with_node(mesh(), "node-2", version=None), target=NEW) or "")


def test_an_even_node_count_is_refused() -> None:
    assert "odd" in (refusal(mesh(), nodes=4) or "")


def test_versions_compare_as_numbers() -> None:
    assert parse_version("v2.10.0") > parse_version("2.9.9") and parse_version("2.7.2+ent") == (2, 7, 2)
    with pytest.raises(ValueError):
        parse_version("latest")


# -- invariants ----------------------------------------------------------------------------------------------

def test_a_replaced_node_is_on_target_only_once_caught_up_and_stable() -> None:
    step = Step("node-2", "replace", "on-target")
    view = with_node(mesh(), "node-2", version=NEW, applied_index=7)
    assert "catching up" in (holds(step, view, NEW) or "")
    view = with_node(view, "node-2", applied_index=10, stable_for=0.2)
    assert "stabilisation" in (holds(step, view, NEW) or "")
    assert holds(step, with_node(view, "node-2", stable_for=1.0), NEW) is None


def test_resume_picks_the_first_step_whose_invariant_does_not_hold() -> None:
    view = mesh(leader=1)
    plan = plan_upgrade(view, NEW)
    assert resume(plan, view) == 0
    done = with_node(view, "node-2", version=NEW)
    assert resume(plan, done) == 1
    assert resume(plan, with_node(with_node(with_node(done, "node-3", version=NEW), "node-1", leader=False,
                                            version=NEW), "node-2", leader=True)) == len(plan.steps)


# -- a model mesh, run step by step and interrupted at every intermediate state --------------------------------

@dataclass
class Model:
    """A mesh that does what each step's executor does, one effect at a time; an election picks the oldest
    node it can (the worst case), and every leadership change is logged as (from version, to version)."""

    nodes: dict[str, NodeFacts]
    commit: int = 10
    handovers: list[tuple[str, str]] = field(default_factory=list)
    seal: NodeFacts | None = None
    """The transit seal node: while it is down a node that restarts stays sealed."""

    @classmethod
    def of(cls, view: ChangeView) -> Model:
        return cls({x.name: x for x in view.nodes}, seal=view.seal)

    def view(self) -> ChangeView:
        nodes = tuple(self.nodes.values())
        alive = [x for x in nodes if x.member and x.voter and x.running and x.healthy]
        voters = sum(1 for x in nodes if x.member and x.voter)
        tolerance = max(0, len(alive) - quorum(voters))
        return ChangeView(nodes, commit_index=self.commit, autopilot_healthy=all(
            x.healthy and x.running for x in nodes if x.member), failure_tolerance=tolerance, seal=self.seal,
            seal_ready=self.seal.running and self.seal.healthy if self.seal else None)

    def set(self, name: str, **kw: object) -> None:
        self.nodes[name] = replace(self.nodes[name], **kw)  # type: ignore[arg-type]

    def leader(self) -> NodeFacts | None:
        return next((x for x in self.nodes.values() if x.leader), None)

    def elect(self, exclude: str) -> None:
        old = self.leader()
        if old is not None:
            self.set(old.name, leader=False)
        able = [x for x in self.nodes.values() if x.running and x.member and x.voter and x.name != exclude]
        if len(able) + (1 if old and old.running else 0) < quorum(sum(1 for x in self.nodes.values() if x.voter)):
            return  # no quorum: no leader
        new = min(able, key=lambda x: (parse_version(x.version or "0"), x.name))
        self.set(new.name, leader=True)
        self.handovers.append((old.version if old else "", new.version or ""))

    def effects(self, step: Step, target: str) -> list[tuple[str, dict[str, object]]]:
        """The effects of one step, in order: ("set", fields) or ("elect", {})."""
        match step.action:
            case "replace":
                return [("stop", {}), ("set", {"running": True, "version": target, "healthy": False,
                                               "applied_index": 0, "stable_for": 0.0}),
                        ("set", {"healthy": True, "applied_index": self.commit, "stable_for": 60.0})]
            case "settle":
                return [("set", {"healthy": True, "applied_index": self.commit, "stable_for": 60.0})]
            case "step-down":
                return [("elect", {})]
            case "start":
                return [("set", {"running": True, "member": True, "voter": False, "healthy": False,
                                 "has_data": True, "applied_index": 0, "stable_for": 0.0})]
            case "promote":
                return [("set", {"voter": True, "healthy": True, "applied_index": self.commit, "stable_for": 60.0})]
            case "remove-peer":
                return [("set", {"member": False, "voter": False})]
            case "stop":
                return [("stop", {})]
            case "delete-data":
                return [("set", {"has_data": False})]
        raise AssertionError(step.action)

    def apply(self, name: str, effect: tuple[str, dict[str, object]]) -> None:
        kind, fields = effect
        if name == "seal":
            assert self.seal is not None
            self.seal = replace(self.seal, running=False, healthy=False, version=None) if kind == "stop" else \
                replace(self.seal, **fields)  # type: ignore[arg-type]
            return
        if kind == "set" and fields.get("running") and self.seal is not None and not self.seal.running:
            fields = {**fields, "unsealed": False}  # no seal node to unseal through
        if name not in self.nodes:
            zone = ZONES[(int(name.split("-")[1]) - 1) % 3]
            self.nodes[name] = NodeFacts(name, zone, running=False, member=False, voter=False, healthy=False,
                                         has_data=False, version=NEW)
        if kind == "stop":
            was_leader = self.nodes[name].leader
            self.set(name, running=False, healthy=False, stable_for=0.0, version=None, leader=False)
            if was_leader:
                self.elect(exclude=name)
        elif kind == "elect":
            self.elect(exclude=name)
        else:
            self.set(name, **fields)


def next_step(model: Model, kind: str, target: str) -> Step | None:
    """What the executor does on each turn: observe, refuse or plan, resume."""
    view = model.view()
    if kind == "upgrade":
        why = refusal(view, target=target)
        assert why is None, why
        plan = plan_upgrade(view, target)
    else:
        plan = plan_scale(view, int(target))
    i = resume(plan, view)
    return plan.steps[i] if i < len(plan.steps) else None


def run(model: Model, kind: str, target: str, *, stop_after: int | None = None, floor: int = 0) -> int:
    """Turn after turn until the plan is empty (or ``stop_after`` effects: the interruption); returns the effects
    done. After every effect the voters stay at ``floor`` or more and at most one voter is down."""
    done = 0
    for _ in range(50):
        step = next_step(model, kind, target)
        if step is None:
            return done
        for effect in model.effects(step, target):
            if stop_after is not None and done == stop_after:
                return done
            model.apply(step.node, effect)
            done += 1
            view = model.view()
            assert view.voters >= floor, (step, view)
            down = [x for x in view.nodes if x.member and x.voter and not x.running]
            assert len(down) <= 1, (step, down)
        assert holds(step, model.view(), target if kind == "upgrade" else None) is None, step
    raise AssertionError("no end")


def full_length(start: ChangeView, kind: str, target: str) -> int:
    return run(Model.of(start), kind, target)


@pytest.mark.parametrize("leader", [1, 2, 3])
def test_an_upgrade_changes_leadership_exactly_once_and_never_from_newer_to_older(leader: int) -> None:
    model = Model.of(mesh(leader=leader))
    run(model, "upgrade", NEW, floor=2)
    assert all(x.version == NEW and x.running for x in model.nodes.values())
    assert len(model.handovers) == 1 and model.handovers[0] == (OLD, NEW)


TRANSIT = replace(mesh(), seal=seal_node(), seal_ready=True)


@pytest.mark.parametrize("cut", range(full_length(mesh(), "upgrade", NEW) + 1))
def test_an_upgrade_interrupted_at_any_state_resumes_and_reaches_the_target(cut: int) -> None:
    model = Model.of(mesh())
    run(model, "upgrade", NEW, stop_after=cut, floor=2)
    run(model, "upgrade", NEW, floor=2)  # the command run again, planning from what the mesh is now
    assert all(x.version == NEW and x.running and x.healthy for x in model.nodes.values())
    assert len(model.handovers) == 1
    assert all(parse_version(b) >= parse_version(a) for a, b in model.handovers)


@pytest.mark.parametrize("cut", range(full_length(TRANSIT, "upgrade", NEW) + 1))
def test_a_transit_mesh_upgrade_interrupted_at_any_state_resumes_with_the_seal_node_first(cut: int) -> None:
    model = Model.of(TRANSIT)
    run(model, "upgrade", NEW, stop_after=cut, floor=2)
    run(model, "upgrade", NEW, floor=2)
    assert model.seal is not None and model.seal.version == NEW and model.seal.running
    assert all(x.version == NEW and x.running and x.unsealed for x in model.nodes.values())
    assert len(model.handovers) == 1


@pytest.mark.parametrize(("start", "to", "leader"), [(3, 5, 1), (5, 3, 5), (5, 3, 4), (3, 7, 2), (7, 3, 7)])
def test_scaling_keeps_a_quorum_of_both_configurations_and_balanced_zones(start: int, to: int, leader: int) -> None:
    model = Model.of(mesh(start, version=NEW, leader=leader))
    floor = min(start, to)
    assert plan_scale(model.view(), to).min_voters == floor
    if {start, to} == {3, 5}:
        assert floor >= max(quorum(start), quorum(to))
    turns = 0
    while (step := next_step(model, "scale", str(to))) is not None:
        for effect in model.effects(step, NEW):
            before = model.view().voters
            model.apply(step.node, effect)
            after = model.view().voters
            assert after >= floor and after >= quorum(before) and abs(after - before) <= 1
        voters = [x for x in model.nodes.values() if x.member and x.voter]
        counts = [sum(1 for x in voters if x.zone == z) for z in ZONES]
        assert max(counts) - min(counts) <= 1, (step, counts)
        turns += 1
        assert turns < 60
    members = sorted(x.name for x in model.nodes.values() if x.member)
    assert members == [f"node-{i}" for i in range(1, to + 1)]
    assert all(not x.running and not x.has_data for x in model.nodes.values() if not x.member)
    leader_now = model.leader()
    assert leader_now is not None and leader_now.member


@pytest.mark.parametrize(("start", "to"), [(3, 5), (5, 3)])
def test_a_scale_interrupted_at_any_state_resumes_and_reaches_the_target(start: int, to: int) -> None:
    length = full_length(mesh(start, version=NEW, leader=start), "scale", str(to))
    for cut in range(length + 1):
        model = Model.of(mesh(start, version=NEW, leader=start))
        floor = min(start, to)
        run(model, "scale", str(to), stop_after=cut, floor=floor)
        run(model, "scale", str(to), floor=floor)
        assert sorted(x.name for x in model.nodes.values() if x.member and x.voter) == \
            [f"node-{i}" for i in range(1, to + 1)]
