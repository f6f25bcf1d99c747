"""Rate-limit quotas and lease budgets on real meshes: a quota goes through plan/apply (create, drift, a
cleared role, prune) and reads back as declared; token budgets are counted from ``sys/leases/lookup``; and a
burst of logins ten times over a quota is refused with 429s that the client retries, every login ending in a
token or in a refusal naming the quota, while every node stays unsealed with one leader answering
``sys/health``."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.polling import eventually
from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.bench.burst import BURST_AUDIENCE, BurstResult, HealthWatch, burst_mesh_file, login_burst
from vaultmesh.reconcile.apply import apply, make_plan
from vaultmesh.reconcile.budget import breaches, budgets, count_leases, explain_refusal
from vaultmesh.reconcile.plan import Delete
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.models import MeshSpec

from .conftest import MeshHandle
from .workloads import MeshIssuer, mesh_issuer

pytestmark = [pytest.mark.integration, pytest.mark.alone]  # timing-sensitive: run alone, after the rest

AUD = BURST_AUDIENCE
QUOTA_RATE = 5
"""Logins per second the burst's quota allows; the burst is ten times that, all at once."""


def mesh_file(quotas: str = "", *, budget: int = 100) -> str:
    """The burst's file with an AppRole mount beside it (role quotas are tested on it) and ``quotas`` lines."""
    return burst_mesh_file(quotas=quotas, budget=budget,
                           extra_auth="  ci:\n    type: approle\n    roles:\n      deploy: {token_policies: [burst]}\n")


def applied(handle: MeshHandle, admin: EngineClient, text: str, *, prune: bool = False) -> tuple[MeshSpec, list[str]]:
    spec = parse_spec(text, source="mesh.yaml")
    result = apply(handle.mesh, admin, spec, base_dir=handle.dir.parent, prune=prune)
    return spec, [f"{a.op} {a.key.id}" for a in result.performed]


def pending(handle: MeshHandle, admin: EngineClient, spec: MeshSpec, *, prune: bool = False) -> list[str]:
    plan, _ = make_plan(handle.mesh, admin, spec, base_dir=handle.dir.parent)
    return [f"{a.op} {a.key.id}" for a in plan.executable(prune=prune)]


def quota(admin: EngineClient, name: str) -> dict | None:
    data = admin.read(f"sys/quotas/rate-limit/{name}")
    return None if data is None else data["data"]


def jwts(issuer: MeshIssuer, n: int) -> list[str]:
    return [issuer.token(f"burst-{i}", audience=AUD, claims={"team": "burst"}) for i in range(n)]


@pytest.fixture
def quota_mesh(make_mesh: Callable[..., MeshHandle]) -> tuple[MeshHandle, MeshIssuer]:
    handle = make_mesh("")
    return handle, mesh_issuer(handle)


def test_a_quota_is_applied_read_back_put_back_replaced_and_pruned(
        quota_mesh: tuple[MeshHandle, MeshIssuer]) -> None:
    handle, _ = quota_mesh
    admin = handle.client()
    both = ("    jwt-login: {path: auth/jwt, rate: 50}\n"
            "    deploy: {path: auth/ci/, rate: 20, role: deploy, block_interval: 2s}\n")
    spec, done = applied(handle, admin, mesh_file(both))
    assert {"create sys/quotas/rate-limit/jwt-login", "create sys/quotas/rate-limit/deploy"} <= set(done)
    assert done.index("create sys/auth/jwt") < done.index("create sys/quotas/rate-limit/jwt-login")
    got = quota(admin, "deploy")
    assert got is not None
    assert (got["path"], got["rate"], got["interval"], got["block_interval"], got["role"]) == \
        ("auth/ci/", 20, 1, 2, "deploy")
    assert pending(handle, admin, spec) == []

    # drift is seen and put back
    admin.write("sys/quotas/rate-limit/jwt-login", {"path": "auth/jwt", "rate": 999})
    assert pending(handle, admin, spec) == ["update sys/quotas/rate-limit/jwt-login"]
    applied(handle, admin, mesh_file(both))
    assert (quota(admin, "jwt-login") or {})["rate"] == 50

    # OpenBao ignores an empty role on a write: clearing it deletes and creates the quota again
    cleared = both.replace(", role: deploy", "").replace("auth/ci/,", "auth/ci/login,")
    spec, done = applied(handle, admin, mesh_file(cleared))
    assert done == ["delete sys/quotas/rate-limit/deploy", "create sys/quotas/rate-limit/deploy"]
    got = quota(admin, "deploy") or {}
    assert (got.get("role"), got.get("path")) == ("", "auth/ci/login")

    # a quota the file no longer declares is listed, and deleted only with --prune
    only = mesh_file("    deploy: {path: auth/ci/login, rate: 20, block_interval: 2s}\n")
    spec = parse_spec(only)
    plan, _ = make_plan(handle.mesh, admin, spec, base_dir=handle.dir.parent)
    prunes = [a.key.id for a in plan.actions if isinstance(a, Delete) and a.prune]
    assert prunes == ["sys/quotas/rate-limit/jwt-login"]
    assert applied(handle, admin, only)[1] == []
    assert applied(handle, admin, only, prune=True)[1] == ["delete sys/quotas/rate-limit/jwt-login"]
    assert quota(admin, "jwt-login") is None


