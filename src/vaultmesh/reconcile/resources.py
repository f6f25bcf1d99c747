"""Desired resources: the spec flattened into the objects OpenBao holds, each at its API address.

A :class:`Resource` is one object the mesh should contain: a namespace, a mount, a policy, a config, a role,
a seeded KV secret. Its ``path`` is the object's API address inside its ``namespace`` (the namespace the
request is sent to): the path it is read from, written to and deleted at, e.g. ``sys/auth/jwt``,
``auth/jwt/role/batch``, ``database/config/pg``. Bodies are what the API takes, normalised: durations in
seconds, and only the fields the file declares (plus a few always-managed ones, such as a role's
``token_policies``), because only those are compared with what the server answers.

Sensitive values (database passwords, KV seeds, ...) are :class:`Sensitive` objects inside the body: their
``repr`` and ``str`` never show the value, and they carry a keyed digest used to detect changes, since the
server never returns them (see ``plan.py`` for how digests are compared with ``applied.json``).

How the edge builds the desired state::

    refs = secret_values(spec, env=os.environ, read_file=lambda p: read_confined(mesh_dir, p))
    desired = desired_resources(spec, secrets=refs, hash_key=state.hash_key,
                                placeholders={"issuer_url": ..., "ca_pem": ...})
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from vaultmesh.errors import SpecError
from vaultmesh.spec.policy import fill_accessors, referenced_mounts
from vaultmesh.spec.resources import (
    AppRoleAuth,
    DatabaseMount,
    JwtAuth,
    KubernetesAuth,
    KvMount,
    PkiMount,
    ResourcesSpec,
    SecretRef,
    TokenFields,
    TransitMount,
    fill_placeholders,
    resolve_quota_path,
    walk_scopes,
)

Loc = tuple[str | int, ...]

PHASES: dict[str, int] = {
    "namespace": 0,
    "auth_mount": 1, "secrets_mount": 1,
    "policy": 2,
    "jwt_config": 3, "kubernetes_config": 3, "db_connection": 3, "pki_root": 3, "pki_urls": 3,
    "rate_limit_quota": 3,
    "jwt_role": 4, "approle_role": 4, "kubernetes_role": 4, "db_role": 4, "pki_role": 4, "transit_key": 4,
    "kv_secret": 5,
}
"""Dependency order: namespaces, mounts (with their tune), policies, configs (and rate-limit quotas, which
need the namespace and mount they name), roles, KV seeds."""

PRUNABLE = frozenset({"namespace", "auth_mount", "secrets_mount", "policy", "db_connection", "jwt_role",
                      "approle_role", "kubernetes_role", "db_role", "pki_role", "transit_key",
                      "rate_limit_quota"})
"""Kinds found on the server but absent from the file are offered for deletion (``--prune``). Singletons
(configs, the PKI root) and KV data are never deleted by vaultmesh."""

UNORDERED_FIELDS = frozenset({
    "token_policies", "bound_audiences", "token_bound_cidrs", "allowed_roles", "bound_service_account_names",
    "bound_service_account_namespaces", "secret_id_bound_cidrs", "allowed_domains", "jwt_supported_algs",
    "audit_non_hmac_request_keys", "audit_non_hmac_response_keys", "passthrough_request_headers",
    "allowed_response_headers", "issuing_certificates", "crl_distribution_points", "allowed_redirect_uris",
    "oidc_scopes", "jwt_validation_pubkeys", "pem_keys",
})
"""List fields whose order means nothing to OpenBao: compared as sorted lists."""

NESTED_FIELDS = frozenset({"config", "options"})
"""Mount body fields that are sub-objects compared key by key (only the declared keys)."""


@dataclass(frozen=True, order=True)
class ResourceKey:
    """Where an object lives: the namespace the request goes to, and the API path inside it."""

    namespace: str
    path: str

    @property
    def id(self) -> str:
        """The full path OpenBao also accepts (namespace as a path prefix): ``team-a/sys/auth/jwt``."""
        return f"{self.namespace}/{self.path}" if self.namespace else self.path

    def __str__(self) -> str:
        return self.id


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, no spaces, Secrets as their digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Sensitive):
        return {"sensitive": value.digest}
    raise TypeError(f"cannot encode {type(value).__name__}")


def digest(hash_key: bytes, value: Any) -> str:
    """Keyed hash (HMAC-SHA256, hex) of a value's canonical JSON.

    Keyed, not a plain sha256: plan output is pasted into reviews, and KV values are often guessable
    ("changeme", a short PIN); an unkeyed hash would let anyone who sees the plan confirm a guess offline.
    The key is per mesh and stable (the apply edge keeps it in the state dir, never in the plan), so the same
    value gives the same digest across plans: that is what lets a plan compare with ``applied.json``. A
    per-plan salt would make every plan look changed.
    """
    return hmac.new(hash_key, canonical_json(value).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Sensitive:
    """A secret value in a body. Never printed: ``str`` is ``(sensitive) <8 hex of its digest>``."""

    origin: str
    """Where it came from, safe to print (``env:PGPASSWORD``)."""
    digest: str
    _value: str = field(repr=False, compare=False)

    def reveal(self) -> str:
        """The value, for the apply edge's request body only."""
        return self._value

    def __str__(self) -> str:
        return f"(sensitive) {self.digest[:8]}"

    def __repr__(self) -> str:
        return f"Sensitive({self.origin}, {self.digest[:8]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sensitive) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)


