"""The mesh file: what lives inside the mesh (policies, auth methods, secrets engines, audit, namespaces).

``ResourcesSpec`` owns these top-level keys of the mesh file; ``MeshSpec`` inherits it and adds the lifecycle
keys (nodes, zones, seal, ...)::

    limits:   {token_ttl: 15m, token_max_ttl: 1h}      # defaults for every role, and the lint threshold
    policies: {<name>: {hcl: "..."} | {file: policies/x.hcl} | "<inline hcl>"}
    auth:     {<mount path>: {type: jwt|oidc|approle|kubernetes, tune: {...}, config: {...}, roles: {...}}}
    secrets:  {<mount path>: {type: kv|database|pki|transit, ...}}
    audit:    {<name>: {type: file|socket|syslog, options: {...}}}   # rendered into node config by others
    quotas:   {rate_limit: {<name>: {path, rate, interval, block_interval, role}}}   # root only (OpenBao's rule)
    namespaces: {<name>: {policies, auth, secrets, namespaces, custom_metadata}}   # nest freely
    expect:   [{login: {mount, role, claims}, can: {read: [...]}, cannot: {list: [...], any: [...]}}]

Rules every model follows: unknown fields are errors (``extra="forbid"``), models are frozen, every field has
a default (an empty file is valid), durations are whole seconds (see ``spec.types.Duration``), and no secret
value is ever written in the file: secrets are ``{from_env: VAR}`` or ``{from_file: path}`` references.

Cross-reference errors (a role naming a missing policy, a duplicate mount path, ...) are raised as pydantic
``ValidationError`` s whose locations point at the offending field, so the loader can map them to file:line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from vaultmesh.spec.policy import HclError, parse_policy, referenced_mounts
from vaultmesh.spec.types import Duration, MountPath, Name, NamespaceName

Loc = tuple[str | int, ...]

BUILTIN_POLICIES = frozenset({"default", "root"})
"""Policies every namespace has; ``root`` cannot be written, ``default`` may be managed but never deleted."""
BOOTSTRAP_POLICY = "vaultmesh-admin"
"""Created at the root by vaultmesh's bootstrap; the file may name it in a role but never define it."""
BOOTSTRAP_AUTH = "userpass"
"""The root-namespace auth mount vaultmesh's bootstrap creates for its admin user."""
BENCH_PREFIX = "vaultmesh-bench"
"""The names of what ``vaultmesh bench`` and ``chaos`` apply at the root (their own file, ``bench/targets.yaml``):
mounts and policies whose name starts with it are never offered for pruning by another file."""
RESERVED_AUTH = frozenset({"token"})
RESERVED_SECRETS = frozenset({"sys", "identity", "cubbyhole", "auth"})

PLACEHOLDERS = {
    "issuer_url": "the URL of vaultmesh's own workload-identity issuer (OIDC discovery base URL)",
    "ca_pem": "the mesh CA certificate, PEM",
}
"""``{{vaultmesh.<name>}}`` values the CLI fills in when it builds the desired state (see ``desired_resources``)."""
_PLACEHOLDER = re.compile(r"\{\{\s*vaultmesh\.([a-z_]+)\s*\}\}")


def _fail(errors: list[tuple[Loc, str]], title: str) -> None:
    """Raise one ValidationError carrying every (location, message), locations relative to the model."""
    if errors:
        raise ValidationError.from_exception_data(title, [
            InitErrorDetails(type=PydanticCustomError("mesh_reference", msg), loc=loc, input=None)
            for loc, msg in errors
        ])


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _by_type(what: str, models: dict[str, type[BaseModel]]) -> BeforeValidator:
    """Pick the model by the ``type`` field. Unlike a pydantic discriminated union, errors keep the plain
    location (``auth.jwt.roles``, not ``auth.jwt.jwt.roles``) so the loader can find the line."""
    known = ", ".join(sorted(models))

    def validate(value: Any, info: ValidationInfo) -> BaseModel:
        if isinstance(value, tuple(models.values())):
            return value
        if not isinstance(value, dict):
            raise PydanticCustomError("mapping_type", f"expected a mapping with a type ({known}) for this {what}")
        kind = value.get("type")
        if kind is None:
            _fail([(("type",), f"this {what} needs a type: one of {known}")], what)
        model = models.get(str(kind))
        if model is None:
            _fail([(("type",), f"unknown {what} type '{kind}'; known: {known}")], what)
            raise AssertionError  # unreachable: _fail raised
        return model.model_validate(value, context=info.context)

    return BeforeValidator(validate)


# -- secrets and placeholders ----------------------------------------------------------------------------

