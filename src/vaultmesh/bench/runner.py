"""The load generator: worker processes, each with threads and kept-alive connections, driven by a schedule.

Why it is built this way: on this 2-core machine a naive asyncio+httpx client reached ~1/5 of what ``wrk`` got
from one node, so the figures measured the client. Here every worker process (2 by default) parses the signing
key once, mints tokens with the parsed key (the raw ceiling mode mints them all before the clock starts), gives
each thread its own client with one kept-alive TLS connection per address, and records plain tuples.

Open loop (rollout, steady, or any scenario given a rate): each job's start time is fixed in advance; threads
take the earliest due job; latency is measured from the scheduled time. A workload that holds its secrets does
not occupy a thread: its revocation is put back on the agenda, due after the hold.
Closed loop (single-op scenarios without a rate): each thread sends back to back, for a count or a duration.

Every run is bounded: at most ``MAX_COUNT`` jobs, and a hard deadline (schedule + hold + grace) after which
jobs not started are abandoned (counted), held workloads are revoked at once, and stragglers are terminated.
"""

from __future__ import annotations

import heapq
import math
import multiprocessing as mp
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vaultmesh.bench import schedule
from vaultmesh.bench.model import WORKLOAD, BenchConfig, BenchResult, Event, Sample, check_loopback
from vaultmesh.bench.ops import Holding, PathOps, RawOps, identity_token
from vaultmesh.bench.targets import (
    Targets,
    admin_client,
    counts,
    load_signer,
    revoke_prefix,
    setup_targets,
    wait_for_baseline,
)
from vaultmesh.errors import VaultmeshError

Hook = Callable[[float, Callable[[Event], None]], None]
"""Called in a thread of the parent once the clock starts: ``hook(t0, record_event)`` (chaos faults)."""
ProgressFn = Callable[[int, int, float], None]
"""``progress(done, total, elapsed)``; total is 0 when unknown (closed loop by duration)."""

START_DELAY = 0.3
"""Seconds between "all workers ready" and t0, so every worker sees the same t0 before its first job."""
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class WorkerShare:
    index: int
    processes: int
    config: BenchConfig
    targets: Targets
    jobs: list[tuple[int, float]] = field(default_factory=list)
    budget: int = 0
    threads: int = 1


HOLDING = ("revoke", "keep")
"""Agenda items of a workload that holds secrets: never abandoned, or its token and leases would be left."""

HEARTBEAT = 5.0
"""A held workload's session is stepped this often (its book renews the token: the heartbeat the mesh's reaper
reads, as ``vaultmesh run`` does), so a hold longer than the reaper's threshold is not taken for abandoned."""


def _hold(agenda: _Agenda, now: float, release: float, seq: int, held: Holding) -> None:
    """Put a held workload back on the agenda: its revocation at ``release``, or its next heartbeat first."""
    if held.session is not None and release - now > HEARTBEAT:
        agenda.push(now + HEARTBEAT, seq, "keep", (held, release))
    else:
        agenda.push(release, seq, "revoke", held)


class _Agenda:
    """A worker's due jobs, earliest first; shared by its threads."""

    def __init__(self, jobs: Iterable[tuple[int, float]], kind: str) -> None:
        self.heap: list[tuple[float, int, str, Any]] = [(t, seq, kind, None) for seq, t in jobs]
        heapq.heapify(self.heap)
        self.outstanding = len(self.heap)
        self.cond = threading.Condition()
        self.abandoned = 0

    def push(self, due: float, seq: int, kind: str, payload: Any) -> None:
        with self.cond:
            heapq.heappush(self.heap, (due, seq, kind, payload))
            self.cond.notify()

    def finish(self) -> None:
        with self.cond:
            self.outstanding -= 1
            self.cond.notify_all()

    def take(self, clock: Callable[[], float], hard_end: float) -> tuple[float, int, str, Any] | None:
        """The next due job (waiting for it), or None when the worker's work is done."""
        with self.cond:
            while True:
                if self.outstanding <= 0:
                    return None
                now = clock()
                if self.heap:
                    due, _seq, kind, _payload = self.heap[0]
                    if now > hard_end and kind not in HOLDING:
                        heapq.heappop(self.heap)
                        self.abandoned += 1
                        self.outstanding -= 1
                        continue
                    if due <= now or (now > hard_end and kind in HOLDING):
                        return heapq.heappop(self.heap)
                    self.cond.wait(min(due - now, 0.5))
                else:
                    self.cond.wait(0.5)


