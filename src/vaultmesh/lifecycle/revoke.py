"""Revoke every lease of a mesh before it is destroyed.

A lease is the mesh's promise to undo something outside it: a database lease is a PostgreSQL role, an AWS
lease an IAM user. Deleting the state dir forgets the promise, so ``destroy`` first asks the mesh to keep it:
``sys/leases/revoke-prefix/<mount>`` with ``sync`` for every secrets mount that may issue leases, in the root
namespace and every child namespace, within one time budget. Best effort: a mesh that is stopped, sealed or
does not answer in time is destroyed anyway, and the report says what may remain.

Tokens are not revoked: they live only in the mesh's storage, which ``destroy`` deletes, and revoking a token
only matters outside the mesh through its leases, which are revoked here by mount.

The pure parts (which mounts, the report and its one line) are separate from the edge (``revoke_all``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.errors import EngineError, VaultmeshError

Progress = Callable[[str], None]

BUDGET = 15.0
"""Seconds ``destroy`` spends revoking, all requests included. A revoke-prefix is one request per mount; the
database engine drops ~100 PostgreSQL roles a second here, so 15 s covers a busy mesh without making destroy of
a hung one slow."""

LEASE_FREE_TYPES = frozenset({"kv", "cubbyhole", "identity", "system", "transit", "totp",
                              "ns_system", "ns_cubbyhole", "ns_identity"})
"""Secrets engines that never issue revocable leases (KV v1 reports a TTL but no lease id)."""

ROLE_HINT = {"database": "PostgreSQL roles named v-... may remain in the database"}
"""What a lease of this engine type leaves outside the mesh when it is not revoked."""

_WORDS_MAX = 240


def lease_mounts(mounts: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``sys/mounts`` data -> sorted (path, type) of the secrets mounts that may issue leases."""
    out = []
    for path, info in mounts.items():
        if not isinstance(info, Mapping) or "type" not in info:
            continue  # the response's own keys beside the mounts (request_id, ...) on old servers
        kind = str(info["type"])
        if kind not in LEASE_FREE_TYPES:
            out.append((path if path.endswith("/") else path + "/", kind))
    return sorted(out)


@dataclass(frozen=True)
class MountOutcome:
    """One mount's leases: how many there were, how many are still there after revoke-prefix, and why."""

    namespace: str
    """"" for the root namespace, else the namespace path (``team/``)."""
    mount: str
    kind: str
    found: int
    left: int
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.namespace}{self.mount}"


@dataclass(frozen=True)
class RevokeReport:
    """What ``revoke_all`` did: ``answered`` False means the mesh could not be asked at all (``reason``)."""

    answered: bool
    mounts: tuple[MountOutcome, ...] = ()
    reason: str | None = None

    @property
    def revoked(self) -> int:
        return sum(max(0, o.found - o.left) for o in self.mounts)

    @property
    def complete(self) -> bool:
        return self.answered and all(o.left == 0 and o.error is None for o in self.mounts)

    def leftover_line(self) -> str | None:
        """One line naming what may remain outside the mesh, or None when every lease was revoked. Carries
        mount paths, counts and OpenBao's words (which name paths and roles, never credentials)."""
        if self.complete:
            return None
        hints = ROLE_HINT["database"]
        if not self.answered:
            return (f"leases not revoked: the mesh did not answer ({self.reason or 'no reason given'}): leases it "
                    f"issued may remain until their TTL; {hints} (their passwords stop working at the TTL)")
        parts = []
        kinds = set()
        for o in self.mounts:
            if o.left == 0 and o.error is None:
                continue
            kinds.add(o.kind)
            count = f"{o.left} of {o.found} leases" if o.found else "leases (count unknown)"
            parts.append(f"{o.label} {count}" + (f" ({o.error})" if o.error else ""))
        tail = "; ".join(ROLE_HINT[k] for k in sorted(kinds) if k in ROLE_HINT)
        return "leases not revoked: " + "; ".join(parts) + (f"; {tail}" if tail else "")


def _words(err: BaseException) -> str:
    """OpenBao's own words (status and errors) when it answered, else the message; on one line, capped."""
    text = f"{err.status} {'; '.join(err.errors)}" if isinstance(err, EngineError) else str(err)
    text = " ".join(text.split())
    return text if len(text) <= _WORDS_MAX else text[:_WORDS_MAX - 3] + "..."