class SecretRef(_Model):
    """Where a secret value comes from at apply time. Literal values are refused."""

    from_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    from_file: str | None = None
    """Relative to the mesh file's folder. One trailing newline is dropped."""
    optional: bool = False
    """Unset variable or missing file: leave the field out instead of failing."""

    @model_validator(mode="before")
    @classmethod
    def _no_literal(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError(
                "literal_secret",
                "secret values never go in the mesh file: write {from_env: VARIABLE} or {from_file: path}")
        return data

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.from_env is None) == (self.from_file is None):
            raise ValueError("give exactly one of from_env or from_file")
        if self.from_file is not None:
            check_relative(self.from_file)
        return self

    def describe(self) -> str:
        """Where the value comes from, safe to print: ``env:NAME`` or ``file:path``."""
        return f"env:{self.from_env}" if self.from_env is not None else f"file:{self.from_file}"


def _check_placeholders(value: str) -> str:
    for name in _PLACEHOLDER.findall(value):
        if name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{{vaultmesh.{name}}}}}; known: "
                             + ", ".join(f"vaultmesh.{n}" for n in sorted(PLACEHOLDERS)))
    return value


Templated = Annotated[str, AfterValidator(_check_placeholders)]
"""A string that may contain ``{{vaultmesh.<name>}}`` placeholders (see PLACEHOLDERS)."""


def fill_placeholders(value: str, placeholders: Mapping[str, str]) -> str:
    """Replace ``{{vaultmesh.<name>}}``; KeyError names the first placeholder with no value."""
    return _PLACEHOLDER.sub(lambda m: placeholders[m.group(1)], value)


# -- limits and policies ---------------------------------------------------------------------------------

class Limits(_Model):
    token_ttl: Duration = 900
    """15 minutes: workloads renew; a leaked token should be worthless soon."""
    token_max_ttl: Duration = 3600
    """1 hour: long enough for a batch job, short enough that nobody treats a token as permanent."""

    @model_validator(mode="after")
    def _order(self) -> Limits:
        if self.token_ttl > self.token_max_ttl:
            raise ValueError("limits.token_ttl cannot exceed limits.token_max_ttl")
        return self


def check_relative(relative: str) -> str:
    """A file reference of the mesh file: relative to its folder, without ``..``. Pure; raises ValueError."""
    path = Path(relative)
    if path.is_absolute() or relative.startswith("~"):
        raise ValueError(f"{relative!r} is absolute: files named in the mesh file are relative to its folder")
    if ".." in path.parts:
        raise ValueError(f"{relative!r} climbs out with '..': files named in the mesh file stay in its folder")
    return relative


def read_confined(base_dir: Path, relative: str) -> str:
    """The one I/O in the spec: read a file named in the mesh file, confined to the file's folder (no absolute
    path, no ``..``, no symlink that resolves outside). Raises ValueError (outside) or OSError (unreadable)."""
    check_relative(relative)
    root = base_dir.resolve()
    path = (base_dir / relative).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"{relative!r} resolves outside the mesh file's folder (a symlink?): refused")
    return path.read_text()


def read_policy_file(base_dir: Path, relative: str) -> str:
    """A policy file named in the mesh file, relative to the file's folder."""
    try:
        return read_confined(base_dir, relative)
    except FileNotFoundError:
        raise ValueError(f"policy file {relative} does not exist (paths are relative to the mesh file)") from None
    except OSError as err:
        raise ValueError(f"cannot read policy file {relative}: {err.strerror}") from None


class PolicySpec(_Model):
    """An ACL policy: inline ``hcl``, or a ``file`` read at load time (the loader passes ``base_dir``)."""

    hcl: str | None = None
    file: str | None = None
    admin: bool = False
    """Marks a deliberate admin policy: lint does not flag its wildcard or sudo grants."""

    @model_validator(mode="before")
    @classmethod
    def _load(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, str):
            return {"hcl": data}
        if not isinstance(data, dict):
            return data
        base_dir = (info.context or {}).get("base_dir")
        if data.get("file") is not None:
            try:
                check_relative(str(data["file"]))
            except ValueError as err:
                raise PydanticCustomError("policy_file", str(err)) from None
        if data.get("file") is not None and base_dir is not None:
            if data.get("hcl") is not None:
                raise ValueError("give either hcl or file, not both")
            try:
                text = read_policy_file(Path(base_dir), str(data["file"]))
            except ValueError as err:
                raise PydanticCustomError("policy_file", str(err)) from None
            return {**data, "hcl": text}
        return data

    @model_validator(mode="after")
    def _check(self) -> PolicySpec:
        if self.hcl is None and self.file is None:
            raise ValueError("a policy needs hcl (inline text) or file (a path relative to the mesh file)")
        if self.hcl is not None:
            try:
                parse_policy(self.hcl)
            except HclError as err:
                where = "file" if self.file else "hcl"
                # A file's text is never echoed (a wrong path could name a file of secrets): its line only.
                msg = (f"{self.file}: line {err.line}: not an ACL policy (expected path \"...\" "
                       "{ capabilities = [...] } stanzas)") if self.file else str(err)
                _fail([((where,), f"invalid policy: {msg}")], "PolicySpec")
        return self


