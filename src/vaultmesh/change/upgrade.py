"""``vaultmesh upgrade``: move every node of a running mesh to another engine binary, one node at a time, under
the state lock (the keeper skips its turns meanwhile).

Each turn: observe (``observe``) -> plan from what the mesh is (``plan_upgrade``) -> the step to resume at
(``resume``) -> do it -> wait until its invariant holds (unsealed, a voter, its applied index at the leader's commit
index, autopilot healthy for the stabilisation time; after a step-down: a leader on the target). The transit seal
node goes first: the nodes must stay unsealed while it restarts and it must serve the transit key again; each node
replaced after it then unseals through the new seal node. Killed at any point, the command run again plans from the
mesh as it then is and finishes. A snapshot is taken and verified before the first step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.change.observe import HANDOVER_TIMEOUT, HANDOVER_TRIES, POLL, observe, quiet, step_down
from vaultmesh.change.plan import ChangeView, Step, holds, parse_version, plan_upgrade, refusal, resume
from vaultmesh.errors import NotReady, StateError, UnsafePlan
from vaultmesh.lifecycle import mesh as m
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import Engine, log_tail, resolve_engine
from vaultmesh.snapshot import archive
from vaultmesh.snapshot import save as snap
from vaultmesh.waiting import wait_until

Progress = Callable[[str], None]

STEP_TIMEOUT = 120.0
"""Seconds one step may take to reach its invariant: a restarted node unseals in ~0.25 s and is stable ~3 s later on
loopback; the margin is for a large Raft log to replay on a loaded machine."""


@dataclass(frozen=True)
class UpgradeResult:
    target: str
    engine: str
    before: dict[str, str | None]
    """Each node's version when the command started."""
    steps: tuple[str, ...]
    """What was done, one sentence per step."""
    snapshot: Path | None
    seconds: float
    leaders: tuple[str, ...]
    """The leaders seen, in order (one name per change the command observed)."""

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "engine": self.engine, "before": self.before, "steps": list(self.steps),
                "snapshot": str(self.snapshot) if self.snapshot else None, "seconds": round(self.seconds, 2),
                "leaders": list(self.leaders)}


@dataclass
class _Run:
    mesh: m.Mesh
    client: EngineClient
    engine: str
    target: str
    progress: Progress
    step_timeout: float
    leaders: list[str]
    started: dict[str, float] = field(default_factory=dict)
    """When this run started each node (wall clock): autopilot's ``stable_since`` may predate a restart quicker
    than its health check, so a node's stable time counts from its start at the earliest."""

    def look(self) -> ChangeView:
        view = observe(self.mesh, self.client)
        now = time.time()
        view = replace(view, nodes=tuple(
            replace(n, stable_for=min(n.stable_for, now - self.started[n.name])) if n.name in self.started else n
            for n in view.nodes))
        leader = view.leader
        if leader is not None and (not self.leaders or self.leaders[-1] != leader.name):
            self.leaders.append(leader.name)
        return view

    def settle(self, step: Step, timeout: float) -> str | None:
        """Wait until ``step``'s invariant holds; None when it does, else what is still missing."""
        last: list[str | None] = ["not observed"]

        def ok() -> bool:
            last[0] = holds(step, self.look(), self.target)
            return last[0] is None

        wait_until(ok, timeout=timeout, interval=POLL)
        return last[0]

    def perform(self, step: Step, view: ChangeView) -> str:
        layout = self.mesh.layout
        seal = step.check == "seal-on-target"
        node = layout.seal_node if seal and layout.seal_node is not None else layout.node(step.node)
        before = view.seal if seal else view.node(step.node)
        match step.action:
            case "replace":
                # recorded first: a heal of this node from here on starts the new binary, never the old one
                self.mesh = m.record_engine(self.mesh, self.engine, node=node.name)
                processes.stop_node(node)
                processes.wait_ports_free(node)
                if not seal:
                    self.started[node.name] = time.time()
                new = processes.start_node(node, self.engine)
                why = self.settle(step, self.step_timeout)
                if why is not None:
                    raise NotReady(f"{node.name} did not settle on {self.target} within {self.step_timeout:g} s: "
                                   f"{why}; last lines of {node.log_file}:\n{log_tail(node.log_file)}",
                                   hint="fix it and run `vaultmesh upgrade` again: it resumes from here")
                was = before.version if before and before.version else "stopped"
                if seal:
                    return (f"the transit seal node: {was} -> {self.target} (pid {new}), serving the transit key; "
                            "every node stayed unsealed")
                return (f"{node.name}: {was} -> {self.target} (pid {new}), caught up, a healthy voter for the "
                        "stabilisation time")
            case "settle":
                why = self.settle(step, self.step_timeout)
                if why is not None:
                    raise NotReady(f"{node.name} runs {self.target} but did not settle within "
                                   f"{self.step_timeout:g} s: {why}",
                                   hint="look at its bao.log; run `vaultmesh upgrade` again to resume")
                return f"{node.name}: settled on {self.target}"
            case "step-down":
                if step_down(self.client, node, lambda: self.settle(step, HANDOVER_TIMEOUT) is None):
                    leader = self.look().leader
                    return f"{node.name} handed leadership to {leader.name if leader else '?'} ({self.target})"
                raise NotReady(f"no node on {self.target} took over from {node.name} after {HANDOVER_TRIES} "
                               "step-downs", hint="see `vaultmesh status`; run `vaultmesh upgrade` again")
        raise AssertionError(step.action)


