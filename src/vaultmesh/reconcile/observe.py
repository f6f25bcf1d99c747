"""Reading the mesh's state: which API reads to make, and pure parsers of their answers.

Sans-IO: this module never talks to OpenBao. The apply edge runs a short loop::

    responses: dict[Read, dict | None] = {}
    while todo := reads_needed(desired, responses):
        for read in todo:                       # any order; each read is independent
            responses[read] = client.read(read.method, read.path, namespace=read.namespace)  # None on 404
    observed = observed_state(desired, responses)

``reads_needed`` asks for what it can already tell is needed (round 1: the root's namespace list, mounts,
auth methods and policy list; later rounds: child namespaces, configs and roles of the mounts that exist
with the declared type, the policies that exist). Typically 3-4 rounds. A 404 (or an empty LIST, which
OpenBao answers with 404) is recorded as ``None``.

What is read, per namespace that exists and is declared (root always):

1. ``LIST sys/namespaces`` (children; undeclared ones are prune candidates)
2. ``GET sys/auth``, ``GET sys/mounts`` (mounts, their tune, and auth accessors), ``LIST sys/policies/acl``
3. ``GET sys/policies/acl/<name>`` for declared policies that exist
4. per declared auth mount that exists with the declared type: ``GET auth/<m>/config`` (jwt, kubernetes, when
   declared), ``LIST auth/<m>/role``, ``GET auth/<m>/role/<r>`` for declared roles that exist
5. at the root, once its mount tables are in (a quota names a mount): ``LIST sys/quotas/rate-limit``,
   ``GET sys/quotas/rate-limit/<name>`` for declared quotas that exist (OpenBao serves quotas at the root only)
6. per declared secrets mount that exists with the declared type: database ``LIST <m>/config``,
   ``GET <m>/config/<c>``, ``LIST <m>/roles``, ``GET <m>/roles/<r>``; pki ``LIST <m>/roles``, ``GET
   <m>/roles/<r>``, ``LIST <m>/issuers`` (root), ``GET <m>/config/urls``; transit ``LIST <m>/keys``,
   ``GET <m>/keys/<k>``; kv v2 ``GET <m>/metadata/<path>`` per seed (kv v1: ``LIST`` of the parent folder).

KV values are never read: a seed's existence is all the plan needs (its value is compared by digest).

Parsers return bodies normalised like desired bodies: durations in seconds, secrets dropped, server
spellings mapped to the request spellings (``connection_details`` flattened, ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vaultmesh.reconcile.resources import MeshObject, Resource, ResourceKey, iter_namespaces
from vaultmesh.spec.types import parse_ttl

Response = Mapping[str, Any] | None
"""A decoded JSON answer, or None for 404."""

DURATION_FIELDS = frozenset({
    "token_ttl", "token_max_ttl", "token_period", "token_explicit_max_ttl", "ttl", "max_ttl", "period",
    "default_ttl", "default_lease_ttl", "max_lease_ttl", "secret_id_ttl", "auto_rotate_period",
})
SENSITIVE_NAMES = frozenset({"password", "oidc_client_secret", "token_reviewer_jwt", "secret_id", "private_key",
                             "client_secret", "root_password"})
"""Never kept from a response, whatever the endpoint (defence in depth: none of the reads return them)."""


@dataclass(frozen=True, order=True)
class Read:
    """One API read. ``LIST`` is OpenBao's list (``GET ...?list=true`` works too)."""

    method: Literal["GET", "LIST"]
    namespace: str
    path: str


@dataclass(frozen=True)
class Observed(MeshObject):
    """One object found on the server, its body normalised (empty for objects only listed, not read)."""

    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ObservedState:
    resources: Mapping[ResourceKey, Observed] = field(default_factory=dict)
    accessors: Mapping[str, str] = field(default_factory=dict)
    """Auth mount accessors by full mount path (``jwt``, ``team-a/jwt``)."""

    @staticmethod
    def of(found: Iterable[Observed], accessors: Mapping[str, str] | None = None) -> ObservedState:
        return ObservedState({o.key: o for o in found}, dict(accessors or {}))