# -- auth methods ----------------------------------------------------------------------------------------

class MountTune(_Model):
    """Mount options set at enable time and by ``tune``; only the ones written here are compared."""

    default_lease_ttl: Duration | None = None
    max_lease_ttl: Duration | None = None
    listing_visibility: Literal["hidden", "unauth"] | None = None
    audit_non_hmac_request_keys: list[str] | None = None
    audit_non_hmac_response_keys: list[str] | None = None
    passthrough_request_headers: list[str] | None = None
    allowed_response_headers: list[str] | None = None


class AuthTune(MountTune):
    token_type: Literal["default-service", "default-batch", "service", "batch"] | None = None


TokenType = Literal["service", "batch", "default", "default-service", "default-batch"]


class _Typed(_Model):
    """A secrets engine, auth method or audit device: its ``type`` (each model narrows it to its own values)
    and a description."""

    type: str
    description: str | None = None


class _SecretsEngine(_Typed):
    tune: MountTune = MountTune()


class _AuthMethod(_Typed):
    tune: AuthTune = AuthTune()


class _AuditDevice(_Typed):
    local: bool = False


class TokenFields(_Model):
    """Token settings common to every role. Unset TTLs default to ``limits``."""

    token_policies: list[Name] = Field(default_factory=list)
    token_ttl: Duration | None = None
    token_max_ttl: Duration | None = None
    token_type: TokenType | None = None
    token_bound_cidrs: list[str] | None = None
    token_no_default_policy: bool | None = None
    token_num_uses: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _ttl_order(self) -> TokenFields:
        if self.token_ttl is not None and self.token_max_ttl is not None and self.token_ttl > self.token_max_ttl:
            raise ValueError("token_ttl cannot exceed token_max_ttl")
        return self


class JwtConfig(_Model):
    """``auth/<mount>/config``: exactly one way to find the keys that sign the JWTs."""

    oidc_discovery_url: Templated | None = None
    oidc_discovery_ca_pem: Templated | None = None
    jwks_url: Templated | None = None
    jwks_ca_pem: Templated | None = None
    jwt_validation_pubkeys: list[str] | None = None
    bound_issuer: Templated | None = None
    jwt_supported_algs: list[str] | None = None
    default_role: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretRef | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtConfig:
        sources = [n for n in ("oidc_discovery_url", "jwks_url", "jwt_validation_pubkeys")
                   if getattr(self, n) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of oidc_discovery_url, jwks_url or jwt_validation_pubkeys"
                             + (f" (found {', '.join(sources)})" if sources else ""))
        if self.jwks_ca_pem is not None and self.jwks_url is None:
            raise ValueError("jwks_ca_pem only applies with jwks_url")
        if self.oidc_discovery_ca_pem is not None and self.oidc_discovery_url is None:
            raise ValueError("oidc_discovery_ca_pem only applies with oidc_discovery_url")
        return self


ClaimValue = str | list[str]


LeaseBudget = Annotated[int, Field(strict=True, ge=1)]
"""A count of live leases (or tokens) a role may hold at once; watched, not enforced by OpenBao."""


class JwtRole(TokenFields):
    role_type: Literal["jwt", "oidc"] = "jwt"
    user_claim: str = "sub"
    bound_audiences: list[str] = Field(default_factory=list)
    bound_subject: str = ""
    bound_claims: dict[str, ClaimValue] = Field(default_factory=dict)
    bound_claims_type: Literal["string", "glob"] | None = None
    claim_mappings: dict[str, str] = Field(default_factory=dict)
    groups_claim: str | None = None
    allowed_redirect_uris: list[str] | None = None
    oidc_scopes: list[str] | None = None
    lease_budget: LeaseBudget | None = None
    """How many live tokens logins on this role may hold at once. Declared only, never sent: OpenBao has no
    lease-count quota; ``reconcile.budget`` watches it (tokens of one mount share one lease prefix)."""

    @model_validator(mode="after")
    def _bound(self) -> JwtRole:
        if self.role_type == "jwt" and not (self.bound_audiences or self.bound_subject or self.bound_claims
                                            or self.token_bound_cidrs):
            raise ValueError("a jwt role needs at least one of bound_audiences, bound_subject, bound_claims "
                             "or token_bound_cidrs (OpenBao refuses it otherwise)")
        if self.role_type == "oidc" and not self.allowed_redirect_uris:
            raise ValueError("an oidc role needs allowed_redirect_uris")
        return self


class JwtAuth(_AuthMethod):
    type: Literal["jwt", "oidc"]
    config: JwtConfig | None = None
    roles: dict[Name, JwtRole] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_config(self) -> JwtAuth:
        if self.roles and self.config is None:
            raise ValueError("a jwt mount with roles needs a config (where its signing keys come from)")
        return self


