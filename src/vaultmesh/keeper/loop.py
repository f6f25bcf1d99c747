"""The keeper (the edge): observe, decide with pure functions, act, record what was done.

Three things run in the keeper process: healing (``keeper.heal``, its own thread, twice a second: a dead node is
restarted, a sealed one unsealed, the entry and the issuer restarted), the reaper below (every
``reaper.every`` seconds), and the scheduled jobs (``keeper.jobs``: snapshots, drills, and every 5 minutes the
certificates: each listener's expiry for the gauge, and renewing a leaf past two thirds of its life). What they did is
rewritten to ``keeper/status.json`` on every change and served on ``/metrics`` (``keeper.metrics``), and on the
same listener the dashboard page (``keeper.page``).

One cycle of the reaper::

    admin token            the mesh's own (lifecycle.mesh.admin_token: cached, 0600)
    GET  sys/auth          which mounts are JWT/OIDC ("*" in reaper.roles)
    LIST sys/leases/lookup/auth/<mount>/login/ + lookup each     mounts watched as a whole: the login leases
    silent_leases(...)     pure: which login leases nobody renews any more
    POST sys/leases/revoke                        each of them: its token, and so the token's leases
    LIST auth/token/accessors + lookup each       roles watched one by one: the token facts
    abandoned(...)         pure: which tokens nobody renews any more
    POST auth/token/revoke-accessor               each of them, and so its leases
    LIST sys/leases/lookup/<prefix>   per lease budget of the file last applied (reconcile/budgets.json):
    breaches(...)          pure: which budgets are exceeded; recorded and logged when that changes
    keeper/status.json     what was done (``KeeperStatus``), atomically

    POST sys/leases/tidy   on the active node, every cycle for ``stale_after`` seconds after a leader change or
                           a revocation: leases whose token is gone (a revocation an election cut short) are
                           revoked by OpenBao itself

Never ``auth/token/tidy``: run together with the lease tidy under a 20/s login load it revoked 2-4 of 200 fresh
logins here (403 on their first read); the lease tidy alone, 75 times under the same load, none. What it would
remove, the accessor of a deleted token, holds nothing and is not counted as a token.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.errors import EngineError, VaultmeshError
from vaultmesh.keeper import jobs, monitoring, page
from vaultmesh.keeper.heal import EVERY as HEAL_EVERY
from vaultmesh.keeper.heal import Healer, heal_cycle
from vaultmesh.keeper.metrics import reload_tls, serve_metrics
from vaultmesh.keeper.reaper import LeaseInfo, Revoke, abandoned, silent_leases, whole_mounts
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.keeper_process import KeeperStatus, read_status, write_status
from vaultmesh.lifecycle.status import dashboard_url
from vaultmesh.reconcile.budget import Budget, breaches, count_leases
from vaultmesh.reconcile.state import ReconcileState
from vaultmesh.runtime.local import free_ports
from vaultmesh.workload.reap import scan_tokens

RECENT = 20


@dataclass
class Reaper:
    """The reaper's memory between cycles."""

    leader: str | None = None
    tidy_until: float = float("-inf")
    healthy_since: float | None = None
    revoked: int = 0
    recent: list[str] = field(default_factory=list)
    last_error: str | None = None
    over_budget: list[str] = field(default_factory=list)
    cycle_at: float = 0.0

    def note(self, sentence: str) -> None:
        self.recent = [*self.recent, f"{time.strftime('%H:%M:%S')} {sentence}"][-RECENT:]


def namespaces(client: EngineClient) -> list[str]:
    """Every namespace's path, the root ("") first, then children (``team-a``, ``team-a/sub``)."""
    out, todo = [""], [""]
    while todo:
        parent = todo.pop()
        try:
            children = client.list("sys/namespaces", namespace=parent or None)
        except EngineError as err:
            if err.status not in (400, 404, 405):  # no namespaces (an engine without them)
                raise
            children = []
        for child in children:
            full = f"{parent}/{child.strip('/')}" if parent else child.strip("/")
            out.append(full)
            todo.append(full)
    return out


