"""``vaultmesh scale --nodes N``: add or remove nodes of a running mesh one at a time, under the state lock.

Each turn: observe (``observe``) -> plan from what the mesh is (``plan_scale``) -> the step to resume at
(``resume``) -> do it -> wait until its invariant holds. Added nodes first get ports and a certificate in the state
dir (``lifecycle.mesh.resize``); every node's config is re-rendered (retry_join lists every peer) and the entry
reloaded with the new backends; a new node starts, joins Raft through retry_join as a non-voter and autopilot
promotes it once it caught up and was stable. A node that goes: the leader steps away from it, it is removed from
the Raft configuration, stopped, and its folder deleted; only then are its ports dropped. The keeper is stopped for
the change and started again after it, on the new layout. Killed at any point, the command run again plans from the
mesh as it then is and finishes; the mesh file's ``nodes`` line says ``N`` once the change is done.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.change.observe import HANDOVER_TIMEOUT, HANDOVER_TRIES, POLL, observe, quiet, step_down
from vaultmesh.change.plan import ChangeView, Step, holds, plan_scale, refusal, resume
from vaultmesh.errors import NotReady, RuntimeFailure, StateError, UnsafePlan, VaultmeshError
from vaultmesh.layout import NodeLayout
from vaultmesh.lifecycle import keeper_process as keeper
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.mesh import entry_wanted
from vaultmesh.lifecycle.up import Executor, converge
from vaultmesh.lifecycle.view import MeshView
from vaultmesh.runtime import netns, processes
from vaultmesh.runtime.local import log_tail, resolve_engine, start_process, stop_processes
from vaultmesh.waiting import wait_until

Progress = Callable[[str], None]

STEP_TIMEOUT = 120.0
"""Seconds one step may take to reach its invariant (a new node joins in ~1 s and is promoted once it has been
healthy for the stabilisation time; the margin is for a large Raft log to replay on a loaded machine)."""


READY_TIMEOUT = 20.0
"""Seconds a change waits for a refusal to clear before it starts (a node an interrupted run added may still be
settling: autopilot reports the mesh unhealthy until it is stable)."""

MAX_NODES = 7

REJOINS = 2
"""Times an added node restarted too early joins again from nothing before it is left to OpenBao's 5 s retry."""


@dataclass(frozen=True)
class ScaleResult:
    before: int
    nodes: int
    steps: tuple[str, ...]
    """What was done, one sentence per step."""
    seconds: float
    leaders: tuple[str, ...]
    voters: tuple[str, ...]
    """The voters once done (autopilot's view)."""

    def to_json(self) -> dict[str, Any]:
        return {"before": self.before, "nodes": self.nodes, "steps": list(self.steps),
                "seconds": round(self.seconds, 2), "leaders": list(self.leaders), "voters": list(self.voters)}


