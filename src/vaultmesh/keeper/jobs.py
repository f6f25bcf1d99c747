"""The keeper's scheduled jobs: Raft snapshots (``snapshots.every``) and restore drills (``drills.every``).

``next_run`` is pure: a job runs ``every`` seconds after its last success, a failed one is retried after
``min(every, RETRY)`` seconds, and a keeper that starts picks up the schedule where the last snapshot left it
(a mesh whose newest snapshot is older than ``every`` gets one at once).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vaultmesh.errors import VaultmeshError
from vaultmesh.lifecycle import mesh as m

RETRY = 60.0
"""Seconds before a failed scheduled job is tried again (at most its own interval)."""


def next_run(every: float | None, *, last_ok: float | None, last_failed: float | None, started: float) -> float:
    """When the job runs next (Unix seconds); inf when it is not scheduled."""
    if every is None:
        return float("inf")
    if last_failed is not None and (last_ok is None or last_failed > last_ok):
        return last_failed + min(every, RETRY)
    return (last_ok if last_ok is not None else started) + every


@dataclass
class Job:
    """One scheduled job's memory: when it last succeeded and failed, and its record for ``status``."""

    every: float | None
    started: float
    last_ok: float | None = None
    last_failed: float | None = None
    failures: int = 0
    record: dict[str, Any] | None = None

    def due(self, now: float) -> bool:
        return now >= next_run(self.every, last_ok=self.last_ok, last_failed=self.last_failed, started=self.started)


def snapshot_job(mesh: m.Mesh, *, now: Callable[[], float] = time.time) -> Job:
    """The snapshot job, its last success taken from the newest snapshot on disk."""
    from vaultmesh.snapshot import save

    job = Job(mesh.spec.snapshots.every, now())
    try:
        newest = save.listing(mesh)
    except (VaultmeshError, OSError):
        newest = []
    if newest:
        job.last_ok = newest[-1].time
    return job


def take_snapshot(mesh: m.Mesh, job: Job, log: Callable[[str], None], *,
                  now: Callable[[], float] = time.time) -> None:
    """Take, ship and prune one scheduled snapshot; record the outcome on ``job``; never raise for a failure."""
    from vaultmesh.snapshot import save

    t = now()
    try:
        manifest, sentences = save.take_scheduled(mesh)
    except VaultmeshError as err:
        job.last_failed, job.failures = t, job.failures + 1
        reason = str(err).splitlines()[0]
        job.record = {**(job.record or {}), "failures": job.failures, "error": reason, "failed_at": t}
        log(f"scheduled snapshot failed (retried in {min(job.every or RETRY, RETRY):g} s): {reason}")
        return
    job.last_ok = t
    job.record = {"time": manifest.time, "path": str(manifest.path), "size": manifest.size,
                  "index": manifest.index, "failures": job.failures, "error": None}
    for sentence in sentences:
        log(sentence)


def run_drill(mesh: m.Mesh, job: Job, log: Callable[[str], None], *, now: Callable[[], float] = time.time) -> None:
    """Run one scheduled restore drill; record its report on ``job``; never raise for a failure."""
    from vaultmesh.dr import drill

    t = now()
    try:
        report = drill.run_drill(mesh.paths.root)
    except VaultmeshError as err:
        job.last_failed, job.failures = t, job.failures + 1
        job.record = {"time": t, "ok": False, "error": str(err).splitlines()[0]}
        log(f"scheduled drill could not run: {job.record['error']}")
        return
    failed = [c for c in report.checks if c.ok is False]
    job.record = {"time": now(), "ok": report.ok, "rto_s": report.rto_s, "rpo_s": report.rpo_s,
                  "failed": [f"{c.name}: {c.detail}" for c in failed]}
    job.last_ok = t  # a drill that ran is done until its next turn, passed or not (its record says which)
    if report.ok:
        log(f"drill passed: RTO {report.rto_s:.1f} s, RPO {report.rpo_s:.0f} s")
    else:
        job.failures += 1
        log(f"DRILL FAILED: {'; '.join(job.record['failed'])}")


CERT_CHECK_EVERY = 300.0
"""Seconds between two looks at the mesh's certificates (a handshake to each listener): the expiry gauge is
at most this old, and a leaf is renewed at most this long after it passes two thirds of its life (a 90-day
certificate: day 60 of 90), which leaves a month of margin."""


@dataclass
class CertWatch:
    """The certificate job's memory: its schedule (``job``) and the last expiry of each certificate, for the
    ``vaultmesh_certificate_expiry_timestamp_seconds`` gauge."""

    job: Job
    expiry: dict[str, float]


def cert_watch(*, every: float = CERT_CHECK_EVERY, now: Callable[[], float] = time.time) -> CertWatch:
    """A certificate job due at once (the gauge has values from the keeper's first minute)."""
    return CertWatch(Job(every, now() - every), {})


def check_certificates(mesh: m.Mesh, watch: CertWatch, log: Callable[[str], None], *,
                       now: Callable[[], float] = time.time) -> list[str]:
    """Look at every certificate (what each listener serves), refresh the expiry gauge, and renew the leaves
    past two thirds of their life (``certs.rotate``, under the state lock, never waited for: a busy mesh is
    tried again at the next turn). Returns the names renewed; never raises for a failure."""
    from vaultmesh.certs import probe, rotate
    from vaultmesh.certs.report import due_targets

    job = watch.job
    t = now()
    try:
        targets = probe.mesh_targets(mesh)
        rows = probe.observe(mesh, targets)
        watch.expiry = {r.name: r.facts.not_after.timestamp() for r in rows if r.facts is not None}
        files = {x.name: probe.file_facts(x.cert_file) for x in targets if x.leaf}
        names = [x.name for x in due_targets(targets, rows, files, dt.datetime.fromtimestamp(t, dt.UTC))]
        if names:
            with m.locked(mesh.paths.root, wait=0):
                done = rotate.rotate(mesh, only=names, progress=log)
            fresh = probe.observe(mesh, targets)
            watch.expiry = {r.name: r.facts.not_after.timestamp() for r in fresh if r.facts is not None}
            log(f"renewed {len(done)} certificate{'s' if len(done) != 1 else ''} past two thirds of their "
                f"life: {', '.join(x.name for x in done)}")
        else:
            done = []
    except (VaultmeshError, OSError) as err:
        job.last_failed, job.failures = t, job.failures + 1
        reason = str(err).splitlines()[0]
        job.record = {**(job.record or {}), "failures": job.failures, "error": reason, "failed_at": t}
        log(f"certificate renewal failed (retried in {min(job.every or RETRY, RETRY):g} s): {reason}")
        return []
    job.last_ok = t
    job.record = {"time": t, "renewed": [x.name for x in done], "failures": job.failures, "error": None}
    return [x.name for x in done]
