"""``vaultmesh leases reap --workload NAME``: revoke what a workload left behind (e.g. a SIGKILLed ``run``).

``run`` records nothing on disk. Every credential it obtains hangs off its token: revoking a token revokes the
leases it created. So reaping means finding the workload's tokens::

    LIST auth/token/accessors                 (needs sudo: an admin token)
    POST auth/token/lookup-accessor           for each: path, display_name, meta
    match (pure, ``token_matches``)           the token came from a login at auth/<mount>/ and names the
                                              workload: meta.workload == NAME (the recommended role maps it:
                                              claim_mappings {"/kubernetes.io/serviceaccount/name": "workload"})
                                              or the entity alias in display_name ("<mount>-<alias>") is NAME,
                                              system:serviceaccount:<ns>:NAME or spiffe://<td>/ns/<ns>/sa/NAME
    POST auth/token/revoke-accessor           the token, and with it its leases

A token that already expired is gone with its leases; OpenBao did the reaping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vaultmesh.api.client import EngineClient
from vaultmesh.errors import EngineError, VaultmeshError


@dataclass(frozen=True)
class TokenInfo:
    accessor: str
    display_name: str
    path: str
    meta: Mapping[str, str]
    expire_time: str | None
    namespace: str = ""
    """The token's namespace (``namespace_path`` without slashes; root is "")."""
    issued: float = 0.0
    """``creation_time``: Unix seconds, the server's clock."""
    renewed: float | None = None
    """``last_renewal_time``: Unix seconds of the last renewal (the heartbeat of ``run``); None: never."""
    renewable: bool = False

    @staticmethod
    def from_lookup(accessor: str, data: Mapping[str, Any]) -> TokenInfo:
        return TokenInfo(accessor, str(data.get("display_name") or ""), str(data.get("path") or ""),
                         dict(data.get("meta") or {}), data.get("expire_time"),
                         str(data.get("namespace_path") or "").strip("/"),
                         float(data.get("creation_time") or 0), _seconds(data.get("last_renewal_time")),
                         bool(data.get("renewable")))

    @property
    def login(self) -> tuple[str, str] | None:
        """(auth mount, role) of the login that made the token; None when it was not made by a login."""
        path = self.path.strip("/")
        if not path.startswith("auth/") or "/login" not in path:
            return None
        return path[len("auth/"):path.rindex("/login")], str(self.meta.get("role") or "")


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def alias_matches(alias: str, workload: str) -> bool:
    """The JWT ``sub`` (the entity alias with ``user_claim: sub``) names ``workload``."""
    if alias == workload:
        return True
    parts = alias.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"] and parts[3] == workload:
        return True
    if alias.startswith("spiffe://"):
        segs = alias[len("spiffe://"):].split("/")
        return len(segs) == 5 and segs[1] == "ns" and segs[3] == "sa" and segs[4] == workload
    return False


def token_matches(info: TokenInfo, workload: str, *, auth_mount: str | None = None, role: str | None = None,
                  namespace: str = "") -> bool:
    """Whether ``info`` is a token a login of ``workload`` made in ``namespace`` (at ``auth_mount``, as
    ``role``, when given): a workload of the same name in another namespace is another workload."""
    if info.namespace != namespace.strip("/") or info.login is None:
        return False
    mount = info.login[0]
    if auth_mount is not None and mount != auth_mount.strip("/"):
        return False
    if role is not None and info.meta.get("role") != role:
        return False
    if info.meta.get("workload") == workload:
        return True
    prefix = mount.replace("/", "-") + "-"
    return info.display_name.startswith(prefix) and alias_matches(info.display_name[len(prefix):], workload)


def may_lookup_accessors(client: EngineClient) -> bool:
    """Whether ``client``'s token may look tokens up by accessor (so a 403 there means the token vanished)."""
    data = client.write("sys/capabilities-self", {"paths": ["auth/token/lookup-accessor"]}) or {}
    caps = data.get("capabilities") or (data.get("data") or {}).get("capabilities") or []
    return bool({"root", "update", "sudo"} & set(caps))


def find_workload_tokens(client: EngineClient, workload: str, *, auth_mount: str | None = None,
                         role: str | None = None) -> list[TokenInfo]:
    """Every live token a login of ``workload`` made; ``client`` needs an admin token (sudo on accessors)."""
    return [info for info in scan_tokens(client)
            if token_matches(info, workload, auth_mount=auth_mount, role=role, namespace=client.namespace or "")]


def scan_tokens(client: EngineClient) -> list[TokenInfo]:
    """Every live service token of ``client``'s namespace; needs an admin token (sudo on accessors)."""
    try:
        accessors = client.list("auth/token/accessors")
    except EngineError as err:
        raise VaultmeshError(f"cannot list token accessors: {'; '.join(err.errors)} ({err.status})",
                             hint="leases reap needs an admin token (sudo on auth/token/accessors)") from None
    found = []
    may_lookup: bool | None = None  # asked once, at the first 403 of the scan
    for accessor in accessors:
        try:
            data = (client.write("auth/token/lookup-accessor", {"accessor": accessor}) or {}).get("data") or {}
        except EngineError as err:
            # 400 "invalid accessor", or 403 "bad token" when the token was revoked between the list and the
            # lookup (the token store answers a vanished token with permission denied): gone, not an error,
            # unless this client really may not look accessors up.
            if err.status == 403 and may_lookup is None:
                may_lookup = may_lookup_accessors(client)
            if err.status == 400 or (err.status == 403 and may_lookup):
                continue
            raise
        found.append(TokenInfo.from_lookup(accessor, data))
    return found


def reap(client: EngineClient, workload: str, *, auth_mount: str | None = None, role: str | None = None,
         dry_run: bool = False) -> list[TokenInfo]:
    """Revoke the workload's tokens (and so their leases); return what was (or would be) revoked."""
    found = find_workload_tokens(client, workload, auth_mount=auth_mount, role=role)
    if not dry_run:
        for info in found:
            try:
                client.write("auth/token/revoke-accessor", {"accessor": info.accessor})
            except EngineError as err:
                if err.status != 400:  # 400: gone meanwhile
                    raise
    return found