@dataclass
class _Run:
    mesh: m.Mesh
    client: EngineClient
    progress: Progress
    step_timeout: float
    leaders: list[str] = field(default_factory=list)

    def look(self) -> ChangeView:
        view = observe(self.mesh, self.client)
        leader = view.leader
        if leader is not None and (not self.leaders or self.leaders[-1] != leader.name):
            self.leaders.append(leader.name)
        return view

    def relayout(self, n: int) -> None:
        """The state dir laid out for ``n`` nodes, every config re-rendered (and a namespace for each added
        node of a netns mesh), the entry reloaded on it."""
        self.mesh = m.resize(self.mesh, n)
        if any(x.netns for x in self.mesh.layout.nodes):
            netns.ensure(self.mesh.layout)
        self.client = self.mesh.client(token=self.client.token, retry=RetryPolicy(deadline=5.0))
        said = reload_entry(self.mesh)
        if said:
            self.progress(said)

    def bring_up(self, name: str, running: set[str]) -> None:
        """Start the added node ``name`` as ``up`` starts a missing one (``lifecycle.up.converge`` on the nodes
        already running and this one): once it joined Raft, ``up`` unseals it with the Shamir keys, or restarts
        it so it unseals at once instead of on OpenBao's next 5 s retry. Returns once it is unsealed. A node
        that came back from that restart without its Raft state joins again from nothing (``rejoin``), at most
        ``REJOINS`` times; the last time it is not restarted and unseals on OpenBao's own retry."""
        layout = self.mesh.layout
        mesh = replace(self.mesh, layout=replace(layout, nodes=tuple(
            x for x in layout.nodes if x.name in running or x.name == name)))
        engine = resolve_engine(self.mesh.engine).path

        def unsealed(view: MeshView) -> bool:
            return any(x.name == name and x.running and x.sealed is False for x in view.nodes)

        try:
            for attempt in range(REJOINS + 1):
                ex = Executor(mesh, engine, entry_wanted(mesh.spec), self.progress)
                if attempt == REJOINS:
                    ex.restarted.add(name)  # no restart this time: it unseals on OpenBao's own retry
                if unsealed(converge(ex, time.monotonic(), self.step_timeout, False,
                                     until=lambda v, ex=ex: unsealed(v) or _lost_state(v, name, ex)).view):
                    return
                self.rejoin(layout.node(name))
        except (NotReady, RuntimeFailure) as err:
            raise type(err)(str(err), hint="fix it and run `vaultmesh scale` again: it resumes from here") from None

    def rejoin(self, node: NodeLayout) -> None:
        """An added node restarted before the leader's snapshot reached it (its health says initialised once it
        joined, before it has the mesh's data) never unseals: stop it, take it out of Raft, delete its data."""
        self.progress(f"{node.name} did not unseal after its restart (it had not received the leader's log yet): "
                      "it joins again from nothing")
        pid = processes.node_process(node).pid(adopt=True)
        if pid is not None:
            stop_processes([pid], timeout=processes.STOP_TIMEOUT)
        with contextlib.suppress(VaultmeshError):  # not a peer (yet): nothing to remove
            self.client.write("sys/storage/raft/remove-peer", {"server_id": node.name})
        shutil.rmtree(node.data_dir, ignore_errors=True)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        processes.wait_ports_free(node)

    def settle(self, step: Step, timeout: float) -> str | None:
        last: list[str | None] = ["not observed"]

        def ok() -> bool:
            last[0] = holds(step, self.look())
            return last[0] is None

        wait_until(ok, timeout=timeout, interval=POLL)
        return last[0]

    def must_settle(self, step: Step, what: str) -> None:
        why = self.settle(step, self.step_timeout)
        if why is not None:
            node = self.mesh.layout.node(step.node)
            raise NotReady(f"{step.node} did not {what} within {self.step_timeout:g} s: {why}; last lines of "
                           f"{node.log_file}:\n{log_tail(node.log_file)}",
                           hint="fix it and run `vaultmesh scale` again: it resumes from here")

    def perform(self, step: Step, view: ChangeView) -> str:
        node = self.mesh.layout.node(step.node)
        facts = view.node(step.node)
        match step.action:
            case "start":
                if processes.node_process(node).pid(adopt=True) is None:
                    if facts is not None and not facts.member and node.data_dir.exists():
                        # Raft data of a node removed before (an interrupted scale down): it would not rejoin
                        shutil.rmtree(node.data_dir)
                    node.data_dir.mkdir(parents=True, exist_ok=True)
                    processes.wait_ports_free(node)
                self.bring_up(node.name, {x.name for x in view.nodes if x.running})
                self.must_settle(step, "join Raft")
                pid = processes.node_process(node).pid()
                return f"{node.name} ({node.zone}) started on {node.api_addr} (pid {pid}), joined as a non-voter"
            case "promote":
                self.must_settle(step, "become a caught-up, stable voter")
                return f"{node.name}: autopilot made it a voter (caught up, healthy for the stabilisation time)"
            case "step-down":
                if step_down(self.client, node, lambda: self.settle(step, HANDOVER_TIMEOUT) is None):
                    leader = self.look().leader
                    return f"{node.name} handed leadership to {leader.name if leader else '?'}"
                raise NotReady(f"no other node took over from {node.name} after {HANDOVER_TRIES} step-downs",
                               hint="see `vaultmesh status`; run `vaultmesh scale` again")
            case "remove-peer":
                self.client.write("sys/storage/raft/remove-peer", {"server_id": node.name})
                self.must_settle(step, "leave the Raft configuration")
                return f"{node.name} removed from the Raft configuration"
            case "stop":
                pid = processes.node_process(node).pid(adopt=True)
                if pid is not None:
                    stop_processes([pid], timeout=processes.STOP_TIMEOUT)
                self.must_settle(step, "stop")
                return f"{node.name} stopped" + (f" (pid {pid})" if pid else "")
            case "delete-data":
                if node.netns:  # first: once its folder is gone, no later run plans anything for this node
                    netns.remove_node(node)
                shutil.rmtree(node.dir, ignore_errors=True)
                self.must_settle(step, "lose its folder")
                return f"{node.name}: its folder {node.dir} deleted"
        raise AssertionError(step.action)