def jwt_mounts(client: EngineClient, namespace: str = "") -> set[str]:
    """The JWT/OIDC auth mounts of ``namespace``, by their path in it."""
    data = client.read("sys/auth", namespace=namespace or None) or {}
    mounts = data.get("data") if isinstance(data.get("data"), dict) else data
    return {path.strip("/") for path, info in (mounts or {}).items()
            if isinstance(info, dict) and info.get("type") in ("jwt", "oidc")}


def parse_time(text: object) -> float | None:
    """RFC 3339 with nanoseconds (``2026-12-02T14:48:14.170139443Z``) -> Unix seconds; None when absent."""
    if not isinstance(text, str) or not text:
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    frac, _, _ = frac.partition("+")
    try:
        stamp = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return stamp + (float(f"0.{frac}") if frac.isdigit() else 0.0)


def login_leases(client: EngineClient, mount: str, namespace: str = "") -> list[LeaseInfo]:
    """The login leases of ``auth/<mount>`` in ``namespace``; one that went meanwhile is skipped."""
    prefix = f"auth/{mount}/login/"
    ns = namespace or None
    out = []
    for key in client.list(f"sys/leases/lookup/{prefix}", namespace=ns):
        try:
            data = (client.write("sys/leases/lookup", {"lease_id": prefix + key}, namespace=ns) or {}
                    ).get("data") or {}
        except EngineError as err:
            if err.status == 400:
                continue  # gone since the list
            raise
        issued = parse_time(data.get("issue_time"))
        if issued is not None:
            out.append(LeaseInfo(prefix + key, issued, parse_time(data.get("last_renewal")),
                                 bool(data.get("renewable")), namespace))
    return out


def reap_cycle(mesh: m.Mesh, client: EngineClient, state: Reaper, *, now: Callable[[], float] = time.time,
               log: Callable[[str], None] = print) -> None:
    """One pass of the reaper; a mesh that does not answer ends the healthy streak (nothing is revoked)."""
    settings = mesh.spec.keeper.reaper
    try:
        client.token = m.admin_token(mesh, client)
        try:
            spaces = namespaces(client)
        except EngineError as err:
            if err.status != 403:
                raise
            client.token = m.admin_token(mesh, client, fresh=True)  # the cached token was revoked
            spaces = namespaces(client)
        # every JWT/OIDC mount of every namespace, by its full path (team-a/jwt) -> (namespace, mount)
        where = {(f"{ns}/{mount}" if ns else mount): (ns, mount) for ns in spaces for mount in jwt_mounts(client, ns)}
        mounts = {full for full, (ns, _) in where.items() if not ns}  # roles watched one by one: the root's
        leases = [lease for full in sorted(whole_mounts(settings.roles, where)) if full in where
                  for lease in login_leases(client, where[full][1], where[full][0])]
        tokens = scan_tokens(client) if any(p != "*" and not p.endswith("/*") for p in settings.roles) else []
        leader = str((client.read("sys/leader") or {}).get("leader_address") or "")
    except VaultmeshError as err:
        state.healthy_since, state.last_error = None, str(err).splitlines()[0]
        return
    t = now()
    state.healthy_since = state.healthy_since or t
    state.last_error = None
    revoked = 0
    due: list[Revoke] = silent_leases(leases, now=t, healthy_since=state.healthy_since,
                                      stale_after=settings.stale_after)
    due += abandoned(tokens, now=t, healthy_since=state.healthy_since, stale_after=settings.stale_after,
                     roles=settings.roles, jwt_mounts=mounts)
    for revoke in due:
        try:
            if revoke.lease:
                client.write("sys/leases/revoke", {"lease_id": revoke.accessor, "sync": True},
                             namespace=revoke.namespace or None)
            else:
                client.write("auth/token/revoke-accessor", {"accessor": revoke.accessor})
        except EngineError as err:
            if err.status != 400:  # 400: gone meanwhile
                state.last_error = f"revoking a {revoke.reason}: {'; '.join(err.errors)} ({err.status})"
                log(state.last_error)
                continue
        revoked += 1
        state.note(f"revoked the {revoke.reason}")
        log(f"revoked the {revoke.reason}")
    state.revoked += revoked
    if revoked or (state.leader is not None and leader != state.leader):
        state.tidy_until = t + settings.stale_after  # what was cut short shows up in the seconds after
    state.leader = leader
    if t <= state.tidy_until and leader in client.addrs:
        # on the active node: a standby answers 202, then fails in the background on its read-only storage
        try:
            client.request("POST", "sys/leases/tidy", {}, nodes=[leader])
        except VaultmeshError as err:
            state.last_error = f"sys/leases/tidy: {str(err).splitlines()[0]}"