def test_token_budgets_are_counted_from_the_lease_table(quota_mesh: tuple[MeshHandle, MeshIssuer]) -> None:
    handle, issuer = quota_mesh
    admin = handle.client()
    spec, _ = applied(handle, admin, mesh_file(budget=3))
    (budget,) = budgets(spec)
    assert count_leases(admin, budget) == 0
    result = login_burst(handle.addrs, handle.ca, mount="jwt", role="burst", jwts=jwts(issuer, 4), revoke=False)
    assert len(result.succeeded) == 4
    assert count_leases(admin, budget) == 4
    over = ["jwt role burst on auth/jwt holds 4 live tokens under auth/jwt/login/, over its lease_budget of 3 "
            "(auth.jwt.roles.burst.lease_budget)"]
    assert breaches([budget], {budget.key: count_leases(admin, budget)}) == over
    # the keeper watches the budgets of the file last applied (before its reaper takes these silent tokens)
    record = handle.dir / "keeper" / "status.json"
    eventually(lambda: record.exists() and json.loads(record.read_text()).get("over_budget") == over, timeout=12,
               interval=0.5)
    admin.write("sys/leases/revoke-prefix/auth/jwt/login", {})
    eventually(lambda: count_leases(admin, budget) == 0, timeout=10)


def assert_clear(result: BurstResult, spec: MeshSpec) -> None:
    """Every login got a token, or failed with OpenBao's 429 turned into a sentence naming the quota."""
    for outcome in result.failed:
        assert outcome.error is not None and "429" in outcome.error, outcome.error
        said = explain_refusal(spec, outcome.error, path="auth/jwt/login", role="burst")
        assert said is not None and "rate-limit quota 'jwt-login' (5 requests per 1s" in said, outcome.error


def test_a_burst_ten_times_over_the_quota_is_refused_retried_and_the_mesh_stays_healthy(
        quota_mesh: tuple[MeshHandle, MeshIssuer]) -> None:
    handle, issuer = quota_mesh
    admin = handle.client()
    spec, _ = applied(handle, admin, mesh_file(f"    jwt-login: {{path: auth/jwt, rate: {QUOTA_RATE}}}\n"))
    tokens = jwts(issuer, 10 * QUOTA_RATE)

    with HealthWatch(handle.addrs, handle.ca, interval=0.1) as watch:
        result = login_burst(handle.addrs, handle.ca, mount="jwt", role="burst", jwts=tokens, watch=watch)
        # the workload path's client with a short deadline: refusals it gives up on must name the quota
        short = login_burst(handle.addrs, handle.ca, mount="jwt", role="burst", jwts=tokens[:20],
                            retry=RetryPolicy(deadline=1.0), watch=watch)
    assert result.statuses[429] > 0, f"OpenBao never answered 429: {dict(result.statuses)}"
    assert len(result.succeeded) + len(result.failed) == len(tokens)
    assert result.succeeded, "no login got through the quota"
    assert_clear(result, spec)
    assert short.failed, f"a 1 s deadline outlasted a burst 4x over the quota: {dict(short.statuses)}"
    assert_clear(short, spec)

    # healthy during: every sample had every node unsealed and one leader answering sys/health 200
    samples = watch.samples
    assert len(samples) >= 10, f"only {len(samples)} health samples during the burst"
    sick = [s for s in samples if not s.healthy]
    assert not sick, f"{len(sick)} of {len(samples)} samples unhealthy, first: {sick[0].statuses}"
    # and after
    after = HealthWatch(handle.addrs, handle.ca)
    try:
        eventually(lambda: after.sample().healthy, timeout=10)
    finally:
        after.transport.close()
    assert admin.read("sys/health") is not None