def _lost_state(view: MeshView, name: str, ex: Executor) -> bool:
    """``up``'s path restarted node ``name`` and it came back without its Raft state: it answers uninitialised
    and asks to join again, refused forever ("cluster already has state"). OpenBao reports a joined node
    initialised before the leader's log reached it, and a sealed node serves nothing that tells the two apart,
    so a restart can come too early (about half of them on a loaded machine)."""
    node = next(x for x in view.nodes if x.name == name)
    return name in ex.restarted and node.reachable and node.initialized is False


def reload_entry(mesh: m.Mesh) -> str | None:
    """A running entry takes the re-rendered config: a new HAProxy binds beside the old one (``-sf``: the old
    one stops listening once the new one does and finishes its connections), so the entry never stops
    answering. None when no entry runs (``up`` starts one on the new config)."""
    layout = mesh.layout
    if not entry_wanted(mesh.spec):
        return None
    old = processes.entry_process(layout).pid(adopt=True)
    if old is None:
        return None
    if layout.entry_hosts:  # runtime: ssh: each entry host gets its config (its CA file, its backends) again
        from vaultmesh.hosts import runtime as hosts

        for remote in layout.entry_hosts:
            hosts.push_entry(remote, m.hosted_entry_config(layout.paths, remote).read_bytes())
            hosts.restart_entry(remote)
        new = wait_until(lambda: processes.entry_process(layout).pid(), timeout=10.0, interval=0.1)
        if not new:
            raise NotReady("the entry did not start again on its hosts", hint="run `vaultmesh up` to restart it")
        return f"the entry restarted on {', '.join(r.host for r in layout.entry_hosts)} (pid {old} -> {new})"
    haproxy = shutil.which("haproxy") or "haproxy"
    new = start_process([haproxy, "-db", "-f", str(processes.entry_config(layout)), "-sf", str(old)],
                        cwd=layout.paths.entry_dir, log_file=processes.entry_log(layout),
                        pid_file=processes.entry_pid_file(layout))
    if not wait_until(lambda: processes.entry_process(layout).pid() == new, timeout=5.0, interval=0.05):
        raise NotReady(f"the entry did not take its new config; last lines of its log:\n"
                       f"{log_tail(processes.entry_log(layout))}", hint="run `vaultmesh up` to restart it")
    return f"the entry reloaded with {len(layout.nodes)} backends (pid {old} -> {new})"


def check_target(mesh: m.Mesh, n: int) -> None:
    if any(x.remote for x in mesh.layout.nodes):
        raise StateError("scaling a runtime: ssh mesh is not built yet (one node per host: a node added or removed "
                         "is a host added to or removed from hosts:); nothing was changed",
                         hint="bring up another mesh (--dir) on the new hosts: list")
    if n > MAX_NODES:
        raise UnsafePlan(f"{n} nodes is more than {MAX_NODES}: Raft gets chatty and slow", hint="choose 3, 5 or 7")
    if mesh.spec.seal.type == "shamir" and n > len(mesh.layout.nodes) and not mesh.paths.shamir_keys.exists():
        raise StateError(f"a new node of this Shamir-sealed mesh must be unsealed with the key shares, and "
                         f"{mesh.paths.shamir_keys} is gone; nothing was changed",
                         hint="put the unseal keys file back, then run `vaultmesh scale` again")
    if any(x.netns for x in mesh.layout.nodes) and n > len(mesh.layout.nodes):
        why = netns.unavailable()
        if why is not None:
            raise StateError(f"a new node of this runtime: netns mesh needs a namespace, and {why}; nothing was "
                             "changed", hint="run `vaultmesh scale` as root on a machine with iproute2")