class AppRoleRole(TokenFields):
    bind_secret_id: bool | None = None
    secret_id_ttl: Duration | None = None
    secret_id_num_uses: Annotated[int, Field(ge=0)] | None = None
    secret_id_bound_cidrs: list[str] | None = None


class AppRoleAuth(_AuthMethod):
    type: Literal["approle"]
    roles: dict[Name, AppRoleRole] = Field(default_factory=dict)


class KubernetesConfig(_Model):
    kubernetes_host: str
    kubernetes_ca_cert: Templated | None = None
    token_reviewer_jwt: SecretRef | None = None
    pem_keys: list[str] | None = None
    disable_local_ca_jwt: bool | None = None


class KubernetesRole(TokenFields):
    bound_service_account_names: Annotated[list[str], Field(min_length=1)]
    bound_service_account_namespaces: Annotated[list[str], Field(min_length=1)]
    audience: str | None = None
    alias_name_source: Literal["serviceaccount_uid", "serviceaccount_name"] | None = None


class KubernetesAuth(_AuthMethod):
    type: Literal["kubernetes"]
    config: KubernetesConfig
    roles: dict[Name, KubernetesRole] = Field(default_factory=dict)


AuthMount = Annotated[JwtAuth | AppRoleAuth | KubernetesAuth,
                      _by_type("auth method", {"jwt": JwtAuth, "oidc": JwtAuth, "approle": AppRoleAuth,
                                               "kubernetes": KubernetesAuth})]


# -- secrets engines -------------------------------------------------------------------------------------

SeedPath = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")]


class KvMount(_SecretsEngine):
    type: Literal["kv"]
    version: Literal[1, 2] = 2
    seed: dict[SeedPath, dict[str, SecretRef]] = Field(default_factory=dict)
    """Secrets written at apply time from env/files: written when missing or when their value changed since
    the last apply (compared by keyed hash); never read back, never deleted by vaultmesh."""


_PASSWORD_PARAM = re.compile(r"(?:^|[?&\s;])(?:ssl)?(?:password|passwd|pwd)\s*=\s*"
                             r"(?P<value>'[^']*'|\"[^\"]*\"|[^&\s;]*)", re.I)
_URL_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://(?P<user>[^:/@]*):(?P<password>[^@/]*)@", re.I)


class DbConnection(_Model):
    plugin_name: str = "postgresql-database-plugin"
    connection_url: str
    username: str | None = None
    password: SecretRef | None = None
    allowed_roles: list[str] | None = None
    """Unset: exactly the roles of this mount that use this connection."""
    rotate_root: bool = False
    """Rotate the root password right after creating the connection: afterwards only OpenBao knows it, and
    the password in the file is never sent again."""
    verify_connection: bool | None = None
    max_open_connections: Annotated[int, Field(ge=1)] | None = None
    password_policy: str | None = None
    root_rotation_statements: list[str] | None = None

    @field_validator("connection_url")
    @classmethod
    def _no_password_in_url(cls, url: str) -> str:
        m = _URL_USERINFO.match(url)
        literal = bool(m and m.group("password") not in ("{{password}}", ""))
        # ?password=... / &sslpassword=... in a URL, and password=... in a keyword DSN ("host=h password=x")
        for found in _PASSWORD_PARAM.finditer(url):
            if found.group("value").strip("'\"") not in ("{{password}}", ""):
                literal = True
        if literal:
            raise ValueError("connection_url must not contain a password: write {{password}} there and give "
                             "password: {from_env: VARIABLE}")
        return url


class DbRole(_Model):
    db_name: str
    creation_statements: Annotated[list[str], Field(min_length=1)]
    revocation_statements: list[str] = Field(default_factory=list)
    rollback_statements: list[str] = Field(default_factory=list)
    renew_statements: list[str] = Field(default_factory=list)
    default_ttl: Duration | None = None
    max_ttl: Duration | None = None
    lease_budget: LeaseBudget | None = None
    """How many live credentials (leases under ``<mount>/creds/<role>/``) this role may hold at once. Declared
    only, never sent: OpenBao has no lease-count quota; ``reconcile.budget`` watches it."""


class DatabaseMount(_SecretsEngine):
    type: Literal["database"]
    connections: dict[Name, DbConnection] = Field(default_factory=dict)
    roles: dict[Name, DbRole] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> DatabaseMount:
        errors: list[tuple[Loc, str]] = []
        for name, role in self.roles.items():
            conn = self.connections.get(role.db_name)
            if conn is None:
                errors.append((("roles", name, "db_name"), f"connection '{role.db_name}' is not declared under "
                               f"connections (declared: {', '.join(sorted(self.connections)) or 'none'})"))
            elif conn.allowed_roles is not None and not {"*", name} & set(conn.allowed_roles):
                errors.append((("connections", role.db_name, "allowed_roles"),
                               f"role '{name}' uses this connection but allowed_roles does not list it"))
        _fail(errors, "DatabaseMount")
        return self


