"""Which tokens belong to workloads that are gone. Pure: token facts and times in, revocations out.

A watched token (made by a login at a watched role) is renewed by its ``run`` every heartbeat (5 s). One
that has not been renewed for ``stale_after`` seconds has nobody behind it:

- its ``run`` was SIGKILLed, or its machine died, so nobody will ever revoke it, or
- it is a *ghost*: a login whose answer was lost in a leader election and that the client retried; the first
  token exists, known to nobody, and was never renewed.

Its revocation takes every lease it made with it (a database lease: its PostgreSQL role).

Two views of the same silence, because a token can be out of reach of the token store:

- **auth leases** (``silent_leases``): every login token has a lease ``auth/<mount>/login/<hash>`` that its
  renewals renew. For a mount watched as a whole (``"*"`` or ``"<mount>/*"``) the reaper revokes the silent
  lease itself (``sys/leases/revoke``), which revokes its token and the token's leases. This also finishes a
  revocation a leader election cut short: such a token sits in "revocation pending" (``num_uses -1``), where
  ``revoke-accessor`` answers success and does nothing, until its lease expires (measured here: a leader kill
  at 20 workloads/s left 1-2 of those per run).
- **tokens** (``abandoned``): for roles watched one by one (``"<mount>/<role>"``), whose leases do not name
  their role, the token store's facts decide and ``revoke-accessor`` acts.

The reaper never makes things worse: a mesh that could not take renewals (no leader, lost quorum) could not
take heartbeats either, so time only counts while the reaper itself has seen the mesh answer without a break
(``healthy_since``): after an outage, or a restart of the keeper, every token gets ``stale_after`` seconds of
a working mesh to renew before it can be called abandoned. Tokens that cannot be renewed are left to their TTL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vaultmesh.workload.reap import TokenInfo


@dataclass(frozen=True)
class Revoke:
    accessor: str
    """The token's accessor (``revoke-accessor``), or for an auth lease its lease id (``sys/leases/revoke``)."""
    reason: str
    """One sentence, no secret: which login, and how long it has been silent."""
    lease: bool = False
    namespace: str = ""
    """Where the lease lives ("" for the root namespace)."""


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as ``sys/leases/lookup`` tells it; times are Unix seconds."""

    lease_id: str
    issued: float
    renewed: float | None = None
    renewable: bool = True
    namespace: str = ""


def whole_mounts(roles: Sequence[str], jwt_mounts: Iterable[str]) -> set[str]:
    """Auth mounts watched as a whole: every role of them (``"*"`` for JWT/OIDC mounts, or ``"<mount>/*"``).
    Mounts are named by their full path: ``team-a/jwt`` is the mount ``jwt`` of namespace ``team-a``."""
    out = {p.rpartition("/")[0].strip("/") for p in roles if p != "*" and p.endswith("/*")}
    if "*" in roles:
        out |= set(jwt_mounts)
    return out


def silent_leases(leases: Iterable[LeaseInfo], *, now: float, healthy_since: float,
                  stale_after: float) -> list[Revoke]:
    """Auth leases (of mounts watched as a whole) not renewed for ``stale_after`` s of a working mesh."""
    out: list[tuple[float, Revoke]] = []
    for lease in leases:
        if not lease.renewable:
            continue  # it cannot heartbeat: left to its TTL
        last = lease.renewed if lease.renewed is not None else lease.issued
        if now - max(last, healthy_since) < stale_after:
            continue
        mount = lease.lease_id.removeprefix("auth/").rpartition("/login/")[0]
        where = f"{lease.namespace}/auth/{mount}" if lease.namespace else f"auth/{mount}"
        how = "never renewed" if lease.renewed is None else f"not renewed for {now - last:.0f} s"
        out.append((last, Revoke(lease.lease_id, f"login lease of {where} {how}", lease=True,
                                 namespace=lease.namespace)))
    return [r for _, r in sorted(out, key=lambda pair: pair[0])]


def watched(info: TokenInfo, roles: Sequence[str], jwt_mounts: Iterable[str]) -> bool:
    """The token comes from a login at a role the reaper watches (``"*"``: every JWT/OIDC mount's roles)."""
    login = info.login
    if login is None or not info.renewable:
        return False
    mount, role = login
    for pattern in roles:
        if pattern == "*":
            if mount in set(jwt_mounts):
                return True
            continue
        want_mount, _, want_role = pattern.rpartition("/")
        if want_mount.strip("/") == mount and want_role in ("*", role):
            return True
    return False


def abandoned(tokens: Iterable[TokenInfo], *, now: float, healthy_since: float, stale_after: float,
              roles: Sequence[str], jwt_mounts: Iterable[str]) -> list[Revoke]:
    """The watched tokens silent for ``stale_after`` seconds of a working mesh, oldest silence first; tokens of
    mounts watched as a whole are left to ``silent_leases``."""
    mounts = set(jwt_mounts)
    whole = whole_mounts(roles, mounts)
    out: list[tuple[float, Revoke]] = []
    for info in tokens:
        if not watched(info, roles, mounts) or (info.login and info.login[0] in whole):
            continue
        last = info.renewed if info.renewed is not None else info.issued
        silent = now - max(last, healthy_since)
        if silent < stale_after:
            continue
        mount, role = info.login or ("", "")
        how = "never renewed (a login nobody received, or a run killed at once)" if info.renewed is None \
            else f"not renewed for {now - last:.0f} s"
        out.append((last, Revoke(info.accessor, f"token of {info.display_name or '?'} (auth/{mount} role "
                                                f"{role or '?'}) {how}")))
    return [r for _, r in sorted(out, key=lambda pair: pair[0])]