def watch_budgets(client: EngineClient, state: Reaper, budgets: list[Budget],
                  log: Callable[[str], None] = print) -> None:
    """Count the leases of every budget; record (and log, when it changes) which are exceeded."""
    if not budgets:
        state.over_budget = []
        return
    try:
        counts = {b.key: count_leases(client, b) for b in budgets}
    except VaultmeshError as err:
        state.last_error = f"counting leases for the budgets: {str(err).splitlines()[0]}"
        return
    now_over = breaches(budgets, counts)
    for sentence in now_over:
        if sentence.split(" holds ")[0] not in {s.split(" holds ")[0] for s in state.over_budget}:
            state.note(f"over budget: {sentence}")
            log(f"over budget: {sentence}")
    state.over_budget = now_over


def serve(root: Path, *, stop: Callable[[], bool], sleep: Callable[[float], None] = time.sleep,
          log: Callable[[str], None] = print) -> None:
    """Heal (its own thread, every 0.5 s), reap, and run the scheduled jobs until ``stop()`` or until the state
    dir is gone (``destroy``). Every change is written to ``keeper/status.json`` and served on ``/metrics``."""
    mesh = m.open_mesh(root)
    client = mesh.client(retry=RetryPolicy(deadline=3.0))
    state = Reaper()
    healer = Healer(mesh, log)
    status = KeeperStatus(pid=os.getpid(), started=time.time())
    guard = threading.Lock()
    every = float(mesh.spec.keeper.reaper.every)
    snapshots = jobs.snapshot_job(mesh)
    drills = jobs.Job(mesh.spec.drills.every, time.time())
    certs = jobs.cert_watch()

    def record() -> KeeperStatus:
        nonlocal status
        with guard:
            status = replace(status, cycle_at=state.cycle_at, healthy_since=state.healthy_since,
                             last_error=state.last_error, revoked=state.revoked, recent=list(state.recent),
                             over_budget=list(state.over_budget), restarts=healer.restarts,
                             backing_off=healer.backing_off, healed=healer.last,
                             snapshot=snapshots.record, drill=drills.record)
            write_status(mesh.paths, status)
            return status

    def current() -> KeeperStatus:
        with guard:
            return status

    cert, key = m.ensure_keeper_cert(mesh)
    previous = read_status(mesh.paths)
    def expiry() -> dict[str, float]:
        return dict(certs.expiry)

    prometheus = monitoring.Watch()
    dashboard = page.route(page.Page(mesh, current, expiry, lambda: prometheus.record).data)
    try:
        addr, server = serve_metrics(current, cert, key, _metrics_port(previous), certificates=expiry,
                                     page=dashboard)
    except OSError:
        addr, server = serve_metrics(current, cert, key, free_ports(1)[0], certificates=expiry, page=dashboard)
    status = replace(status, metrics=addr)
    reload_on_sighup(server, cert, key, log)
    log(f"keeper started for {root}: healing {'on' if mesh.spec.keeper.heal else 'off'}, reaping every "
        f"{every:g} s (tokens silent for {mesh.spec.keeper.reaper.stale_after} s, roles "
        f"{', '.join(mesh.spec.keeper.reaper.roles) or 'none'}), metrics on {addr}, dashboard on "
        f"{dashboard_url(addr)}")

    def heal_loop() -> None:
        while not stop() and m.exists(root):
            t0 = time.monotonic()
            try:
                if heal_cycle(healer):
                    with guard:
                        state.note(healer.last or "healed")
                    record()
            # the healer must outlive any one bad cycle (a bug included); it says why in status
            except Exception as err:
                healer.backing_off = f"heal cycle failed: {type(err).__name__}: {err}"
                log(healer.backing_off)
            sleep(max(0.05, HEAL_EVERY - (time.monotonic() - t0)))

    healing = threading.Thread(target=heal_loop, name="heal", daemon=True)
    if mesh.spec.keeper.heal:
        healing.start()
    next_reap = 0.0
    try:
        while not stop():
            if not m.exists(root):
                log("the state dir is gone: stopping")
                return
            if time.monotonic() >= next_reap:
                t0 = time.monotonic()
                reap_cycle(mesh, client, state, log=log)
                if state.healthy_since is not None:
                    watch_budgets(client, state, ReconcileState(mesh.paths).budgets(), log=log)
                state.cycle_at = time.time()
                next_reap = t0 + every
                record()
            if snapshots.due(time.time()) and state.healthy_since is not None:
                jobs.take_snapshot(mesh, snapshots, log)
                record()
            if drills.due(time.time()) and state.healthy_since is not None:
                jobs.run_drill(mesh, drills, log)
                record()
            if certs.job.due(time.time()) and jobs.check_certificates(mesh, certs, log):
                with guard:
                    state.note(f"renewed certificates: {', '.join(certs.job.record['renewed'])}"
                               if certs.job.record else "renewed certificates")
                record()
            monitoring.ensure(mesh, addr, prometheus, log)
            sleep(min(0.5, max(0.05, next_reap - time.monotonic())))
    finally:
        server.shutdown()
        if healing.is_alive():
            healing.join(timeout=5)


