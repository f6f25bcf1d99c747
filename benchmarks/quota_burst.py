"""A login burst ten times over a rate-limit quota, with and without the quota, on a 3-node TLS mesh.

One mesh (``up``) with the identity issuer it runs (tokens minted with the mesh's key ring), a JWT mount and
role applied from a mesh file (``reconcile.apply``). Then the same burst twice: N logins started open
loop at ``factor`` times the quota's rate, each with the workload path's own client (``EngineClient``: 429
is retried with capped, jittered backoff within its 15 s deadline), first with no quota, then with
``quotas.rate_limit`` on ``auth/jwt``. Every node's ``sys/health`` is sampled every 100 ms meanwhile.

Usage: python benchmarks/quota_burst.py [--quota 5] [--factor 10] [--logins 100]
Prints a table; figures go into the README by hand.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from vaultmesh.bench.burst import BURST_AUDIENCE, BurstResult, HealthWatch, burst_mesh_file, login_burst
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.server import keys_dir, read_issuer_record
from vaultmesh.identity.tokens import mint
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import down, up
from vaultmesh.reconcile.apply import apply
from vaultmesh.reconcile.budget import explain_refusal
from vaultmesh.spec.load import parse_spec

AUD = BURST_AUDIENCE


def mesh_file(quota: float | None) -> str:
    quotas = f"    jwt-login: {{path: auth/jwt, rate: {quota:g}}}\n" if quota is not None else ""
    return burst_mesh_file(quotas=quotas, budget=1000)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def row(label: str, r: BurstResult) -> str:
    answers = sum(r.statuses.values())
    healthy = sum(s.healthy for s in r.health)
    return (f"| {label} | {len(r.outcomes)} | {answers} | {r.statuses.get(429, 0)} | {len(r.succeeded)} / "
            f"{len(r.failed)} | {ms(r.percentile(50))} / {ms(r.percentile(99))} | {healthy} of {len(r.health)} "
            f"| {ms(r.leader_p99)} | {r.drain_seconds:.1f} s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quota", type=float, default=5.0, help="logins per second the quota allows")
    ap.add_argument("--factor", type=float, default=10.0, help="offered rate as a multiple of the quota")
    ap.add_argument("--logins", type=int, default=100, help="logins in the burst")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="vm-quota-burst-")) / "state"
    try:
        mesh = up(root, parse_spec("nodes: 3\n"), "nodes: 3\n").mesh
        record = read_issuer_record(root)
        assert record is not None, "up records the identity issuer it runs"
        ring = KeyRing.load(keys_dir(root))
        admin = mesh.client(token=m.admin_token(mesh))
        ca = str(mesh.paths.ca_cert)
        offered = args.quota * args.factor
        rows = []
        refusal = None
        for label, quota in (("no quota", None), (f"quota {args.quota:g}/s on auth/jwt", args.quota)):
            spec = parse_spec(mesh_file(quota), source="burst.yaml")
            apply(mesh, admin, spec, base_dir=root.parent, prune=True)
            jwts = [mint(ring, issuer=record.issuer, workload=f"burst-{i}", audience=AUD, ttl=600, now=time.time(),
                         claims={"team": "burst"}) for i in range(args.logins)]
            with HealthWatch(mesh.node_addrs, ca, interval=0.1) as watch:
                result = login_burst(mesh.node_addrs, ca, mount="jwt", role="burst", jwts=jwts, rate=offered,
                                     watch=watch)
            result.health = list(watch.samples)
            rows.append(row(label, result))
            for failed in result.failed[:1]:
                refusal = explain_refusal(spec, failed.error or "", path="auth/jwt/login", role="burst")
        print(f"{args.logins} JWT logins offered at {offered:g}/s ({args.factor:g}x the quota), open loop, one "
              "client per login, 3-node TLS mesh\n")
        print("| variant | logins | HTTP answers | 429s | ok / failed | success p50 / p99 | healthy health "
              "samples | leader sys/health p99 | time to drain |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        if refusal:
            print(f"\nA login that gave up: {refusal}")
    finally:
        if m.exists(root):
            down(root)
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
