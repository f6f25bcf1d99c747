"""Lease budgets, and the rate-limit quotas that brake them.

OpenBao limits how fast requests come (``sys/quotas/rate-limit``) but not how many leases pile up: it has no
lease-count quota. So the mesh file declares a ``lease_budget`` per role (database roles: live credentials;
JWT roles: live tokens) and vaultmesh watches it: :func:`budgets` turns the file into the lease prefixes to
count and their limits, :func:`breaches` compares counts with them (both pure), and :func:`count_leases` is
the edge that counts (``LIST sys/leases/lookup/<prefix>``). A budget is only a watch; a rate-limit quota on
the path that creates the leases is the brake, and :func:`covering_quotas` says which quota applies to a
request (lint warns about a budget no quota brakes).

Token leases carry no role: every login on ``auth/<mount>/`` lands under ``auth/<mount>/login/``, so the JWT
roles of one mount share one budget, the sum of theirs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from vaultmesh.api.client import EngineClient
from vaultmesh.reconcile.resources import Loc, field_path
from vaultmesh.spec.resources import (
    DatabaseMount,
    JwtAuth,
    QuotaTarget,
    RateLimitQuota,
    ResourcesSpec,
    resolve_quota_path,
    walk_scopes,
)
from vaultmesh.spec.types import format_duration

RATE_LIMITED = "rate limit quota exceeded"
"""OpenBao's words in a 429 from a rate-limit quota (they name the request path, not the quota)."""


@dataclass(frozen=True)
class Budget:
    """At most ``limit`` live leases under ``prefix`` in ``namespace``."""

    namespace: str
    prefix: str
    """The lease prefix, with a trailing slash: ``database/creds/jobs-ro/``, ``auth/jwt/login/``."""
    limit: int
    what: str
    """Who holds the leases, for sentences: ``database role database/jobs-ro``, ``jwt roles batch, web on
    auth/jwt``."""
    unit: Literal["credentials", "tokens"]
    sources: tuple[Loc, ...]
    """Where each contributing ``lease_budget`` is declared in the mesh file."""

    where: str = ""
    """The declarations as field paths (``secrets.database.roles.ro.lease_budget``), for sentences."""

    @property
    def key(self) -> str:
        """The prefix with its namespace (``team-a/database/creds/ro/``): the key of the counts."""
        return f"{self.namespace}/{self.prefix}" if self.namespace else self.prefix

    def to_json(self) -> dict[str, object]:
        return {"namespace": self.namespace, "prefix": self.prefix, "limit": self.limit, "what": self.what,
                "unit": self.unit, "where": self.where}

    @staticmethod
    def from_json(data: Mapping[str, object]) -> Budget:
        unit = "tokens" if data.get("unit") == "tokens" else "credentials"
        return Budget(str(data.get("namespace") or ""), str(data["prefix"]), int(str(data["limit"])),
                      str(data.get("what") or data["prefix"]), unit, (), str(data.get("where") or ""))


def budgets(spec: ResourcesSpec) -> list[Budget]:
    """Every lease budget the file declares, in file order (JWT roles of one mount merged into one)."""
    out: list[Budget] = []
    for ns, loc, scope in walk_scopes(spec):
        for mount, auth in scope.auth.items():
            if not isinstance(auth, JwtAuth):
                continue
            roles = [(name, role) for name, role in auth.roles.items() if role.lease_budget is not None]
            if roles:
                sources = tuple((*loc, "auth", mount, "roles", n, "lease_budget") for n, _ in roles)
                out.append(Budget(
                    ns, f"auth/{mount}/login/", sum(role.lease_budget or 0 for _, role in roles),
                    f"jwt role{'s' if len(roles) > 1 else ''} {', '.join(n for n, _ in roles)} on auth/{mount}",
                    "tokens", sources, ", ".join(field_path(s) for s in sources)))
        for mount, engine in scope.secrets.items():
            if not isinstance(engine, DatabaseMount):
                continue
            for name, db_role in engine.roles.items():
                if db_role.lease_budget is not None:
                    source = (*loc, "secrets", mount, "roles", name, "lease_budget")
                    out.append(Budget(ns, f"{mount}/creds/{name}/", db_role.lease_budget,
                                      f"database role {mount}/{name}", "credentials", (source,),
                                      field_path(source)))
    return out


