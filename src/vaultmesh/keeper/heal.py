"""The keeper's healing: ``up``'s own cycle (observe -> ``decide`` -> execute), run twice a second with nobody
at the keyboard.

One heal cycle::

    backing off?           after a failed restart: 1, 2, 4 ... 60 s (``backoff_seconds``), said in ``status``
    Executor.observe       the same view as ``up`` (no test write, no pid file written back)
    healthy?               forget this episode's facts (what was started and restarted)
    decide(view)           the same pure function as ``up``
    Fail                   a process the keeper started died again: back off, say why
    acting steps           (``acting``) under the state lock, never waited for: when ``up``, ``down``, ``apply``
                           or a restore holds it, the keeper skips its turn
    nothing to do          waiting: a node that runs but does not answer (SIGSTOP, a slow disk) is left alone;
                           only a process that is gone is started again

The issuer is restarted the way ``up`` starts it; the entry through ``decide`` (``StartEntry``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vaultmesh.errors import StateError, VaultmeshError
from vaultmesh.lifecycle import decide as d
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import Executor
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import resolve_engine

EVERY = 0.5
"""Seconds between two heal cycles: a SIGKILLed node is seen within half a second."""
BACKOFF_MAX = 60.0

ACTING = (d.StartSealNode, d.StartNode, d.StartEntry, d.Unseal, d.Restart, d.Login, d.MarkInitialized)


def _quiet(_: str) -> None:
    pass


def backoff_seconds(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: 1, 2, 4, ... at most 60."""
    return min(BACKOFF_MAX, 2.0 ** max(0, failures - 1))


def acting(decision: d.Decision) -> tuple[d.Step, ...]:
    """The steps of a decision that change something (not Wait, Ready or Fail)."""
    return tuple(s for s in decision.steps if isinstance(s, ACTING))


def failure(decision: d.Decision) -> d.Fail | None:
    return next((s for s in decision.steps if isinstance(s, d.Fail)), None)


@dataclass
class Healer:
    """The healer's memory between cycles."""

    mesh: m.Mesh
    log: Callable[[str], None]
    executor: Executor | None = None
    failures: int = 0
    until: float = float("-inf")
    """No action before this monotonic time (backing off)."""
    restarts: int = 0
    """Processes (re)started since the keeper started."""
    backing_off: str | None = None
    """Why the healer is backing off (None: it is not)."""
    last: str | None = None
    """The last thing it did, one sentence."""
    done: list[str] = field(default_factory=list)
    """Sentences of this cycle (for the keeper's record)."""

    def ensure_executor(self) -> Executor:
        if self.executor is None:
            engine = resolve_engine(self.mesh.engine).path
            self.executor = Executor(self.mesh, engine, m.entry_wanted(self.mesh.spec), _quiet)
        return self.executor

    def forget(self) -> None:
        """A healthy mesh: this episode's facts (started, restarted, errors) no longer hold."""
        if self.executor is not None:
            self.executor.started.clear()
            self.executor.restarted.clear()
            self.executor.errors.clear()
        self.failures, self.backing_off = 0, None


def heal_cycle(healer: Healer, *, now: Callable[[], float] = time.monotonic) -> list[str]:
    """One cycle; returns what was done, one sentence each (empty: nothing)."""
    healer.done = []
    if now() < healer.until:
        return []
    ex = healer.ensure_executor()
    mesh = healer.mesh
    issuer_missing = processes.issuer_process(mesh.paths).pid() is None
    view = ex.observe(probe_write=False, adopt=False)
    if view.healthy and not issuer_missing:
        if ex.started or ex.restarted or healer.backing_off:
            healer.log("the mesh is healthy again")
        healer.forget()
        return []
    decision = d.decide(view, shamir=mesh.spec.seal.type == "shamir", recorded_initialized=mesh.initialized,
                        entry_wanted=ex.want_entry)
    failed = failure(decision)
    if failed is not None:
        healer.failures += 1
        wait = backoff_seconds(healer.failures)
        healer.until = now() + wait
        healer.backing_off = (f"{failed.node or 'the mesh'} {failed.reason} (failure {healer.failures} in a row); "
                              f"next try in {wait:g} s")
        healer.log(f"backing off: {healer.backing_off}")
        ex.started.clear()  # the next try starts it again
        return [f"backing off: {healer.backing_off}"]
    steps = acting(decision)
    if not steps and not issuer_missing:
        return []  # waiting: nothing the keeper should do (a frozen node is not a dead one)
    try:
        with m.locked(mesh.paths.root, wait=0):
            if issuer_missing and processes.issuer_process(mesh.paths).pid() is None:
                cert, key = m.ensure_identity_cert(mesh)
                pid = processes.start_issuer(mesh.paths, cert, key, mesh.spec.issuer_address)
                healer.done.append(f"restarted the workload identity issuer (pid {pid})")
                healer.restarts += 1
            restarts = [s.name for s in steps if isinstance(s, d.Restart)]
            if restarts:
                healer.done.append(ex.restart(restarts))
                healer.restarts += len(restarts)
            for step in steps:
                if isinstance(step, d.Restart):
                    continue
                if isinstance(step, d.Login) and ex.client.token:
                    ex.client.token = None  # the token it had no longer works: log in afresh
                    ex.client.token = m.admin_token(mesh, ex.client, fresh=True)
                    healer.done.append("logged in as the admin afresh")
                    continue
                sentence = ex.perform(step)
                if isinstance(step, d.StartNode | d.StartSealNode | d.StartEntry):
                    healer.restarts += 1
                if sentence:
                    healer.done.append(sentence)
            healer.mesh = ex.mesh  # MarkInitialized gives a new record
    except StateError:
        return []  # another command holds the lock: its turn, not ours
    except VaultmeshError as err:
        healer.failures += 1
        wait = backoff_seconds(healer.failures)
        healer.until = now() + wait
        healer.backing_off = f"{str(err).splitlines()[0]} (failure {healer.failures} in a row); next try in {wait:g} s"
        healer.log(f"backing off: {healer.backing_off}")
        return [f"backing off: {healer.backing_off}"]
    for sentence in healer.done:
        healer.log(sentence)
    if healer.done:
        healer.last = healer.done[-1]
    return list(healer.done)