@dataclass(frozen=True)
class MeshObject:
    """An object of the mesh by kind and place: one it should hold (``Resource``) or one found on the server
    (``observe.Observed``); both are compared by ``key``."""

    kind: str
    namespace: str
    path: str

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.namespace, self.path)


@dataclass(frozen=True)
class Resource(MeshObject):
    """One object the mesh should hold. ``body`` must not be mutated."""

    body: Mapping[str, Any]
    mount: str = ""
    """The mount this object lives in (for mounts: their own path)."""
    name: str = ""
    """The leaf name: role, policy, connection, key, namespace, or seed path."""
    sensitive_fields: frozenset[str] = frozenset()
    write_only_fields: frozenset[str] = frozenset()
    """Fields OpenBao never returns: compared by digest with the last apply instead of with the server."""
    create_only_fields: frozenset[str] = frozenset()
    """Fields sent only when the object is created (a rotated root password, a transit key's type)."""
    digests: Mapping[str, str] = field(default_factory=dict)
    """Keyed digest of each write-only field's value, as recorded in ``applied.json`` after apply."""
    depends_on: tuple[ResourceKey, ...] = ()
    after_create: tuple[str, ...] = ()
    """Paths to POST (empty body) once after creation, e.g. ``database/rotate-root/pg``."""
    source: Loc = ()
    """Where the object is declared in the mesh file (for messages and lint lines)."""
    pending_accessors: frozenset[str] = frozenset()
    """Policies only: mounts whose accessor must be filled in (``hcl.fill_accessors``) once they exist."""

    @property
    def phase(self) -> int:
        return PHASES[self.kind]


def resource_order(r: Resource) -> tuple[int, int, str, str]:
    """Creation order: phase, then parents before children, then by path (deterministic output)."""
    return (r.phase, r.namespace.count("/") + (1 if r.namespace else 0), r.namespace, r.path)


