"""Lint: things that are valid but probably wrong or too broad; ``vaultmesh lint`` exits 1 on any.

What it catches, each with its code: templated policies keyed on alias metadata that another login of the same
alias can rewrite (``template-alias-unpinned``, the cross-job leak), grants on every path or a whole engine,
writes or sudo on globs near the root, admin paths (policies, roles, entities, lease revocation) granted to a
workload role, the bootstrap admin policy on a role, glob ``bound_claims``, ``http://`` identity providers,
privileged database creation statements, TTLs above the file's ``limits``, and lease budgets that no
rate-limit quota brakes (``budget-unbraked``: a budget is only watched, the quota is what slows a burst).

Each warning names the object by its field path in the mesh file (``auth.jwt.roles.batch``) and its line
when the loader passes its line index (``{("auth", "jwt", "roles", "batch"): 42, ...}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from vaultmesh.reconcile.budget import covering_quotas
from vaultmesh.reconcile.resources import Loc, field_path
from vaultmesh.spec.policy import HclError, parse_policy, referenced_metadata
from vaultmesh.spec.resources import DatabaseMount, JwtAuth, ResourcesSpec, walk_scopes
from vaultmesh.spec.types import format_duration

WRITE_CAPS = frozenset({"create", "update", "patch", "delete"})
ADMIN_POLICY = "vaultmesh-admin"
"""The bootstrap operator's policy: never for a role."""
ADMIN_PATHS = (re.compile(r"^sys/polic(y|ies)(/|\*|$)"), re.compile(r"^auth/[^/]+/role(/|\*|$)"),
               re.compile(r"^auth/[*+]"), re.compile(r"^identity/entity"), re.compile(r"^sys/leases/revoke"))
"""Paths whose grant lets a workload change who may do what, or revoke other workloads' leases."""
PRIVILEGED_SQL = re.compile(r"\b(SUPERUSER|CREATEROLE|CREATEDB|BYPASSRLS|REPLICATION|pg_read_all_data|"
                            r"pg_write_all_data|pg_execute_server_program|pg_read_server_files|"
                            r"pg_write_server_files)\b", re.IGNORECASE)


@dataclass(frozen=True)
class LintWarning:
    code: str
    """Stable identifier, e.g. ``policy-sudo``, for filtering."""
    message: str
    where: str
    """Field path in the mesh file."""
    line: int | None = None

    def __str__(self) -> str:
        """``6: where: message [code]``: after ``<file>:`` it reads ``mesh.yaml:6: ...``, as validation errors do."""
        at = f"{self.line}: " if self.line else " "
        return f"{at}{self.where}: {self.message} [{self.code}]"