class PkiRoot(_Model):
    """Generate an internal root CA once (``root/generate/internal``). Changes later are not applied: rotate a
    root deliberately."""

    common_name: str
    issuer_name: Name = "root"
    ttl: Duration = 10 * 365 * 86400
    key_type: Literal["rsa", "ec", "ed25519"] = "ec"
    key_bits: int | None = None


class PkiUrls(_Model):
    issuing_certificates: list[str] = Field(default_factory=list)
    crl_distribution_points: list[str] = Field(default_factory=list)


class PkiRole(_Model):
    allowed_domains: list[str] | None = None
    allow_subdomains: bool | None = None
    allow_bare_domains: bool | None = None
    allow_glob_domains: bool | None = None
    allow_any_name: bool | None = None
    allow_localhost: bool | None = None
    allow_ip_sans: bool | None = None
    enforce_hostnames: bool | None = None
    server_flag: bool | None = None
    client_flag: bool | None = None
    key_type: Literal["rsa", "ec", "ed25519", "any"] | None = None
    key_bits: int | None = None
    ttl: Duration | None = None
    max_ttl: Duration | None = None
    no_store: bool | None = None
    issuer_ref: str | None = None


class PkiMount(_SecretsEngine):
    type: Literal["pki"]
    root: PkiRoot | None = None
    urls: PkiUrls | None = None
    roles: dict[Name, PkiRole] = Field(default_factory=dict)


class TransitKey(_Model):
    type: Literal["aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "ed25519", "ecdsa-p256", "ecdsa-p384",
                  "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096", "hmac"] = "aes256-gcm96"
    """Fixed at creation: OpenBao cannot change a key's type."""
    exportable: bool | None = None
    allow_plaintext_backup: bool | None = None
    deletion_allowed: bool | None = None
    auto_rotate_period: Duration | None = None


class TransitMount(_SecretsEngine):
    type: Literal["transit"]
    keys: dict[Name, TransitKey] = Field(default_factory=dict)


SecretsMount = Annotated[KvMount | DatabaseMount | PkiMount | TransitMount,
                         _by_type("secrets engine", {"kv": KvMount, "database": DatabaseMount, "pki": PkiMount,
                                                     "transit": TransitMount})]


# -- audit -----------------------------------------------------------------------------------------------

class _AuditOptions(_Model):
    format: Literal["json", "jsonx"] | None = None
    prefix: str | None = None
    log_raw: bool = False
    """Logs secrets in clear text. Lint warns."""
    hmac_accessor: bool | None = None
    elide_list_responses: bool | None = None


class FileAuditOptions(_AuditOptions):
    file_path: str
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3}$")] | None = None

    @field_validator("file_path")
    @classmethod
    def _relative(cls, path: str) -> str:
        if path.startswith("/"):
            raise ValueError("file_path must be relative: the audit stanza must be identical on every node, and "
                             "each node resolves a relative path in its own folder (an absolute per-node path "
                             "keeps standbys from taking over)")
        if ".." in Path(path).parts or path in ("", "."):
            raise ValueError("file_path must name a file inside the node's folder, without '..'")
        return path

    @field_validator("mode")
    @classmethod
    def _private(cls, mode: str | None) -> str | None:
        if mode is not None and int(mode, 8) & 0o177:
            raise ValueError(f"mode {mode} lets others read or run the audit log (it holds who did what, and "
                             "request data): use 0600 or stricter")
        return mode


class SocketAuditOptions(_AuditOptions):
    address: str
    socket_type: Literal["tcp", "udp", "unix"] = "tcp"
    write_timeout: str | None = None


class SyslogAuditOptions(_AuditOptions):
    facility: str | None = None
    tag: str | None = None


class FileAudit(_AuditDevice):
    type: Literal["file"]
    options: FileAuditOptions


class SocketAudit(_AuditDevice):
    type: Literal["socket"]
    options: SocketAuditOptions


class SyslogAudit(_AuditDevice):
    type: Literal["syslog"]
    options: SyslogAuditOptions = SyslogAuditOptions()


AuditDevice = Annotated[FileAudit | SocketAudit | SyslogAudit,
                        _by_type("audit device", {"file": FileAudit, "socket": SocketAudit,
                                                  "syslog": SyslogAudit})]


# -- quotas ----------------------------------------------------------------------------------------------

_QUOTA_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_QUOTA_PATH = re.compile(rf"^(?:{_QUOTA_SEGMENT}/)*(?:{_QUOTA_SEGMENT}\*?|\*)$")
ROOT_AUTH_BUILTINS = frozenset({BOOTSTRAP_AUTH, "token"})
"""Auth mounts of the root namespace that exist without being declared (a quota may name them)."""
SECRETS_BUILTINS = frozenset({"sys", "identity", "cubbyhole"})