def _worker_main(plan: WorkerShare, ready_q: Any, go: Any, t0_val: Any, done_val: Any, result_q: Any) -> None:
    cfg, t = plan.config, plan.targets
    base = [0.0]

    def clock() -> float:
        return time.monotonic() - base[0]

    def internal_row(seq: int) -> tuple[Any, ...]:
        """A sample for a bug in this worker (the traceback's end as its error), so it is counted, not lost."""
        now = clock()
        return ("internal", seq, now, now, now, traceback.format_exc(limit=3)[-200:])

    op = cfg.job_op
    try:
        signer = load_signer(t)
        ops: list[PathOps | RawOps] = []
        if cfg.raw:
            # every identity token is minted here, before the clock starts (open loop: one per job, in job
            # order; closed loop: a pool used in turn)
            n = len(plan.jobs) if cfg.open_loop else min(plan.budget or 2000, 2000)
            pool = [identity_token(signer, t, plan.index + i * plan.processes) for i in range(max(n, 1))]
            for _ in range(plan.threads):
                ops.append(RawOps(t, pool, clock=clock))
        else:
            for _ in range(plan.threads):
                ops.append(PathOps(t, signer, clock=clock, retry_deadline=cfg.retry_deadline))
        for o in ops:
            o.prepare(op)
    except Exception as err:  # reported to the parent as a setup failure
        ready_q.put((plan.index, f"{type(err).__name__}: {err}"))
        return
    ready_q.put((plan.index, None))
    if not go.wait(READY_TIMEOUT + 30):
        for o in ops:
            o.close()
        return
    base[0] = t0_val.value
    rows: list[list[tuple[Any, ...]]] = [[] for _ in ops]
    done_lock = threading.Lock()

    def bump() -> None:
        with done_lock:
            done_val.value += 1

    hard_end = cfg.schedule_span + cfg.hold + cfg.grace
    agenda = _Agenda(plan.jobs, "start" if op == WORKLOAD else "op") if cfg.open_loop else None
    seq_lock = threading.Lock()
    counter = [0]
    raw_index = {seq: i for i, (seq, _) in enumerate(plan.jobs)} if cfg.raw and cfg.open_loop else {}

    def thread_main(i: int) -> None:
        o = ops[i]
        out = rows[i]

        def rec(phase: str, t_sched: float, t_start: float, t_end: float, error: str | None) -> None:
            out.append((phase, seq_now[0], t_sched, t_start, t_end, error))

        seq_now = [0]
        try:
            if agenda is not None:
                while (item := agenda.take(clock, hard_end)) is not None:
                    due, seq, kind, payload = item
                    seq_now[0] = seq
                    if kind == "start":
                        held = o.start(raw_index.get(seq, seq), due, rec) if cfg.raw else o.start(seq, due, rec)
                        if held is not None:
                            held.seq = seq
                            now = clock()
                            _hold(agenda, now, now + cfg.hold, seq, held)
                        else:
                            bump()
                            agenda.finish()
                    elif kind == "keep":
                        held, release = payload
                        if held.session is not None:
                            held.session.step()  # renews the token when its heartbeat is due
                        _hold(agenda, clock(), release, seq, held)
                    elif kind == "revoke":
                        assert isinstance(payload, Holding)
                        o.revoke(payload, due, rec)
                        bump()
                        agenda.finish()
                    else:
                        o.single(op, raw_index.get(seq, seq) if cfg.raw else seq, due, rec)
                        bump()
                        agenda.finish()
            else:
                while True:
                    with seq_lock:
                        n = counter[0]
                        counter[0] += 1
                    if plan.budget and n >= plan.budget:
                        break
                    now = clock()
                    if cfg.duration and now >= cfg.duration:
                        break
                    seq = plan.index + n * plan.processes
                    seq_now[0] = seq
                    o.single(op, seq, now, rec)
                    bump()
        except Exception:  # a bug in a thread must not hang the run
            out.append(internal_row(seq_now[0]))

    threads = [threading.Thread(target=thread_main, args=(i,), daemon=True) for i in range(len(ops))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(hard_end + 60)
    closing: list[tuple[Any, ...]] = []
    for o in ops:
        try:
            o.close()  # ops.close catches the refusals it expects itself
        except Exception:  # a bug: recorded, the run's samples still go back
            closing.append(internal_row(0))
    flat = [r for out in [*rows, closing] for r in out]
    result_q.put((plan.index, flat, agenda.abandoned if agenda else 0))


def share_work(config: BenchConfig, targets: Targets) -> list[WorkerShare]:
    """Deal the schedule (open loop) or the request budget (closed loop) to the worker processes. Pure."""
    p = config.processes
    threads = max(1, math.ceil(config.concurrency / p))
    if config.open_loop:
        if config.scenario == "rollout":
            offsets = schedule.rollout_offsets(config.count, config.window)
        else:
            offsets = schedule.steady_offsets(config.rate, config.duration, limit=config.count)
        parts = schedule.split(offsets, p)
        return [WorkerShare(i, p, config, targets, jobs=parts[i], threads=threads) for i in range(p)]
    budgets = schedule.split_count(config.count, p) if config.count else [0] * p
    return [WorkerShare(i, p, config, targets, budget=budgets[i], threads=threads) for i in range(p)]


def run_load(targets: Targets, config: BenchConfig, *, hooks: Sequence[Hook] = (),
             progress: ProgressFn | None = None, allowed_hosts: Iterable[str] = ()) -> BenchResult:
    """Run ``config`` against ``targets`` with worker processes; return every sample and event."""
    config.check()
    check_loopback([targets.entry, *targets.nodes], allowed_hosts)
    if config.job_op == "db-creds" and not targets.database:
        raise VaultmeshError("db-creds needs the database target, which this mesh does not have")
    plans = share_work(config, targets)
    total = config.expected_jobs
    ctx = mp.get_context("spawn")
    ready_q, result_q = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    t0_val = ctx.Value("d", 0.0, lock=False)
    done_vals = [ctx.Value("q", 0, lock=False) for _ in plans]
    procs = [ctx.Process(target=_worker_main, args=(plan, ready_q, go, t0_val, done_vals[i], result_q),
                         name=f"vaultmesh-bench-{i}", daemon=True) for i, plan in enumerate(plans)]
    for proc in procs:
        proc.start()
    events: list[Event] = []
    ev_lock = threading.Lock()
    results: dict[int, tuple[list[tuple[Any, ...]], int]] = {}
    hook_threads: list[threading.Thread] = []
    try:
        ready: dict[int, str | None] = {}
        deadline = time.monotonic() + READY_TIMEOUT
        while len(ready) < len(procs):
            try:
                idx, err = ready_q.get(timeout=0.5)
                ready[idx] = err
            except queue.Empty:
                if time.monotonic() > deadline or not any(p.is_alive() for p in procs):
                    raise VaultmeshError("bench workers did not get ready in time") from None
        failed = {i: e for i, e in ready.items() if e}
        if failed:
            raise VaultmeshError(f"bench worker setup failed: {next(iter(failed.values()))}")
        t0 = time.monotonic() + START_DELAY
        t0_val.value = t0
        go.set()

        def record(ev: Event) -> None:
            with ev_lock:
                events.append(ev)

        for hook in hooks:
            th = threading.Thread(target=hook, args=(t0, record), daemon=True)
            th.start()
            hook_threads.append(th)
        hard = t0 + config.schedule_span + config.hold + config.grace + 60
        while len(results) < len(procs):
            try:
                idx, rows, abandoned = result_q.get(timeout=0.2)
                results[idx] = (rows, abandoned)
            except queue.Empty:
                if time.monotonic() > hard:
                    break
                if not any(p.is_alive() for p in procs) and result_q.empty():
                    break
            if progress:
                progress(sum(v.value for v in done_vals), total, max(0.0, time.monotonic() - t0))
        if progress:
            progress(sum(v.value for v in done_vals), total, max(0.0, time.monotonic() - t0))
    finally:
        go.set()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    for th in hook_threads:
        th.join(config.schedule_span + config.hold + 120)
    samples = [Sample(str(r[0]), int(r[1]), float(r[2]), float(r[3]), float(r[4]), r[5])
               for rows, _ in results.values() for r in rows]
    samples.sort(key=lambda s: (s.t_start, s.seq))
    missing = len(procs) - len(results)
    notes = [f"{missing} worker process(es) did not report: their samples are missing"] if missing else []
    wall = max((s.t_end for s in samples), default=0.0)
    return BenchResult(config, samples, sorted(events, key=lambda e: e.t), wall=wall, notes=notes,
                       abandoned=sum(a for _, a in results.values()))


def settle_time(mesh: Any, floor: float = 10.0) -> float:
    """How long the counts may take to come back: the reap interval when the keeper reaps (a login whose answer
    a fault lost is revoked only then), else ``floor``."""
    return max(floor, mesh.spec.keeper.reap_within or 0.0)


def bench_mesh(mesh: Any, config: BenchConfig, *, hooks: Sequence[Hook] = (), progress: ProgressFn | None = None,
               targets: Targets | None = None, settle_timeout: float | None = None) -> BenchResult:
    """Set up the targets, take the token/lease baseline, run, and check the counts return to it (within
    ``settle_timeout``, by default ``settle_time``: the verdict fails when they do not).

    Rollout and steady workloads revoke what they got themselves; the counts are read without any help. The
    single-operation scenarios leave tokens (jwt-login) or leases (db-creds) by design; those are revoked by
    prefix afterwards, and the report says so.
    """
    config.check()
    admin = admin_client(mesh)
    targets = targets or setup_targets(mesh, client=admin)
    before = counts(admin)
    allowed = [n.host for n in mesh.layout.nodes]
    result = run_load(targets, config, hooks=hooks, progress=progress, allowed_hosts=allowed)
    result.before = before
    op = config.job_op
    if op in ("jwt-login", "db-creds"):
        what, prefix = ("tokens", targets.login_path) if op == "jwt-login" else ("leases", targets.creds_path)
        why_not = revoke_prefix(admin, prefix)
        result.cleanup = f"{what} of {prefix} revoked by prefix after the run" if why_not is None else \
            f"{what} of {prefix} NOT revoked by prefix after the run: {why_not}"
    after, secs = wait_for_baseline(admin, before, timeout=settle_time(mesh) if settle_timeout is None
                                    else settle_timeout)
    result.after, result.returned_after = after, secs
    admin.close()
    return result