def field_path(loc: Loc) -> str:
    """``("auth", "jwt", "roles", "batch")`` -> ``auth.jwt.roles.batch``; list indexes as ``[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# -- secret references -----------------------------------------------------------------------------------

def secret_refs(spec: ResourcesSpec) -> list[tuple[Loc, SecretRef]]:
    """Every secret reference in the file, with its location."""
    out: list[tuple[Loc, SecretRef]] = []
    for _, loc, scope in walk_scopes(spec):
        for mount, auth in scope.auth.items():
            if isinstance(auth, JwtAuth) and auth.config and auth.config.oidc_client_secret:
                out.append(((*loc, "auth", mount, "config", "oidc_client_secret"), auth.config.oidc_client_secret))
            if isinstance(auth, KubernetesAuth) and auth.config.token_reviewer_jwt:
                out.append(((*loc, "auth", mount, "config", "token_reviewer_jwt"), auth.config.token_reviewer_jwt))
        for mount, eng in scope.secrets.items():
            if isinstance(eng, DatabaseMount):
                for name, conn in eng.connections.items():
                    if conn.password:
                        out.append(((*loc, "secrets", mount, "connections", name, "password"), conn.password))
            if isinstance(eng, KvMount):
                for path, values in eng.seed.items():
                    for key, ref in values.items():
                        out.append(((*loc, "secrets", mount, "seed", path, key), ref))
    return out


def secret_values(spec: ResourcesSpec, *, env: Mapping[str, str],
                  read_file: Callable[[str], str]) -> dict[SecretRef, str]:
    """Resolve every reference from ``env`` and ``read_file`` (the edge passes a reader rooted at the mesh
    file's folder). Optional references that are absent are left out; a required one raises SpecError."""
    values: dict[SecretRef, str] = {}
    for loc, ref in secret_refs(spec):
        if ref in values:
            continue
        if ref.from_env is not None:
            if ref.from_env in env:
                values[ref] = env[ref.from_env]
            elif not ref.optional:
                raise SpecError(f"environment variable {ref.from_env} is not set", field=field_path(loc),
                                hint="export it before plan/apply, or mark the reference optional: true")
        else:
            try:
                text = read_file(str(ref.from_file))
            except ValueError as err:  # outside the mesh file's folder
                raise SpecError(f"secret file refused: {err}", field=field_path(loc)) from None
            except OSError as err:
                if ref.optional:
                    continue
                raise SpecError(f"cannot read secret file {ref.from_file}: {err.strerror or 'unreadable'}",
                                field=field_path(loc)) from None
            values[ref] = text[:-1] if text.endswith("\n") else text
    return values


# -- building --------------------------------------------------------------------------------------------

def _declared(model: BaseModel, always: Iterable[str] = (), skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields the file wrote (plus ``always``), as plain JSON-able values; None means unset."""
    names = (set(model.model_fields_set) | set(always)) - set(skip)
    data = model.model_dump(include=names)
    return {k: v for k, v in data.items() if v is not None}


_TOKEN_ALWAYS = ("token_policies",)
DECLARED_ONLY = ("lease_budget",)
"""Fields of the file that vaultmesh watches itself and never sends (OpenBao has no lease-count quota)."""


class _Builder:
    def __init__(self, spec: ResourcesSpec, secrets: Mapping[SecretRef, str], hash_key: bytes,
                 accessors: Mapping[str, str], placeholders: Mapping[str, str]) -> None:
        self.spec = spec
        self.secrets = secrets
        self.hash_key = hash_key
        self.accessors = accessors
        self.placeholders = placeholders
        self.out: list[Resource] = []

    def secret(self, ref: SecretRef | None, loc: Loc) -> Sensitive | None:
        if ref is None:
            return None
        if ref in self.secrets:
            value = self.secrets[ref]
            return Sensitive(ref.describe(), digest(self.hash_key, value), value)
        if ref.optional:
            return None
        raise SpecError(f"the secret from {ref.describe()} was not resolved", field=field_path(loc),
                        hint="resolve secrets with secret_values() before building the desired state")

    def fill(self, value: str, loc: Loc) -> str:
        try:
            return fill_placeholders(value, self.placeholders)
        except KeyError as err:
            raise SpecError(f"placeholder {{{{vaultmesh.{err.args[0]}}}}} has no value", field=field_path(loc),
                            hint="the CLI fills it when the mesh's identity issuer is running") from None

    def add(self, kind: str, ns: str, path: str, body: Mapping[str, Any], *, loc: Loc, mount: str = "",
            name: str = "", write_only: Iterable[str] = (), create_only: Iterable[str] = (),
            depends_on: Iterable[ResourceKey] = (), after_create: tuple[str, ...] = (),
            pending: frozenset[str] = frozenset()) -> ResourceKey:
        write_only = frozenset(f for f in write_only if f in body)
        sensitive = frozenset(k for k, v in body.items() if isinstance(v, Sensitive))
        write_only |= sensitive
        digests = {f: body[f].digest if isinstance(body[f], Sensitive) else digest(self.hash_key, body[f])
                   for f in write_only}
        deps = tuple(dict.fromkeys(depends_on))
        r = Resource(kind=kind, namespace=ns, path=path, body=dict(body), mount=mount, name=name,
                     sensitive_fields=sensitive, write_only_fields=write_only,
                     create_only_fields=frozenset(f for f in create_only if f in body), digests=digests,
                     depends_on=deps, after_create=after_create, source=loc, pending_accessors=pending)
        self.out.append(r)
        return r.key

    def build(self) -> list[Resource]:
        ns_keys: dict[str, ResourceKey] = {}
        for ns, loc, scope in walk_scopes(self.spec):
            parent_deps = [ns_keys[ns]] if ns in ns_keys else []
            for child, child_spec in scope.namespaces.items():
                full = f"{ns}/{child}" if ns else child
                ns_keys[full] = self.add("namespace", ns, f"sys/namespaces/{child}",
                                         {"custom_metadata": dict(child_spec.custom_metadata)},
                                         loc=(*loc, "namespaces", child), name=child, depends_on=parent_deps)
            self.scope(ns, loc, scope, parent_deps)
        self.quotas(ns_keys)
        return sorted(self.out, key=resource_order)

    def quotas(self, ns_keys: Mapping[str, ResourceKey]) -> None:
        """Rate-limit quotas live at the root (OpenBao takes ``sys/quotas`` there only) and name their
        namespace by path prefix; each depends on the namespace and mount it names. Every field is managed
        (an unset one is OpenBao's default: global, 1 s, no block, every role), so a quota changed behind
        vaultmesh's back is put back."""
        for name, quota in self.spec.quotas.rate_limit.items():
            target = resolve_quota_path(self.spec, quota.path)
            deps = [ns_keys[target.namespace]] if target.namespace in ns_keys else []
            if target.mount is not None:
                table = "sys/auth" if target.auth else "sys/mounts"
                deps.append(ResourceKey(target.namespace, f"{table}/{target.mount.removeprefix('auth/')}"))
            body = {"path": quota.path, "rate": quota.rate, "interval": quota.interval,
                    "block_interval": quota.block_interval, "role": quota.role or ""}
            self.add("rate_limit_quota", "", f"sys/quotas/rate-limit/{name}", body,
                     loc=("quotas", "rate_limit", name), name=name, depends_on=deps)

    def scope(self, ns: str, loc: Loc, scope: Any, base: list[ResourceKey]) -> None:
        limits = self.spec.limits
        auth_keys: dict[str, ResourceKey] = {}
        for mount, auth in scope.auth.items():
            mloc = (*loc, "auth", mount)
            body: dict[str, Any] = {"type": auth.type, "config": _declared(auth.tune)}
            if auth.description is not None:
                body["description"] = auth.description
            auth_keys[mount] = self.add("auth_mount", ns, f"sys/auth/{mount}", body, loc=mloc, mount=mount,
                                        name=mount, depends_on=base)
        policy_keys: dict[str, ResourceKey] = {}
        for name, pol in scope.policies.items():
            ploc = (*loc, "policies", name)
            if pol.hcl is None:
                raise SpecError(f"policy file {pol.file} was not read", field=field_path(ploc),
                                hint="load the mesh file with its folder as base_dir")
            filled = fill_accessors(pol.hcl, self.accessors, namespace=ns)
            deps = [*base, *(auth_keys[m] for m in sorted(referenced_mounts(pol.hcl)) if m in auth_keys)]
            policy_keys[name] = self.add("policy", ns, f"sys/policies/acl/{name}", {"policy": filled.text},
                                         loc=ploc, name=name, depends_on=deps, pending=filled.pending)
        for mount, auth in scope.auth.items():
            self.auth_children(ns, (*loc, "auth", mount), mount, auth, [*base, auth_keys[mount]], policy_keys,
                               limits)
        for mount, eng in scope.secrets.items():
            mloc = (*loc, "secrets", mount)
            body = {"type": eng.type, "config": _declared(eng.tune)}
            if isinstance(eng, KvMount):
                body["options"] = {"version": str(eng.version)}
            if eng.description is not None:
                body["description"] = eng.description
            key = self.add("secrets_mount", ns, f"sys/mounts/{mount}", body, loc=mloc, mount=mount, name=mount,
                           depends_on=base)
            self.secrets_children(ns, mloc, mount, eng, [*base, key])

    def role_body(self, role: TokenFields, always: Iterable[str], limits: Any) -> dict[str, Any]:
        body = _declared(role, always=(*_TOKEN_ALWAYS, *always), skip=DECLARED_ONLY)
        body.setdefault("token_ttl", limits.token_ttl)
        body.setdefault("token_max_ttl", limits.token_max_ttl)
        return body

    def auth_children(self, ns: str, loc: Loc, mount: str, auth: Any, deps: list[ResourceKey],
                      policy_keys: Mapping[str, ResourceKey], limits: Any) -> None:
        role_deps = list(deps)
        if isinstance(auth, JwtAuth) and auth.config is not None:
            cloc = (*loc, "config")
            body = _declared(auth.config, skip=("oidc_client_secret",))
            body = {k: self.fill(v, (*cloc, k)) if isinstance(v, str) else v for k, v in body.items()}
            secret = self.secret(auth.config.oidc_client_secret, (*cloc, "oidc_client_secret"))
            if secret is not None:
                body["oidc_client_secret"] = secret
            role_deps.append(self.add("jwt_config", ns, f"auth/{mount}/config", body, loc=cloc, mount=mount,
                                      name="config", depends_on=deps))
        if isinstance(auth, KubernetesAuth):
            cloc = (*loc, "config")
            body = _declared(auth.config, always=("kubernetes_host",), skip=("token_reviewer_jwt",))
            body = {k: self.fill(v, (*cloc, k)) if isinstance(v, str) else v for k, v in body.items()}
            secret = self.secret(auth.config.token_reviewer_jwt, (*cloc, "token_reviewer_jwt"))
            if secret is not None:
                body["token_reviewer_jwt"] = secret
            role_deps.append(self.add("kubernetes_config", ns, f"auth/{mount}/config", body, loc=cloc,
                                      mount=mount, name="config", depends_on=deps))
        kind, always = {
            JwtAuth: ("jwt_role", ("role_type", "user_claim", "bound_audiences", "bound_subject", "bound_claims",
                                   "claim_mappings")),
            AppRoleAuth: ("approle_role", ()),
            KubernetesAuth: ("kubernetes_role", ("bound_service_account_names",
                                                 "bound_service_account_namespaces")),
        }[type(auth)]
        for name, role in auth.roles.items():
            pol_deps = [policy_keys[p] for p in role.token_policies if p in policy_keys]
            self.add(kind, ns, f"auth/{mount}/role/{name}", self.role_body(role, always, limits),
                     loc=(*loc, "roles", name), mount=mount, name=name, depends_on=[*role_deps, *pol_deps])

    def secrets_children(self, ns: str, loc: Loc, mount: str, eng: Any, deps: list[ResourceKey]) -> None:
        if isinstance(eng, KvMount):
            for path, values in eng.seed.items():
                body = {}
                for key, ref in values.items():
                    secret = self.secret(ref, (*loc, "seed", path, key))
                    if secret is not None:
                        body[key] = secret
                if body:
                    api = f"{mount}/data/{path}" if eng.version == 2 else f"{mount}/{path}"
                    self.add("kv_secret", ns, api, body, loc=(*loc, "seed", path), mount=mount, name=path,
                             depends_on=deps)
        elif isinstance(eng, DatabaseMount):
            conn_keys: dict[str, ResourceKey] = {}
            for name, conn in eng.connections.items():
                cloc = (*loc, "connections", name)
                body = _declared(conn, always=("plugin_name", "connection_url"), skip=("password", "rotate_root"))
                body["allowed_roles"] = sorted(conn.allowed_roles if conn.allowed_roles is not None
                                               else [r for r, role in eng.roles.items() if role.db_name == name])
                secret = self.secret(conn.password, (*cloc, "password"))
                if secret is not None:
                    body["password"] = secret
                conn_keys[name] = self.add(
                    "db_connection", ns, f"{mount}/config/{name}", body, loc=cloc, mount=mount, name=name,
                    write_only=("password", "verify_connection"),
                    create_only=("password",) if conn.rotate_root else (), depends_on=deps,
                    after_create=(f"{mount}/rotate-root/{name}",) if conn.rotate_root else ())
            for name, role in eng.roles.items():
                body = _declared(role, always=("db_name", "creation_statements", "revocation_statements",
                                               "rollback_statements", "renew_statements"), skip=DECLARED_ONLY)
                self.add("db_role", ns, f"{mount}/roles/{name}", body, loc=(*loc, "roles", name), mount=mount,
                         name=name, depends_on=[*deps, *([conn_keys[role.db_name]] if role.db_name in conn_keys
                                                         else [])])
        elif isinstance(eng, PkiMount):
            role_deps = list(deps)
            if eng.root is not None:
                body = _declared(eng.root, always=("common_name", "issuer_name", "ttl", "key_type"))
                fixed = [f for f in body if f != "issuer_name"]
                role_deps.append(self.add("pki_root", ns, f"{mount}/root/generate/internal", body,
                                          loc=(*loc, "root"), mount=mount, name=eng.root.issuer_name,
                                          write_only=fixed, create_only=fixed, depends_on=deps))
            if eng.urls is not None:
                body = _declared(eng.urls, always=("issuing_certificates", "crl_distribution_points"))
                self.add("pki_urls", ns, f"{mount}/config/urls", body, loc=(*loc, "urls"), mount=mount,
                         name="urls", depends_on=deps)
            for name, role in eng.roles.items():
                self.add("pki_role", ns, f"{mount}/roles/{name}", _declared(role), loc=(*loc, "roles", name),
                         mount=mount, name=name, depends_on=role_deps)
        elif isinstance(eng, TransitMount):
            for name, key in eng.keys.items():
                self.add("transit_key", ns, f"{mount}/keys/{name}", _declared(key, always=("type",)),
                         loc=(*loc, "keys", name), mount=mount, name=name, create_only=("type",),
                         depends_on=deps)


def desired_resources(spec: ResourcesSpec, *, secrets: Mapping[SecretRef, str], hash_key: bytes,
                      accessors: Mapping[str, str] | None = None,
                      placeholders: Mapping[str, str] | None = None) -> list[Resource]:
    """Every object the file declares, in creation order.

    ``secrets``: values of the file's secret references (``secret_values``). ``hash_key``: the mesh's
    digest key. ``accessors``: known auth-mount accessors by full mount path (``jwt``, ``team-a/jwt``); the
    plan also fills them from the observed state, so this may be left empty. ``placeholders``: values for
    ``{{vaultmesh.<name>}}`` (``issuer_url``, ``ca_pem``).
    """
    return _Builder(spec, secrets, hash_key, accessors or {}, placeholders or {}).build()


def iter_namespaces(desired: Iterable[Resource]) -> Iterator[str]:
    """Full paths of the namespaces the desired state contains, root ("") first, parents before children."""
    yield ""
    for r in desired:
        if r.kind == "namespace":
            yield f"{r.namespace}/{r.name}" if r.namespace else r.name
