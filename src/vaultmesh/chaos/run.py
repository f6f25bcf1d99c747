"""One chaos run: a bench scenario loads the mesh, the write probe logs acknowledged writes, a fault is injected
(and lifted), the mesh heals, and everything acknowledged is read back.

What is reported for each fault: the time until writes through the entry succeed again, the client-visible errors
of the workload path (it retries, so the aim is none), lost acknowledged writes (must be none), for a partition
whether the cut-off minority acknowledged any write (it must not), and how and how fast the mesh healed. Quorum
loss is reported as what it is: an outage of writes, with the way back named.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vaultmesh.bench.model import BenchConfig, BenchResult, Event
from vaultmesh.bench.report import error_total, overall, render_text
from vaultmesh.bench.runner import ProgressFn, bench_mesh
from vaultmesh.bench.targets import admin_client, setup_targets
from vaultmesh.chaos import inject as inj
from vaultmesh.chaos.fault import QUORUM_RECOVERY, Attempt, Fault, Recovery, lost_writes, recovery
from vaultmesh.chaos.probe import WriteProbe, forget, readable
from vaultmesh.errors import EngineError, VaultmeshError
from vaultmesh.layout import NodeLayout
from vaultmesh.lifecycle import mesh as m

HEAL_TIMEOUT = 120.0


@dataclass
class ChaosResult:
    plan: Fault
    bench: BenchResult
    leader_before: str | None = None
    leader_after: str | None = None
    hit: tuple[str, ...] = ()
    detail: str = ""
    t_inject: float | None = None
    t_lift: float | None = None
    probe: list[Attempt] = field(default_factory=list)
    recovery: Recovery | None = None
    acked: int = 0
    lost: list[int] = field(default_factory=list)
    minority_attempts: int | None = None
    minority_acked: int | None = None
    heal_how: str = ""
    heal_up_s: float | None = None
    """Seconds `vaultmesh up` took (kills only)."""
    healthy_after_s: float | None = None
    """Seconds from lifting the fault (or starting `up`) until the mesh was healthy again."""
    notes: list[str] = field(default_factory=list)

    @property
    def client_errors(self) -> int:
        return error_total(self.bench)

    @property
    def passed(self) -> bool:
        """No acknowledged write lost, healed, a minority that acknowledged nothing, the token and lease counts
        back at the baseline (within the reap interval), and, unless quorum was lost, no client-visible error."""
        ok = not self.lost and self.healthy_after_s is not None and not self.minority_acked and self.bench.returned
        if not self.plan.loses_quorum:
            ok = ok and self.client_errors == 0 and self.recovery is not None \
                and self.recovery.recovery_s is not None
        return ok


class _Injector:
    """The injection and lifting of one plan on one mesh (runs in the bench's hook thread)."""

    def __init__(self, mesh: m.Mesh, plan: Fault, result: ChaosResult, probe: WriteProbe,
                 admin_token: str, minority_prefix: str) -> None:
        self.mesh, self.plan, self.result, self.probe = mesh, plan, result, probe
        self.admin_token, self.minority_prefix = admin_token, minority_prefix
        self.nodes: list[NodeLayout] = []
        self.lifted = threading.Event()
        self.injected = threading.Event()
        self.minority: list[WriteProbe] = []
        self.t0 = 0.0
        self.lock = threading.Lock()
        self.record: Callable[[Event], None] = lambda e: None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def hook(self, t0: float, record: Callable[[Event], None]) -> None:
        self.t0, self.record = t0, record
        self.probe.start(t0)
        for at, step in self.plan.steps():
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            try:
                if step == "inject":
                    self.inject()
                else:
                    self.lift()
            except VaultmeshError as err:
                self.result.notes.append(f"{step} failed: {err}")
                self.injected.set()

    def inject(self) -> None:
        plan, mesh = self.plan, self.mesh
        leader = inj.leader(mesh)
        self.result.leader_before = leader.name if leader else None
        if plan.fault == "kill-leader":
            if leader is None:
                raise VaultmeshError("no leader to kill")
            self.nodes = [leader]
            done = inj.signal_nodes(self.nodes, signal.SIGKILL)
        elif plan.fault == "kill-node":
            self.nodes = [inj.pick_standby(mesh, leader, plan.target)]
            done = inj.signal_nodes(self.nodes, signal.SIGKILL)
        elif plan.fault == "lose-quorum":
            if leader is None:
                raise VaultmeshError("no leader")
            self.nodes = [leader, inj.pick_standby(mesh, leader, None)]
            done = inj.signal_nodes(self.nodes, signal.SIGKILL)
        elif plan.fault == "stop-zone":
            zone = plan.target or (leader.zone if leader else mesh.layout.nodes[0].zone)
            self.nodes = inj.zone_of(mesh, zone)
            done = inj.signal_nodes(self.nodes, signal.SIGKILL if plan.signal == "kill" else signal.SIGSTOP)
        elif plan.fault == "partition-zone":
            from vaultmesh.runtime import netns

            zone = plan.target or (leader.zone if leader else mesh.layout.nodes[0].zone)
            self.nodes = inj.zone_of(mesh, zone)
            netns.cut(mesh.layout, [n.name for n in self.nodes])
            done = inj.Injected(tuple(n.name for n in self.nodes),
                                f"zone {zone} ({', '.join(n.name for n in self.nodes)}) cut off from the other nodes")
            for n in self.nodes:
                p = WriteProbe(n.api_addr, str(mesh.paths.ca_cert), self.admin_token,
                               f"{self.minority_prefix}/{n.name}", interval=0.2, timeout=2.0)
                p.start(self.t0)
                self.minority.append(p)
        else:  # pragma: no cover - checked by the plan
            raise VaultmeshError(plan.fault)
        self.result.t_inject = self.now()
        self.result.hit, self.result.detail = done.nodes, done.detail
        self.record(Event(self.result.t_inject, plan.fault, done.detail))
        self.injected.set()

    def lift(self) -> None:
        with self.lock:
            if self.lifted.is_set() or not self.nodes:
                return
            self.lifted.set()
            plan, mesh = self.plan, self.mesh
            self.result.t_lift = self.now()
            if plan.kills:
                self.record(Event(self.now(), "vaultmesh up", f"restarting {', '.join(n.name for n in self.nodes)}"))
                self.result.heal_up_s = inj.heal_with_up(mesh.paths.root, timeout=HEAL_TIMEOUT)
                self.record(Event(self.now(), "up returned", f"after {self.result.heal_up_s:.1f} s"))
            elif plan.fault == "stop-zone":
                inj.resume_nodes(self.nodes)
                self.record(Event(self.now(), "SIGCONT", ", ".join(n.name for n in self.nodes)))
            elif plan.fault == "partition-zone":
                from vaultmesh.runtime import netns

                for p in self.minority:
                    p.stop()
                netns.mend(mesh.layout, [n.name for n in self.nodes])
                self.record(Event(self.now(), "links mended", ", ".join(n.name for n in self.nodes)))


def run_chaos(mesh: m.Mesh, plan: Fault, config: BenchConfig, *, progress: ProgressFn | None = None) -> ChaosResult:
    """Run ``config`` against ``mesh`` with ``plan``'s fault; heal; verify; return the figures."""
    config.check()
    plan.check(config.schedule_span)
    if plan.needs_netns and all(getattr(n, "netns", None) is None for n in mesh.layout.nodes):
        raise VaultmeshError(f"{plan.fault} needs nodes on separate hosts",
                             hint="create the mesh with `runtime: netns` in its mesh file (root and iproute2)")
    if plan.loses_quorum and plan.lift_after is None:
        plan = Fault(**{**plan.__dict__, "lift_after": 5.0})
    admin = admin_client(mesh)
    targets = setup_targets(mesh, client=admin)
    run_id = f"{int(time.time() * 1000):x}"
    prefix = f"{targets.chaos_mount}/{run_id}"
    probe = WriteProbe(mesh.layout.entry_addr, str(mesh.paths.ca_cert), str(admin.token), prefix)
    dummy = BenchResult(config, [])
    result = ChaosResult(plan, dummy, heal_how=plan.heal_how)
    fault = _Injector(mesh, plan, result, probe, str(admin.token), f"{prefix}-minority")
    try:
        result.bench = bench_mesh(mesh, config, hooks=[fault.hook], progress=progress, targets=targets)
    finally:
        if fault.nodes and not fault.lifted.is_set():
            try:
                fault.lift()
            except VaultmeshError as err:
                result.notes.append(f"lifting the fault failed: {err}")
            result.bench.events.append(Event(fault.now(), "lifted after the load"))
    if inj.wait_healthy(mesh.paths.root, timeout=HEAL_TIMEOUT) is not None:
        if result.t_lift is not None:
            result.healthy_after_s = time.monotonic() - (fault.t0 + result.t_lift)
        time.sleep(0.5)  # a few probe writes on the healed mesh
    probe.stop()
    for p in fault.minority:
        p.stop()
    result.probe = probe.attempts
    if result.t_inject is not None:
        result.recovery = recovery(probe.attempts, result.t_inject)
    acked = probe.acked
    result.acked = len(acked)
    admin = admin_client(mesh)
    found = readable(admin, mesh.layout.entry_addr, prefix, acked)
    result.lost = lost_writes(acked, found)
    if fault.minority:
        result.minority_attempts = sum(len(p.attempts) for p in fault.minority)
        result.minority_acked = sum(len(p.acked) for p in fault.minority)
    after = inj.leader(mesh)
    result.leader_after = after.name if after else None
    try:
        forget(admin, mesh.layout.entry_addr, prefix)  # this run's write log: nothing of it outlives the run
    except EngineError as err:
        result.notes.append(f"the write log below {prefix}/ could not be deleted: {err}")
    admin.close()
    result.bench.events.sort(key=lambda e: e.t)
    return result


def _s(v: float | None, unit: str = "s") -> str:
    return "never" if v is None else f"{v:.2f} {unit}"


def render_chaos(result: ChaosResult) -> str:
    plan, r = result.plan, result.recovery
    lines = [f"fault: {plan.fault}: {result.detail or 'not injected'}"
             + (f" at {result.t_inject:.2f} s" if result.t_inject is not None else ""),
             f"leader before: {result.leader_before or '?'}, after: {result.leader_after or '?'}"]
    if r is not None:
        if plan.loses_quorum:
            lines.append(f"writes: OUTAGE of {r.outage_s:.2f} s (no acknowledged write), {r.failed} probe writes "
                         f"failed; {QUORUM_RECOVERY}")
            if result.t_lift is not None and r.recovery_s is not None:
                lines.append(f"writes came back {r.recovery_s - (result.t_lift - (result.t_inject or 0)):.2f} s "
                             "after `vaultmesh up` began")
        else:
            lines.append(f"writes through the entry succeed again after {_s(r.recovery_s)} "
                         f"(longest gap between acknowledged writes {r.outage_s:.2f} s, {r.failed} probe writes "
                         "failed)")
    lines.append(f"client-visible errors (workload path, with retries): {result.client_errors}")
    lines.append(f"acknowledged writes: {result.acked}, lost: {len(result.lost)}"
                 + (f" (first lost: {result.lost[:5]})" if result.lost else ""))
    if result.minority_attempts is not None:
        lines.append(f"partitioned minority: {result.minority_acked} of {result.minority_attempts} writes "
                     "acknowledged" + (" (it refused them all)" if not result.minority_acked else " (SPLIT BRAIN)"))
    heal = f"healed: {result.heal_how}"
    if result.heal_up_s is not None:
        heal += f"; `up` took {result.heal_up_s:.1f} s"
    heal += f"; healthy {_s(result.healthy_after_s)} after the fault was lifted"
    lines.append(heal)
    lines += [f"note: {n}" for n in result.notes]
    lines.append("verdict: " + ("PASS" if result.passed else "FAIL"))
    return "\n".join(lines)


def render_full(result: ChaosResult) -> str:
    return render_text(result.bench) + "\n\n" + render_chaos(result)


def summary_row(result: ChaosResult) -> dict[str, Any]:
    """One row of the figures table."""
    r = result.recovery
    o = overall(result.bench)
    return {"fault": result.plan.fault, "recovery_s": r.recovery_s if r else None,
            "outage_s": r.outage_s if r else None, "client_errors": result.client_errors,
            "acked": result.acked, "lost": len(result.lost), "minority_acked": result.minority_acked,
            "healthy_after_s": result.healthy_after_s, "heal": result.heal_how,
            "workload_p99": o.p99, "passed": result.passed}
