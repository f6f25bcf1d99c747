"""Lint: things that are valid but probably wrong or too broad. Warnings, never errors.

Each warning names the object by its field path in the mesh file (``auth.jwt.roles.batch``) and its line
when the loader passes its line index (``{("auth", "jwt", "roles", "batch"): 42, ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vaultmesh.reconcile.hcl import HclError, parse_policy, referenced_metadata
from vaultmesh.reconcile.resources import Loc, field_path
from vaultmesh.spec.resources import JwtAuth, ResourcesSpec, walk_scopes
from vaultmesh.spec.types import format_duration

WRITE_CAPS = frozenset({"create", "update", "patch", "delete"})


@dataclass(frozen=True)
class LintWarning:
    code: str
    """Stable identifier, e.g. ``policy-sudo``, for filtering."""
    message: str
    where: str
    """Field path in the mesh file."""
    line: int | None = None

    def __str__(self) -> str:
        at = f"line {self.line}: " if self.line else ""
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


def lint(spec: ResourcesSpec, *, lines: Mapping[Loc, int] | None = None) -> list[LintWarning]:
    """Warnings about the file, sorted by line then field path."""
    lines = lines or {}
    out: list[LintWarning] = []

    def warn(code: str, loc: Loc, message: str) -> None:
        out.append(LintWarning(code, message, field_path(loc), _line(loc, lines)))

    limits = spec.limits
    for ns, loc, scope in walk_scopes(spec):
        used: set[str] = set()
        for mount, auth in scope.auth.items():
            for name, role in auth.roles.items():
                rloc = (*loc, "auth", mount, "roles", name)
                used.update(role.token_policies)
                if role.token_ttl is not None and role.token_ttl > limits.token_ttl:
                    warn("ttl-above-limit", (*rloc, "token_ttl"),
                         f"token_ttl {format_duration(role.token_ttl)} is above limits.token_ttl "
                         f"{format_duration(limits.token_ttl)}")
                if role.token_max_ttl is not None and role.token_max_ttl > limits.token_max_ttl:
                    warn("ttl-above-limit", (*rloc, "token_max_ttl"),
                         f"token_max_ttl {format_duration(role.token_max_ttl)} is above limits.token_max_ttl "
                         f"{format_duration(limits.token_max_ttl)}")
                if isinstance(auth, JwtAuth) and role.role_type == "jwt":
                    if not role.bound_audiences:
                        warn("jwt-no-audience", rloc, "jwt role without bound_audiences: a token minted for "
                             "any other service of the same issuer can log in")
                    if not role.bound_claims and not role.bound_subject:
                        warn("jwt-unbound", rloc, "jwt role without bound_claims or bound_subject: every "
                             "workload of the issuer can log in with it")
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
                writes = grants & WRITE_CAPS
                if writes and rule.path not in ("*", "+") and _whole_engine(rule.path, mounts):
                    warn("policy-engine-write", ploc, f"{at} grants {', '.join(sorted(writes))} on a whole "
                         "secrets engine; narrow it to the paths the role writes")
    for name, device in spec.audit.items():
        if device.options.log_raw:
            warn("audit-log-raw", ("audit", name, "options", "log_raw"),
                 "log_raw writes tokens and secret values in clear text to the audit log")
    return sorted(out, key=lambda w: (w.line or 0, w.where, w.code, w.message))