def reload_tls_pair(server: object, cert: Path, key: Path, log: Callable[[str], None]) -> None:
    """Load the pair now in ``cert``/``key`` into the ``/metrics`` listener; a bad pair keeps the old one."""
    try:
        reload_tls(server, cert, key)
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        log(f"keeping the /metrics certificate: the new pair in {cert} does not load ({err})")
        return
    log(f"/metrics serves the certificate now in {cert}")


def reload_on_sighup(server: object, cert: Path, key: Path, log: Callable[[str], None]) -> None:
    """SIGHUP (``certs rotate``) reloads the ``/metrics`` TLS pair; only the main thread can take signals (a
    keeper served from a test's thread is not told)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reload_tls_pair(server, cert, key, log)

    signal.signal(signal.SIGHUP, on_hup)


def _metrics_port(previous: KeeperStatus | None) -> int:
    """The port the last keeper served metrics on (a scrape config stays true), else a fresh free one."""
    if previous is not None and previous.metrics:
        port = previous.metrics.rsplit(":", 1)[-1].split("/", 1)[0]
        if port.isdigit():
            return int(port)
    return free_ports(1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaultmesh.keeper",
                                     description="The mesh's keeper (started by `vaultmesh up`).")
    parser.add_argument("--dir", required=True, type=Path, help="the mesh's state dir")
    parser.add_argument("--status-file", help="where the keeper records what it did (tells its process apart)")
    args = parser.parse_args(argv)
    stopping = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until /metrics listens (then it reloads its TLS pair)

    def log(line: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}", flush=True)

    def nap(seconds: float) -> None:
        end = time.monotonic() + seconds
        while not stopping and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))

    try:
        serve(args.dir.resolve(), stop=lambda: stopping, sleep=nap, log=log)
    except VaultmeshError as err:
        log(f"keeper stopped: {err}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