class _Budget:
    """One deadline for every request: each gets a retry policy ending at the deadline."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.end = clock() + seconds

    def left(self) -> float:
        return self.end - self.clock()

    def retry(self) -> RetryPolicy:
        return RetryPolicy(deadline=max(0.05, self.left()), base=0.05, cap=0.5)


def count_leases(client: EngineClient, prefix: str, *, namespace: str, retry: Callable[[], RetryPolicy]) -> int:
    """Leases under ``prefix`` (``database/``), by walking ``LIST sys/leases/lookup/<prefix>``."""
    total = 0
    stack = [prefix]
    while stack:
        here = stack.pop()
        for key in client.list(f"sys/leases/lookup/{here}", namespace=namespace, retry=retry()):
            if key.endswith("/"):
                stack.append(here + key)
            else:
                total += 1
    return total


def child_namespaces(client: EngineClient, *, retry: Callable[[], RetryPolicy]) -> list[str]:
    """Every namespace below the root (``team/``, ``team/sub/``), or [] where the server has none."""
    out: list[str] = []
    stack = [""]
    while stack:
        parent = stack.pop()
        try:
            keys = client.list("sys/namespaces", namespace=parent, retry=retry())
        except VaultmeshError:
            continue  # namespaces unsupported, or not listable here: the root's mounts are still revoked
        for key in keys:
            child = parent + (key if key.endswith("/") else key + "/")
            out.append(child)
            stack.append(child)
    return sorted(out)


def revoke_namespace(client: EngineClient, namespace: str, budget: _Budget,
                     progress: Progress) -> list[MountOutcome]:
    """Revoke every lease of every lease-issuing secrets mount of one namespace."""
    resp = client.read("sys/mounts", namespace=namespace, retry=budget.retry())
    mounts = (resp or {}).get("data") or resp or {}
    outcomes = []
    for mount, kind in lease_mounts(mounts):
        label = f"{namespace}{mount}"
        try:
            found = count_leases(client, mount, namespace=namespace, retry=budget.retry)
        except VaultmeshError as err:
            outcomes.append(MountOutcome(namespace, mount, kind, 0, 0, _words(err)))
            continue
        if not found:
            continue
        progress(f"revoking {found} lease{'s' * (found != 1)} of {label}")
        error = None
        try:
            client.write(f"sys/leases/revoke-prefix/{mount.rstrip('/')}", {"sync": True}, namespace=namespace,
                         retry=budget.retry())
        except VaultmeshError as err:
            error = _words(err)
        try:
            left = count_leases(client, mount, namespace=namespace, retry=budget.retry)
        except VaultmeshError as err:
            left, error = found, error or _words(err)
        outcomes.append(MountOutcome(namespace, mount, kind, found, left, error))
        if not left and not error:
            progress(f"revoked {found} lease{'s' * (found != 1)} of {label}")
    return outcomes


def revoke_all(client: EngineClient, login: Callable[[], str], *, budget: float = BUDGET,
               progress: Progress = lambda _: None, clock: Callable[[], float] = time.monotonic) -> RevokeReport:
    """Revoke every lease of the mesh ``client`` talks to, within ``budget`` seconds. Never raises a
    ``VaultmeshError``: what could not be done is in the report."""
    b = _Budget(budget, clock)
    saved_retry, saved_timeout = client.retry, client.timeout
    client.retry = b.retry()
    client.timeout = min(client.timeout, max(0.5, budget))
    try:
        try:
            client.token = login()
        except VaultmeshError as err:
            return RevokeReport(False, reason=f"admin login failed: {_words(err)}")
        outcomes: list[MountOutcome] = []
        try:
            namespaces = ["", *child_namespaces(client, retry=b.retry)]
        except VaultmeshError:
            namespaces = [""]
        for ns in namespaces:
            try:
                outcomes += revoke_namespace(client, ns, b, progress)
            except VaultmeshError as err:
                if not ns and not outcomes:
                    return RevokeReport(False, reason=_words(err))
                outcomes.append(MountOutcome(ns, "sys/mounts", "", 0, 0, _words(err)))
        return RevokeReport(True, tuple(outcomes))
    finally:
        client.retry, client.timeout = saved_retry, saved_timeout


def serving_nodes(health: Iterable[Mapping[str, Any] | None]) -> int:
    """How many nodes could serve a request, from their ``sys/health`` (None: unreachable)."""
    return sum(1 for h in health if h and h.get("initialized") and not h.get("sealed"))


__all__ = [
    "BUDGET",
    "MountOutcome",
    "RevokeReport",
    "count_leases",
    "lease_mounts",
    "revoke_all",
    "serving_nodes",
]
