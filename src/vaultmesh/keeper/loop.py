"""The keeper's cycle (the edge): observe, decide with pure functions, act, record what was done.

One cycle of the reaper::

    admin token            the mesh's own (lifecycle.mesh.admin_token: cached, 0600)
    GET  sys/auth          which mounts are JWT/OIDC ("*" in reaper.roles)
    LIST auth/token/accessors + lookup each       the token facts (workload.reap.scan_tokens)
    abandoned(...)         pure: which tokens nobody renews any more
    POST auth/token/revoke-accessor               each of them, and so its leases
    POST sys/leases/tidy   after a revocation, a leader change, or every TIDY_EVERY seconds: leases whose
                           token is gone (a revocation cut short by an election) are revoked by OpenBao
    keeper/status.json     what was done (``KeeperStatus``), atomically
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from vaultmesh.engine.client import EngineClient, RetryPolicy
from vaultmesh.errors import EngineError, VaultmeshError
from vaultmesh.keeper.reaper import abandoned
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.keeper_process import KeeperStatus, write_status
from vaultmesh.workload.reap import scan_tokens

TIDY_EVERY = 30.0
"""Seconds between two ``sys/leases/tidy`` when nothing else asks for one (it reads every lease)."""
RECENT = 20


@dataclass
class Reaper:
    """The reaper's memory between cycles."""

    healthy_since: float | None = None
    leader: str | None = None
    tidied_at: float = 0.0
    revoked: int = 0
    recent: list[str] = field(default_factory=list)
    last_error: str | None = None

    def note(self, sentence: str) -> None:
        self.recent = [*self.recent, f"{time.strftime('%H:%M:%S')} {sentence}"][-RECENT:]


def jwt_mounts(client: EngineClient) -> set[str]:
    data = client.read("sys/auth") or {}
    mounts = data.get("data") if isinstance(data.get("data"), dict) else data
    return {path.strip("/") for path, info in (mounts or {}).items()
            if isinstance(info, dict) and info.get("type") in ("jwt", "oidc")}


def reap_cycle(mesh: m.Mesh, client: EngineClient, state: Reaper, *, now: Callable[[], float] = time.time,
               log: Callable[[str], None] = print) -> None:
    """One pass of the reaper; a mesh that does not answer ends the healthy streak (nothing is revoked)."""
    settings = mesh.spec.keeper.reaper
    try:
        client.token = m.admin_token(mesh, client)
        try:
            mounts = jwt_mounts(client)
        except EngineError as err:
            if err.status != 403:
                raise
            client.token = m.admin_token(mesh, client, fresh=True)  # the cached token was revoked
            mounts = jwt_mounts(client)
        tokens = scan_tokens(client)
        leader = str((client.read("sys/leader") or {}).get("leader_address") or "")
    except VaultmeshError as err:
        state.healthy_since, state.last_error = None, str(err).splitlines()[0]
        return
    t = now()
    state.healthy_since = state.healthy_since or t
    state.last_error = None
    revoked = 0
    for revoke in abandoned(tokens, now=t, healthy_since=state.healthy_since, stale_after=settings.stale_after,
                            roles=settings.roles, jwt_mounts=mounts):
        try:
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
    leader_changed = state.leader is not None and leader != state.leader
    state.leader = leader
    if revoked or leader_changed or t - state.tidied_at >= TIDY_EVERY:
        try:
            client.write("sys/leases/tidy", {})
            state.tidied_at = t
        except VaultmeshError as err:
            state.last_error = f"sys/leases/tidy: {str(err).splitlines()[0]}"


def serve(root: Path, *, stop: Callable[[], bool], sleep: Callable[[float], None] = time.sleep,
          log: Callable[[str], None] = print) -> None:
    """Cycle until ``stop()`` or until the state dir is gone (``destroy``)."""
    mesh = m.open_mesh(root)
    client = mesh.client(retry=RetryPolicy(deadline=3.0))
    state = Reaper()
    status = KeeperStatus(pid=os.getpid(), started=time.time())
    every = float(mesh.spec.keeper.reaper.every)
    log(f"keeper started for {root}: reaping every {every:g} s, tokens silent for "
        f"{mesh.spec.keeper.reaper.stale_after} s, roles {', '.join(mesh.spec.keeper.reaper.roles) or 'none'}")
    while not stop():
        if not m.exists(root):
            log("the state dir is gone: stopping")
            return
        t0 = time.monotonic()
        reap_cycle(mesh, client, state, log=log)
        status = replace(status, cycle_at=time.time(), healthy_since=state.healthy_since,
                         last_error=state.last_error, revoked=state.revoked, recent=list(state.recent),
                         tidied_at=state.tidied_at or None)
        write_status(mesh.paths, status)
        sleep(max(0.1, every - (time.monotonic() - t0)))


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