def target_engine(mesh: m.Mesh, engine_path: str) -> Engine:
    """The binary to move to: on this machine, or (``runtime: ssh``) at ``engine_path`` on every host, where each
    host's copy must report the same version."""
    hosted = [n for n in mesh.layout.nodes if n.remote is not None]
    if not hosted:
        return resolve_engine(os.path.abspath(engine_path))
    from vaultmesh.hosts import runtime as hosts

    seen = {n.name: hosts.engine_version(n, engine_path) for n in hosted}
    if len(set(seen.values())) > 1:
        raise StateError(f"{engine_path} is not the same version on every host: "
                         + ", ".join(f"{name} {p} {v}" for name, (p, v) in sorted(seen.items())),
                         hint="install one version at that path on every host")
    product, version = next(iter(seen.values()))
    return Engine(engine_path, product, version)


def upgrade(root: Path, engine_path: str, *, allow_downgrade: bool = False, progress: Progress = quiet,
            step_timeout: float = STEP_TIMEOUT) -> UpgradeResult:
    """Move every node of the mesh in ``root`` to the binary at ``engine_path``; return once all run it."""
    t0 = time.monotonic()
    with m.locked(root):
        mesh = m.open_mesh(root)
        engine = target_engine(mesh, engine_path)
        target = engine.version
        if mesh.spec.seal.type == "shamir":
            raise StateError("upgrade of a Shamir-sealed mesh is not built yet: every restarted node would wait "
                             "for key shares", hint="upgrade it by hand, node by node, unsealing each")
        client = mesh.client(token=m.admin_token(mesh), retry=RetryPolicy(deadline=5.0))
        run = _Run(mesh, client, engine.path, target, progress, step_timeout, [])
        view = run.look()
        before = {n.name: n.version for n in view.nodes}
        why = refusal(view, target=target, allow_downgrade=allow_downgrade)
        if why is not None:
            downgrade = any(n.version and parse_version(n.version) > parse_version(target) for n in view.nodes)
            raise (UnsafePlan if downgrade else NotReady)(why)
        plan = plan_upgrade(view, target)
        manifest = None
        done: list[str] = []
        if not plan.done:
            progress(f"upgrading to {engine.product} {target} ({engine.path}):")
            for line in plan.lines():
                progress(f"  {line}")
            manifest = snap.save(mesh, reason="before-upgrade")
            archive.verify_file(manifest.path)
            progress(f"snapshot {manifest.path} taken and verified (index {manifest.index})")
        for _ in range(4 * len(mesh.layout.nodes) + 5):
            view = run.look()
            if view.leader is None:
                if not wait_until(lambda: run.look().leader is not None, timeout=run.step_timeout, interval=POLL):
                    raise NotReady("the mesh has no leader; the upgrade stopped here",
                                   hint="run `vaultmesh up` to heal it, then `vaultmesh upgrade` again")
                continue
            plan = plan_upgrade(view, target)
            i = resume(plan, view)
            if i >= len(plan.steps):
                break
            sentence = run.perform(plan.steps[i], view)
            done.append(sentence)
            progress(sentence)
        else:
            raise NotReady("the upgrade did not converge", hint="see `vaultmesh status`; run it again to resume")
        m.record_engine(run.mesh, engine.path)
        return UpgradeResult(target, engine.path, before, tuple(done), manifest.path if manifest else None,
                             time.monotonic() - t0, tuple(run.leaders))