def _line(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _whole_engine(path: str, mounts: set[str]) -> bool:
    """``secret/*``, ``secret/data/*``, ``secret/+/*``, or any single segment followed by ``*``."""
    if not path.endswith("*"):
        return False
    prefix = path[:-1]
    if prefix.count("/") == 1 and prefix.endswith("/"):
        return True
    return any(prefix in (f"{m}/", f"{m}/data/", f"{m}/metadata/", f"{m}/+/") for m in mounts)


def _near_root_glob(path: str) -> bool:
    """A glob within a path's first two segments (``s*``, ``secret/*``, ``+/data``): it reaches every team."""
    cut = min((i for i in (path.find("*"), path.find("+")) if i >= 0), default=-1)
    return cut >= 0 and path[:cut].count("/") <= 1


def _admin_path(path: str) -> bool:
    return any(p.search(path) for p in ADMIN_PATHS)


def lint(spec: ResourcesSpec, *, lines: Mapping[Loc, int] | None = None) -> list[LintWarning]:
    """Warnings about the file, sorted by line then field path."""
    lines = lines or {}
    out: list[LintWarning] = []

    def warn(code: str, loc: Loc, message: str) -> None:
        out.append(LintWarning(code, message, field_path(loc), _line(loc, lines)))

    limits = spec.limits

    def above_limit(loc: Loc, field: str, ttl: int | None, limit: str) -> None:
        cap = getattr(limits, limit)
        if ttl is not None and ttl > cap:
            warn("ttl-above-limit", loc, f"{field} {format_duration(ttl)} is above limits.{limit} "
                 f"{format_duration(cap)}")

    def unbraked(loc: Loc, ns: str, path: str, role: str | None, budget: int, unit: str, suggest: str) -> None:
        if not covering_quotas(spec, ns, path, role=role):
            at = f"{ns}/{path}" if ns else path
            warn("budget-unbraked", loc, f"lease_budget {budget} is only watched (OpenBao has no lease-count "
                 f"quota) and no rate-limit quota covers {at}: a burst can create {unit} far faster than the "
                 f"budget is checked; declare quotas.rate_limit.<name> with path: "
                 f"{f'{ns}/' if ns else ''}{suggest}")

    for ns, loc, scope in walk_scopes(spec):
        used: set[str] = set()
        for mount, auth in scope.auth.items():
            for name, role in auth.roles.items():
                rloc = (*loc, "auth", mount, "roles", name)
                used.update(role.token_policies)
                above_limit((*rloc, "token_ttl"), "token_ttl", role.token_ttl, "token_ttl")
                above_limit((*rloc, "token_max_ttl"), "token_max_ttl", role.token_max_ttl, "token_max_ttl")
                if ADMIN_POLICY in role.token_policies:
                    warn("role-admin-policy", (*rloc, "token_policies"),
                         f"the bootstrap admin policy {ADMIN_POLICY} is for the operator only, never a role")
                if isinstance(auth, JwtAuth) and (role.bound_claims_type == "glob" or any(
                        "*" in str(v) for v in role.bound_claims.values())):
                    warn("jwt-glob-claims", (*rloc, "bound_claims"), "glob bound_claims admit claims nobody "
                         "reviewed; bind exact values")
                if isinstance(auth, JwtAuth) and role.role_type == "jwt":
                    if not role.bound_audiences:
                        warn("jwt-no-audience", rloc, "jwt role without bound_audiences: a token minted for "
                             "any other service of the same issuer can log in")
                    if not role.bound_claims and not role.bound_subject:
                        warn("jwt-unbound", rloc, "jwt role without bound_claims or bound_subject: every "
                             "workload of the issuer can log in with it")
            config = getattr(auth, "config", None)
            for field in ("oidc_discovery_url", "jwks_url"):
                url = getattr(config, field, None) if isinstance(auth, JwtAuth) else None
                if isinstance(url, str) and url.lower().startswith("http://"):
                    warn("jwt-plain-http", (*loc, "auth", mount, "config", field), f"{field} is plain "
                         "http: anyone on the path can swap the keys OpenBao trusts; use https")
            for field in ("default_lease_ttl", "max_lease_ttl"):
                above_limit((*loc, "auth", mount, "tune", field), field, getattr(auth.tune, field), "token_max_ttl")
        for mount, engine in scope.secrets.items():
            mloc = (*loc, "secrets", mount)
            for field in ("default_lease_ttl", "max_lease_ttl"):
                above_limit((*mloc, "tune", field), field, getattr(engine.tune, field), "token_max_ttl")
            if not isinstance(engine, DatabaseMount):
                continue
            for rname, db_role in engine.roles.items():
                for field in ("default_ttl", "max_ttl"):
                    above_limit((*mloc, "roles", rname, field), field, getattr(db_role, field), "token_max_ttl")
                for i, statement in enumerate(db_role.creation_statements):
                    found = PRIVILEGED_SQL.search(statement)
                    if found:
                        warn("db-privileged", (*mloc, "roles", rname, "creation_statements", i),
                             f"creation statement grants {found.group(1)}: a leaked credential would own the "
                             "database; grant only what the workload reads or writes")
        workload_policies = {p for auth in scope.auth.values() for r in auth.roles.values()
                             for p in r.token_policies}
        mounts = set(scope.secrets)
        for name, pol in scope.policies.items():
            ploc = (*loc, "policies", name)
            if name != "default" and name not in used and not pol.admin:
                warn("policy-unused", ploc, "no role in this " + ("namespace" if ns else "file")
                     + " grants this policy")
            if pol.hcl is None:
                continue
            try:
                rules = parse_policy(pol.hcl)
            except HclError:
                continue  # validation reports it
            for (mount, key) in sorted(referenced_metadata(pol.hcl)):
                auth = scope.auth.get(mount)
                if isinstance(auth, JwtAuth) and not any(key in r.claim_mappings.values()
                                                         for r in auth.roles.values()):
                    warn("template-unmapped", ploc, f"the template reads metadata '{key}' from auth/{mount}/, "
                         f"but no role there maps a claim to it (claim_mappings): the path never matches")
                if not isinstance(auth, JwtAuth):
                    continue
                for rname, role in sorted(auth.roles.items()):
                    if name not in role.token_policies:
                        continue
                    claims = [c for c, k in role.claim_mappings.items() if k == key]
                    if claims and role.user_claim not in claims:
                        warn("template-alias-unpinned", (*loc, "auth", mount, "roles", rname, "user_claim"),
                             f"policy {name} keys on alias metadata '{key}' (claim {claims[0]!r}) but the "
                             f"alias is user_claim {role.user_claim!r}: logins that share one "
                             f"{role.user_claim!r} share one alias, and the last one's '{key}' opens its "
                             f"paths to all their tokens; set user_claim: {claims[0]} and key the policy on "
                             f"the alias name")
            if pol.admin:
                continue
            for rule in rules:
                grants = set(rule.capabilities) - {"deny"}
                if not grants:
                    continue
                at = f"path \"{rule.path}\" (policy line {rule.line})"
                if rule.path in ("*", "+", "+/*"):
                    warn("policy-wildcard", ploc, f"{at} grants {', '.join(sorted(grants))} on every path")
                elif rule.path.startswith("sys/") and ("*" in rule.path or "+" in rule.path):
                    warn("policy-sys", ploc, f"{at} grants {', '.join(sorted(grants))} on a wildcard under "
                         "sys/, the admin surface")
                if "sudo" in grants:
                    warn("policy-sudo", ploc, f"{at} grants sudo")
                if name in workload_policies and _admin_path(rule.path):
                    warn("policy-admin-path", ploc, f"{at} grants {', '.join(sorted(grants))} to a workload "
                         "role on an admin path (policies, roles, entities or lease revocation)")
                elif (grants & (WRITE_CAPS | {"sudo"})) and _near_root_glob(rule.path) \
                        and not _whole_engine(rule.path, mounts) and rule.path not in ("*", "+", "+/*"):
                    warn("policy-glob-write", ploc, f"{at} grants "
                         f"{', '.join(sorted(grants & (WRITE_CAPS | {'sudo'})))} on a glob near the root that "
                         "reaches beyond one team's prefix")
                writes = grants & WRITE_CAPS
                if writes and rule.path not in ("*", "+") and _whole_engine(rule.path, mounts):
                    warn("policy-engine-write", ploc, f"{at} grants {', '.join(sorted(writes))} on a whole "
                         "secrets engine; narrow it to the paths the role writes")
    for ns, loc, scope in walk_scopes(spec):
        for mount, auth in scope.auth.items():
            if not isinstance(auth, JwtAuth):
                continue
            for name, role in auth.roles.items():
                if role.lease_budget is not None:
                    unbraked((*loc, "auth", mount, "roles", name, "lease_budget"), ns, f"auth/{mount}/login",
                             name, role.lease_budget, "tokens", f"auth/{mount}")
        for mount, engine in scope.secrets.items():
            if isinstance(engine, DatabaseMount):
                for name, db_role in engine.roles.items():
                    if db_role.lease_budget is not None:
                        unbraked((*loc, "secrets", mount, "roles", name, "lease_budget"), ns,
                                 f"{mount}/creds/{name}", None, db_role.lease_budget, "credentials",
                                 f"{mount}/creds/{name}")
    for name, device in spec.audit.items():
        if device.options.log_raw:
            warn("audit-log-raw", ("audit", name, "options", "log_raw"),
                 "log_raw writes tokens and secret values in clear text to the audit log")
    return sorted(out, key=lambda w: (w.line or 0, w.where, w.code, w.message))