def breaches(budgets: Sequence[Budget], counts: Mapping[str, int]) -> list[str]:
    """One sentence per budget whose count (``counts[budget.key]``) is above its limit; budgets without a
    count are not judged."""
    out = []
    for b in budgets:
        count = counts.get(b.key)
        if count is not None and count > b.limit:
            out.append(f"{b.what} holds {count} live {b.unit} under {b.key}, over its lease_budget of {b.limit} "
                       f"({b.where})")
    return out


def count_leases(client: EngineClient, budget: Budget) -> int:
    """The live leases under the budget's prefix: ``LIST sys/leases/lookup/<prefix>`` in its namespace, folders
    followed (the token needs ``sudo`` and ``list`` on ``sys/leases/lookup/*``, as the admin's has)."""
    total = 0
    todo = [budget.prefix]
    while todo:
        prefix = todo.pop()
        for key in client.list(f"sys/leases/lookup/{prefix}", namespace=budget.namespace or None,
                               consistent=True):
            if key.endswith("/"):
                todo.append(prefix + key)
            else:
                total += 1
    return total


# -- which quota brakes a request ------------------------------------------------------------------------

def _rank(target: QuotaTarget, quota: RateLimitQuota, namespace: str, path: str, role: str | None) -> int | None:
    """How specifically ``quota`` applies to the request (0 most specific), or None when it does not. The
    order is OpenBao's: a role quota, then a path inside a mount (exact, then ``*`` prefix), the mount, the
    namespace, the global quota."""
    if target.is_global:
        return None if quota.role else 5
    if target.namespace != namespace:
        return None
    if target.mount is None:
        return 4
    if not (path == target.mount or path.startswith(target.mount + "/")):
        return None
    inner = path[len(target.mount) + 1:]
    if quota.role:
        return 0 if role == quota.role and (inner == "login" or inner.startswith("login/")) else None
    if target.suffix == "":
        return 3
    if target.suffix.endswith("*"):
        return 2 if inner.startswith(target.suffix[:-1]) else None
    return 1 if inner == target.suffix else None


def covering_quotas(spec: ResourcesSpec, namespace: str, path: str, *, role: str | None = None) -> list[str]:
    """Names of the file's rate-limit quotas that apply to a request to ``path`` in ``namespace`` (a login
    with ``role`` when given), the one OpenBao enforces first."""
    ranked = []
    for name, quota in spec.quotas.rate_limit.items():
        rank = _rank(resolve_quota_path(spec, quota.path), quota, namespace, path.strip("/"), role)
        if rank is not None:
            ranked.append((rank, name))
    return [name for _, name in sorted(ranked)]


def describe_quota(name: str, quota: RateLimitQuota) -> str:
    """``rate-limit quota 'jwt-login' (5 requests per 1s per client address on auth/jwt)``."""
    where = quota.path or "every path"
    role = f", role {quota.role}" if quota.role else ""
    block = f", then blocks {format_duration(quota.block_interval)}" if quota.block_interval else ""
    return (f"rate-limit quota '{name}' ({quota.rate:g} requests per {format_duration(quota.interval)} per client "
            f"address on {where}{role}{block})")


def explain_refusal(spec: ResourcesSpec, error: str, *, path: str, namespace: str = "",
                    role: str | None = None) -> str | None:
    """A request's final error, with the quota that refused it named: OpenBao's 429 says only
    "rate limit quota exceeded" and the path. None when ``error`` is not a rate-limit refusal."""
    if RATE_LIMITED not in error:
        return None
    names = covering_quotas(spec, namespace, path, role=role)
    at = f"{namespace}/{path}" if namespace else path
    if not names:
        return f"{at} was refused by a rate-limit quota the mesh file does not declare: {error}"
    return f"{at} was refused by {describe_quota(names[0], spec.quotas.rate_limit[names[0]])}: {error}"