def _quota_path(value: object) -> object:
    """The quota's ``path`` as OpenBao takes it, without a trailing slash: "" (every request), a namespace
    (``team-a``), a mount (``auth/jwt``, ``team-a/auth/jwt``), a path inside one (``auth/jwt/login``), or a
    prefix ending in ``*`` (``database/creds/*``)."""
    if not isinstance(value, str):
        return value
    path = value.strip()
    if path.startswith("/"):
        raise PydanticCustomError("quota_path", f"path '{value}' starts with '/': write it relative to the root "
                                  "namespace, e.g. auth/jwt or team-a/auth/jwt")
    path = path.rstrip("/")
    if path and not _QUOTA_PATH.match(path):
        raise PydanticCustomError(
            "quota_path", f"path '{value}' is not a namespace or mount path: segments of letters, digits, '_', "
            "'.' and '-' separated by '/', with at most one '*' at the very end (e.g. auth/jwt, "
            "database/creds/*, team-a); leave it empty for every request")
    return path


QuotaPath = Annotated[str, BeforeValidator(_quota_path)]


class RateLimitQuota(_Model):
    """``sys/quotas/rate-limit/<name>``: at most ``rate`` requests per ``interval``, counted by OpenBao per
    client address (per node, says its documentation; logins sent to standbys are forwarded and were held to
    the rate mesh-wide here); over it, requests are answered 429 (and, with ``block_interval``, every request
    of that client to the path is refused for that long)."""

    path: QuotaPath = ""
    """Where it applies: "" (every request), a namespace, a mount (``auth/jwt``), a path inside a mount
    (``auth/jwt/login``) or a prefix (``database/creds/*``); namespaces are path prefixes (``team-a/auth/jwt``)."""
    rate: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    """Requests allowed per ``interval`` (a number above 0; fractions allowed)."""
    interval: Duration = 1
    """The window ``rate`` counts over; at least 1 s (OpenBao's default)."""
    block_interval: Duration = 0
    """0: refuse only what is over the rate. Else refuse everything from a client for this long once it
    went over."""
    role: Name | None = None
    """Only logins with this role (``path`` must then be an approle or kubernetes auth mount; OpenBao 2.7
    crashes on a role quota of a jwt mount, so the file refuses it)."""

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: int) -> int:
        if value < 1:
            raise PydanticCustomError("quota_interval", "interval must be at least 1s (the window the rate "
                                      "counts over)")
        return value


class Quotas(_Model):
    """OpenBao resource quotas. Only rate limits: OpenBao has no lease-count quota (see ``lease_budget``)."""

    rate_limit: dict[Name, RateLimitQuota] = Field(default_factory=dict)


@dataclass(frozen=True)
class QuotaTarget:
    """What a quota path names, resolved against the file's namespaces and mounts."""

    namespace: str
    """Full namespace path ("" for the root, and for a global quota)."""
    mount: str | None
    """The mount's API prefix inside the namespace (``auth/jwt``, ``database``); None: the whole namespace."""
    auth: bool = False
    """The mount is an auth method."""
    suffix: str = ""
    """What follows the mount (``login``, ``creds/*``); may end with ``*``."""
    is_global: bool = False
    """The empty path: every request, in every namespace."""


def resolve_quota_path(spec: ResourcesSpec, path: str) -> QuotaTarget:
    """Split a quota path into namespace, mount and suffix using the namespaces and mounts the file declares
    (plus the root's built-in mounts). Raises ValueError, worded for the user, when it names none."""
    if path == "":
        return QuotaTarget("", None, is_global=True)
    scopes = {ns: scope for ns, _, scope in walk_scopes(spec)}
    ns = max((n for n in scopes if n and (path == n or path.startswith(n + "/"))), key=len, default="")
    rest = path[len(ns) + 1:] if ns else path
    scope = scopes[ns]
    where = f"in namespace '{ns}'" if ns else "at the root"
    if rest == "":
        return QuotaTarget(ns, None)
    if rest == "auth" or rest.startswith("auth/"):
        known = set(scope.auth) | (ROOT_AUTH_BUILTINS if not ns else set())
        label, prefix = "auth mount", "auth/"
    else:
        known = set(scope.secrets) | (SECRETS_BUILTINS if not ns else set())
        label, prefix = "secrets engine", ""
    inner = rest[len(prefix):]
    mount = max((m for m in known if inner == m or inner.startswith(m + "/")), key=len, default=None)
    if mount is None:
        declared = ", ".join(sorted(known)) or "none"
        raise ValueError(f"path '{path}' names no {label} declared {where} (declared: {declared}); OpenBao "
                         "refuses a quota on a mount that does not exist, and a '*' may only follow a mount")
    return QuotaTarget(ns, prefix + mount, auth=bool(prefix), suffix=inner[len(mount) + 1:])


# -- policy assertions -----------------------------------------------------------------------------------

Capability = Literal["create", "read", "update", "patch", "delete", "list", "sudo", "subscribe"]