# -- parsers ---------------------------------------------------------------------------------------------

def _data(resp: Response) -> dict[str, Any]:
    if resp is None:
        return {}
    data = resp.get("data")
    return dict(data) if isinstance(data, Mapping) else dict(resp)


def _normalise(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in data.items():
        if k in SENSITIVE_NAMES:
            continue
        if k in DURATION_FIELDS and v is not None and not isinstance(v, bool):
            with contextlib.suppress(ValueError):
                v = parse_ttl(v)
        out[k] = v
    return out


def parse_list(resp: Response) -> list[str]:
    """``LIST`` answer -> keys (``None``: OpenBao's 404 for an empty list)."""
    keys = _data(resp).get("keys") or []
    return [str(k) for k in keys]


def parse_namespaces(resp: Response) -> dict[str, dict[str, Any]]:
    """``LIST sys/namespaces`` -> {child name: {"custom_metadata": {...}}}."""
    data = _data(resp)
    info = data.get("key_info") or {}
    out = {}
    for key in data.get("keys") or []:
        name = str(key).strip("/")
        meta = (info.get(key) or info.get(name) or {}).get("custom_metadata") or {}
        out[name] = {"custom_metadata": dict(meta)}
    return out


@dataclass(frozen=True)
class MountInfo:
    type: str
    accessor: str
    body: Mapping[str, Any]


def parse_mounts(resp: Response) -> dict[str, MountInfo]:
    """``GET sys/auth`` or ``GET sys/mounts`` -> {mount path without slash: MountInfo}."""
    data = _data(resp)
    out = {}
    for key, entry in data.items():
        if not isinstance(entry, Mapping) or "type" not in entry:
            continue
        config = _normalise(entry.get("config") or {})
        config["listing_visibility"] = config.get("listing_visibility") or "hidden"
        options = dict(entry.get("options") or {})
        if entry["type"] == "kv":
            options["version"] = str(options.get("version") or "1")
        body = {"type": entry["type"], "description": entry.get("description") or "", "config": config,
                "options": options}
        out[str(key).strip("/")] = MountInfo(str(entry["type"]), str(entry.get("accessor") or ""), body)
    return out


def parse_policy(resp: Response) -> dict[str, Any]:
    """``GET sys/policies/acl/<name>`` -> {"policy": text}."""
    data = _data(resp)
    return {"policy": data.get("policy", data.get("rules", ""))}


def parse_object(resp: Response) -> dict[str, Any]:
    """Any config or role read (jwt/kubernetes config, jwt/approle/kubernetes role, database role, pki role,
    pki urls, transit key): the ``data`` object, durations in seconds, secrets dropped."""
    return _normalise(_data(resp))


parse_jwt_config = parse_object
parse_kubernetes_config = parse_object
parse_auth_role = parse_object
parse_db_role = parse_object
parse_pki_role = parse_object
parse_pki_urls = parse_object


def parse_transit_key(resp: Response) -> dict[str, Any]:
    """``GET <transit>/keys/<name>``: the key's settings (the per-version ``keys`` map is left out)."""
    body = parse_object(resp)
    body.pop("keys", None)
    return body


def parse_db_connection(resp: Response) -> dict[str, Any]:
    """``GET <db>/config/<name>``: ``connection_details`` flattened to the fields the write takes."""
    data = _data(resp)
    details = dict(data.pop("connection_details", None) or {})
    if "root_credentials_rotate_statements" in data:
        data["root_rotation_statements"] = data.pop("root_credentials_rotate_statements")
    return _normalise({**details, **data})


def parse_rate_limit_quota(resp: Response) -> dict[str, Any]:
    """``GET sys/quotas/rate-limit/<name>``: the fields a write takes. OpenBao answers a mount path with a
    trailing slash (``auth/jwt/``) and durations in seconds; ``name``, ``type`` and ``inheritable`` are not
    written by vaultmesh and are left out."""
    data = _data(resp)
    out: dict[str, Any] = {"path": str(data.get("path") or "").rstrip("/"), "role": str(data.get("role") or "")}
    if data.get("rate") is not None:
        out["rate"] = data["rate"]
    for name in ("interval", "block_interval"):
        value = data.get(name)
        if value is not None and not isinstance(value, bool):
            with contextlib.suppress(ValueError):
                value = parse_ttl(value)
            out[name] = value
    return out


def parse_pki_issuers(resp: Response) -> dict[str, str]:
    """``LIST <pki>/issuers`` -> {issuer id: issuer name}."""
    data = _data(resp)
    info = data.get("key_info") or {}
    return {str(k): str((info.get(k) or {}).get("issuer_name") or "") for k in data.get("keys") or []}


# -- the survey: what to read, and what was found --------------------------------------------------------

_AUTH_ROLE_KINDS = {"jwt": "jwt_role", "oidc": "jwt_role", "approle": "approle_role",
                    "kubernetes": "kubernetes_role"}


class _Survey:
    def __init__(self, desired: Iterable[Resource], responses: Mapping[Read, Response]) -> None:
        self.desired = list(desired)
        self.responses = responses
        self.needed: list[Read] = []
        self.found: list[Observed] = []
        self.accessors: dict[str, str] = {}

    def get(self, method: Literal["GET", "LIST"], ns: str, path: str) -> tuple[bool, Response]:
        read = Read(method, ns, path)
        if read in self.responses:
            return True, self.responses[read]
        if read not in self.needed:
            self.needed.append(read)
        return False, None

    def run(self) -> _Survey:
        by_ns: dict[str, list[Resource]] = {}
        for r in self.desired:
            by_ns.setdefault(r.namespace, []).append(r)
        existing = {""}
        depth_first = sorted(set(iter_namespaces(self.desired)), key=lambda n: (n.count("/") + bool(n), n))
        for ns in depth_first:  # parents first, whatever order the caller's list is in
            if ns not in existing:
                continue
            self.namespace(ns, by_ns.get(ns, []), existing)
        return self

    def namespace(self, ns: str, desired: list[Resource], existing: set[str]) -> None:
        done, resp = self.get("LIST", ns, "sys/namespaces")
        if done:
            for name, body in parse_namespaces(resp).items():
                self.found.append(Observed("namespace", ns, f"sys/namespaces/{name}", body))
                existing.add(f"{ns}/{name}" if ns else name)
        mine = {(r.kind, r.path): r for r in desired}
        done, resp = self.get("LIST", ns, "sys/policies/acl")
        if done:
            for name in parse_list(resp):
                path = f"sys/policies/acl/{name}"
                if ("policy", path) in mine:
                    got, presp = self.get("GET", ns, path)
                    if got and presp is not None:
                        self.found.append(Observed("policy", ns, path, parse_policy(presp)))
                else:
                    self.found.append(Observed("policy", ns, path))
        done, resp = self.get("GET", ns, "sys/auth")
        if done:
            for mount, info in parse_mounts(resp).items():
                self.accessors[f"{ns}/{mount}" if ns else mount] = info.accessor
                self.found.append(Observed("auth_mount", ns, f"sys/auth/{mount}", info.body))
                want = mine.get(("auth_mount", f"sys/auth/{mount}"))
                if want is not None and want.body.get("type") == info.type:
                    self.auth_children(ns, mount, info.type, desired)
            if ns == "":
                self.children(ns, "sys/quotas/rate-limit", "sys/quotas/rate-limit", "rate_limit_quota",
                              {r.name for r in desired if r.kind == "rate_limit_quota"}, parse_rate_limit_quota)
        done, resp = self.get("GET", ns, "sys/mounts")
        if done:
            for mount, info in parse_mounts(resp).items():
                self.found.append(Observed("secrets_mount", ns, f"sys/mounts/{mount}", info.body))
                want = mine.get(("secrets_mount", f"sys/mounts/{mount}"))
                if (want is not None and want.body.get("type") == info.type
                        and want.body.get("options", {}).get("version") == info.body["options"].get("version")):
                    self.secrets_children(ns, mount, info.type, desired)

    def children(self, ns: str, list_path: str, item_path: str, kind: str, wanted: set[str],
                 parse: Any = parse_object) -> None:
        """LIST a collection; read the wanted items that exist; record the others as listed-only."""
        done, resp = self.get("LIST", ns, list_path)
        if not done:
            return
        for name in parse_list(resp):
            path = f"{item_path}/{name}"
            if name in wanted:
                got, iresp = self.get("GET", ns, path)
                if got and iresp is not None:
                    self.found.append(Observed(kind, ns, path, parse(iresp)))
            else:
                self.found.append(Observed(kind, ns, path))

    def single(self, ns: str, path: str, kind: str, parse: Any = parse_object) -> None:
        got, resp = self.get("GET", ns, path)
        if got and resp is not None:
            self.found.append(Observed(kind, ns, path, parse(resp)))

    @staticmethod
    def names(desired: list[Resource], kind: str, mount: str) -> set[str]:
        return {r.name for r in desired if r.kind == kind and r.mount == mount}

    def auth_children(self, ns: str, mount: str, mtype: str, desired: list[Resource]) -> None:
        for r in desired:
            if r.mount == mount and r.kind in ("jwt_config", "kubernetes_config"):
                self.single(ns, r.path, r.kind)
        kind = _AUTH_ROLE_KINDS.get(mtype)
        if kind is not None:
            self.children(ns, f"auth/{mount}/role", f"auth/{mount}/role", kind, self.names(desired, kind, mount))

    def secrets_children(self, ns: str, mount: str, mtype: str, desired: list[Resource]) -> None:
        if mtype == "database":
            self.children(ns, f"{mount}/config", f"{mount}/config", "db_connection",
                          self.names(desired, "db_connection", mount), parse_db_connection)
            self.children(ns, f"{mount}/roles", f"{mount}/roles", "db_role", self.names(desired, "db_role", mount))
        elif mtype == "pki":
            self.children(ns, f"{mount}/roles", f"{mount}/roles", "pki_role", self.names(desired, "pki_role", mount))
            for r in desired:
                if r.mount == mount and r.kind == "pki_urls":
                    self.single(ns, r.path, "pki_urls")
                if r.mount == mount and r.kind == "pki_root":
                    got, resp = self.get("LIST", ns, f"{mount}/issuers")
                    if got and r.name in parse_pki_issuers(resp).values():
                        self.found.append(Observed("pki_root", ns, r.path, {"issuer_name": r.name}))
        elif mtype == "transit":
            self.children(ns, f"{mount}/keys", f"{mount}/keys", "transit_key",
                          self.names(desired, "transit_key", mount), parse_transit_key)
        elif mtype == "kv":
            for r in desired:
                if r.mount != mount or r.kind != "kv_secret":
                    continue
                if r.path.startswith(f"{mount}/data/"):
                    got, resp = self.get("GET", ns, f"{mount}/metadata/{r.name}")
                    exists = got and resp is not None
                else:
                    parent, _, leaf = r.name.rpartition("/")
                    got, resp = self.get("LIST", ns, f"{mount}/{parent}" if parent else mount)
                    exists = got and leaf in parse_list(resp)
                if exists:
                    self.found.append(Observed("kv_secret", ns, r.path))


def reads_needed(desired: Iterable[Resource], responses: Mapping[Read, Response]) -> list[Read]:
    """The reads not yet in ``responses`` that are needed to know the state of ``desired``, sorted."""
    return sorted(_Survey(desired, responses).run().needed)


def observed_state(desired: Iterable[Resource], responses: Mapping[Read, Response]) -> ObservedState:
    """The observed state from the answers to every read ``reads_needed`` asked for.

    Raises ValueError if reads are still missing (the loop above was cut short)."""
    survey = _Survey(desired, responses).run()
    if survey.needed:
        raise ValueError(f"{len(survey.needed)} reads still needed, first: {survey.needed[0]}")
    return ObservedState.of(survey.found, survey.accessors)
