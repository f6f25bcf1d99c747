"""Which tokens belong to workloads that are gone. Pure: token facts and times in, revocations out.

A watched token (made by a login at a watched role) is renewed by its ``run`` every heartbeat (5 s). One
that has not been renewed for ``stale_after`` seconds has nobody behind it:

- its ``run`` was SIGKILLed, or its machine died, so nobody will ever revoke it, or
- it is a *ghost*: a login whose answer was lost in a leader election and that the client retried; the first
  token exists, known to nobody, and was never renewed.

Its revocation takes every lease it made with it (a database lease: its PostgreSQL role).

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
    reason: str
    """One sentence, no secret: which login, and how long it has been silent."""


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
    """The watched tokens silent for ``stale_after`` seconds of a working mesh, oldest silence first."""
    mounts = set(jwt_mounts)
    out: list[tuple[float, Revoke]] = []
    for info in tokens:
        if not watched(info, roles, mounts):
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