class ExpectLogin(_Model):
    mount: MountPath
    role: Name
    claims: dict[str, str | int | bool | list[str]] = Field(default_factory=dict)
    """Extra claims of the test JWT (jwt roles); the evaluator adds those the role's bounds require."""


class Expectation(_Model):
    """What a token may and may not do, checked against a running mesh by ``vaultmesh test``.

    Paths are concrete request paths. A trailing ``*`` in ``cannot`` means "this path and everything below";
    ``any`` in ``cannot`` means "no capability at all".
    """

    name: str | None = None
    namespace: str = ""
    """Namespace path of the token, e.g. ``team-a`` or ``team-a/sub``; empty is the root."""
    login: ExpectLogin | None = None
    policies: list[Name] | None = None
    """Instead of a login: a token holding exactly these policies."""
    can: dict[Capability, list[str]] = Field(default_factory=dict)
    cannot: dict[Capability | Literal["any"], list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> Expectation:
        if (self.login is None) == (self.policies is None):
            raise ValueError("an expectation needs exactly one of login (mount, role) or policies")
        if not any(self.can.values()) and not any(self.cannot.values()):
            raise ValueError("an expectation needs at least one path under can or cannot")
        return self

    def checks(self) -> list[tuple[str, str, bool]]:
        """(capability, path, expected) triples, in file order."""
        return ([(cap, path, True) for cap, paths in self.can.items() for path in paths]
                + [(cap, path, False) for cap, paths in self.cannot.items() for path in paths])


# -- scopes (the root and each namespace) ----------------------------------------------------------------

def _overlaps(paths: list[str]) -> list[tuple[str, str]]:
    """Pairs of mount paths where one is a prefix of the other (OpenBao refuses nested mounts)."""
    out = []
    for a in paths:
        for b in paths:
            if a != b and b.startswith(a + "/"):
                out.append((a, b))
    return out


class _Scope(_Model):
    policies: dict[Name, PolicySpec] = Field(default_factory=dict)
    auth: dict[MountPath, AuthMount] = Field(default_factory=dict)
    secrets: dict[MountPath, SecretsMount] = Field(default_factory=dict)
    namespaces: dict[NamespaceName, NamespaceSpec] = Field(default_factory=dict)

    _is_root: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _duplicate_paths(cls, data: Any) -> Any:
        """``jwt`` and ``jwt/`` are the same mount; YAML lets both be written."""
        if not isinstance(data, dict):
            return data
        errors: list[tuple[Loc, str]] = []
        for section in ("auth", "secrets"):
            mounts = data.get(section)
            if isinstance(mounts, dict):
                seen: dict[str, str] = {}
                for raw in mounts:
                    norm = str(raw).strip("/")
                    if norm in seen:
                        errors.append(((section, str(raw)), f"duplicate mount path: '{raw}' and '{seen[norm]}' "
                                       "are the same mount"))
                    seen[norm] = str(raw)
        _fail(errors, "mount paths")
        return data

    @model_validator(mode="after")
    def _references(self) -> _Scope:
        errors: list[tuple[Loc, str]] = []
        known_policies = set(self.policies) | {"default"}
        known_auth = set(self.auth)
        if self._is_root:
            known_policies.add(BOOTSTRAP_POLICY)
            known_auth.add(BOOTSTRAP_AUTH)
        for name in self.policies:
            if name == "root" or (self._is_root and name == BOOTSTRAP_POLICY):
                errors.append((("policies", name), f"policy name '{name}' is reserved"
                               + (" by vaultmesh's bootstrap" if name == BOOTSTRAP_POLICY else "")))
        for path in self.auth:
            if path in RESERVED_AUTH or (self._is_root and path == BOOTSTRAP_AUTH):
                errors.append((("auth", path), f"auth path '{path}' is reserved"
                               + (" by vaultmesh's bootstrap" if path == BOOTSTRAP_AUTH else " by OpenBao")))
        for path in self.secrets:
            if path.split("/")[0] in RESERVED_SECRETS:
                errors.append((("secrets", path), f"secrets path '{path}' is reserved by OpenBao"))
        for section, paths in (("auth", list(self.auth)), ("secrets", list(self.secrets))):
            for a, b in _overlaps(paths):
                errors.append(((section, b), f"mount '{b}' is nested inside mount '{a}'; OpenBao refuses that"))
        for path in self.secrets:
            if path.split("/")[0] in self.namespaces:
                errors.append((("secrets", path), f"mount '{path}' collides with namespace "
                               f"'{path.split('/')[0]}' (namespaces are addressed by path prefix too)"))
        for mount, auth in self.auth.items():
            for role_name, role in auth.roles.items():
                for i, pol in enumerate(role.token_policies):
                    if pol not in known_policies:
                        errors.append((("auth", mount, "roles", role_name, "token_policies", i),
                                       f"policy '{pol}' is not declared in this "
                                       f"{'file' if self._is_root else 'namespace'} "
                                       f"(declared: {', '.join(sorted(self.policies)) or 'none'})"))
        for name, pol in self.policies.items():
            for mount in sorted(referenced_mounts(pol.hcl or "")):
                if mount not in known_auth:
                    errors.append((("policies", name, "file" if pol.file else "hcl"),
                                   f"the template refers to auth mount '{mount}', which is not declared here"))
        _fail(errors, type(self).__name__)
        return self


class NamespaceSpec(_Scope):
    """A namespace (OpenBao 2.3+): its own policies, auth, secrets and child namespaces."""

    custom_metadata: dict[str, str] = Field(default_factory=dict)


class ResourcesSpec(_Scope):
    """The mesh-as-code part of the mesh file (the root namespace, plus limits, audit and expectations)."""

    limits: Limits = Limits()
    audit: dict[Name, AuditDevice] = Field(default_factory=dict)
    quotas: Quotas = Quotas()
    expect: list[Expectation] = Field(default_factory=list)

    _is_root: ClassVar[bool] = True

    @model_validator(mode="after")
    def _quota_targets(self) -> ResourcesSpec:
        errors: list[tuple[Loc, str]] = []
        seen: dict[tuple[str, str], str] = {}
        for name, quota in self.quotas.rate_limit.items():
            loc: Loc = ("quotas", "rate_limit", name)
            same = seen.setdefault((quota.path, quota.role or ""), name)
            if same != name:
                errors.append(((*loc, "path"), f"quota '{same}' already limits path '{quota.path}'"
                               + (f" for role '{quota.role}'" if quota.role else "")
                               + "; OpenBao refuses two quotas with the same path and role"))
            try:
                target = resolve_quota_path(self, quota.path)
            except ValueError as err:
                errors.append(((*loc, "path"), str(err)))
                continue
            if quota.role is None:
                continue
            if not target.auth or target.suffix:
                errors.append(((*loc, "role"), f"role limits logins on one auth mount: path must be that mount "
                               f"(e.g. auth/jwt), not '{quota.path}'"))
                continue
            mount = (target.mount or "").removeprefix("auth/")
            scope = {ns: sc for ns, _, sc in walk_scopes(self)}[target.namespace]
            auth = scope.auth.get(mount)
            if auth is None:
                errors.append(((*loc, "role"), f"auth mount '{mount}' has no roles; role applies to approle "
                               "and kubernetes mounts"))
            elif isinstance(auth, JwtAuth):
                errors.append(((*loc, "role"), f"OpenBao 2.7 cannot limit one role of a {auth.type} mount (the "
                               "write crashes in its role lookup, every node, every retry); limit the mount "
                               f"(path: {quota.path}) or its login path ({quota.path}/login) instead"))
            elif quota.role not in auth.roles:
                errors.append(((*loc, "role"), f"role '{quota.role}' is not declared on auth mount '{mount}' "
                               f"(declared: {', '.join(sorted(auth.roles)) or 'none'})"))
        _fail(errors, "ResourcesSpec")
        return self

    @model_validator(mode="after")
    def _expectations(self) -> ResourcesSpec:
        scopes = {ns: scope for ns, _, scope in walk_scopes(self)}
        errors: list[tuple[Loc, str]] = []
        for i, exp in enumerate(self.expect):
            scope = scopes.get(exp.namespace)
            if scope is None:
                errors.append((("expect", i, "namespace"), f"namespace '{exp.namespace}' is not declared"))
                continue
            if exp.login is not None:
                mount = scope.auth.get(exp.login.mount)
                if mount is None:
                    errors.append((("expect", i, "login", "mount"),
                                   f"auth mount '{exp.login.mount}' is not declared"
                                   + (f" in namespace '{exp.namespace}'" if exp.namespace else "")))
                elif exp.login.role not in mount.roles:
                    errors.append((("expect", i, "login", "role"),
                                   f"role '{exp.login.role}' is not declared on auth mount '{exp.login.mount}'"))
                elif exp.login.claims and not isinstance(mount, JwtAuth):
                    errors.append((("expect", i, "login", "claims"), "claims only apply to jwt roles"))
            for j, pol in enumerate(exp.policies or []):
                if pol not in scope.policies and pol not in BUILTIN_POLICIES | {BOOTSTRAP_POLICY}:
                    errors.append((("expect", i, "policies", j), f"policy '{pol}' is not declared"))
        _fail(errors, "ResourcesSpec")
        return self


NamespaceSpec.model_rebuild()
ResourcesSpec.model_rebuild()


def walk_scopes(spec: _Scope, namespace: str = "", loc: Loc = ()) -> Iterator[tuple[str, Loc, _Scope]]:
    """(namespace path, location in the file, scope) for the root and every namespace, parents first."""
    yield namespace, loc, spec
    for name, child in spec.namespaces.items():
        yield from walk_scopes(child, f"{namespace}/{name}" if namespace else name, (*loc, "namespaces", name))