def scale_locked(mesh: m.Mesh, n: int, *, progress: Progress = quiet,
                 step_timeout: float = STEP_TIMEOUT) -> ScaleResult:
    """Scale ``mesh`` (whose state lock the caller holds) to ``n`` nodes; return once they are all voters."""
    t0 = time.monotonic()
    check_target(mesh, n)
    client = mesh.client(token=m.admin_token(mesh), retry=RetryPolicy(deadline=5.0))
    run = _Run(mesh, client, progress, step_timeout)
    before = len(mesh.layout.nodes)
    last: list[str | None] = [None]

    def ready() -> bool:
        last[0] = refusal(run.look(), nodes=n)
        return last[0] is None

    if not wait_until(ready, timeout=READY_TIMEOUT, interval=POLL):
        raise (UnsafePlan if "choose" in (last[0] or "") else NotReady)(last[0] or "the mesh is not ready")
    done: list[str] = []
    pid = keeper.keeper_pid(mesh.paths, adopt=True)
    if pid is not None:  # it lays the mesh out once, when it starts: it comes back on the new layout
        stop_processes([pid], timeout=processes.STOP_TIMEOUT)
        progress(f"stopped the keeper (pid {pid}) for the change")
    plan = plan_scale(run.look(), n, mesh.spec.zones)
    if not plan.done:
        progress(f"scaling {len(mesh.layout.nodes)} -> {n} nodes (voters never below {plan.min_voters}):")
        for line in plan.lines():
            progress(f"  {line}")
    if n > len(run.mesh.layout.nodes):
        run.relayout(n)
        done.append(f"laid out {n} nodes: ports and a certificate for each new one, every config re-rendered")
    for _ in range(8 * MAX_NODES):
        view = run.look()
        if view.leader is None:
            if not wait_until(lambda: run.look().leader is not None, timeout=step_timeout, interval=POLL):
                raise NotReady("the mesh has no leader; the scale stopped here",
                               hint="run `vaultmesh up` to heal it, then `vaultmesh scale` again")
            continue
        plan = plan_scale(view, n, run.mesh.spec.zones)
        i = resume(plan, view)
        if i >= len(plan.steps):
            break
        step = plan.steps[i]
        if step.action == "remove-peer" and view.voters - 1 < plan.min_voters:
            raise UnsafePlan(f"removing {step.node} would leave {view.voters - 1} voters, below "
                             f"{plan.min_voters}", hint="see `vaultmesh status`; run `vaultmesh up` to heal it")
        sentence = run.perform(step, view)
        done.append(sentence)
        progress(sentence)
    else:
        raise NotReady("the scale did not converge", hint="see `vaultmesh status`; run it again to resume")
    if len(run.mesh.layout.nodes) > n:
        run.relayout(n)
        done.append(f"laid out {n} nodes: the ports of the removed ones dropped, every config re-rendered")
    run.mesh = m.record_nodes(run.mesh, n)
    final = [run.look()]

    def settled() -> bool:
        final[0] = run.look()
        return final[0].voters == n and final[0].autopilot_healthy is True and final[0].leader is not None

    if not wait_until(settled, timeout=step_timeout, interval=POLL):
        raise NotReady(f"the mesh has {final[0].voters} voters of {n}, autopilot healthy: "
                       f"{final[0].autopilot_healthy}", hint="see `vaultmesh status`; run it again to resume")
    if run.mesh.spec.keeper.enabled and keeper.keeper_pid(run.mesh.paths, adopt=True) is None:
        progress(f"started the keeper (pid {keeper.start_keeper(run.mesh.paths)}) on the {n}-node layout")
    voters = tuple(x.name for x in final[0].nodes if x.member and x.voter)
    return ScaleResult(before, n, tuple(done), time.monotonic() - t0, tuple(run.leaders), voters)


def scale(root: Path, n: int, *, progress: Progress = quiet, step_timeout: float = STEP_TIMEOUT) -> ScaleResult:
    """Scale the mesh in ``root`` to ``n`` nodes, one node at a time."""
    with m.locked(root):
        return scale_locked(m.open_mesh(root), n, progress=progress, step_timeout=step_timeout)
