"""What the bench talks to, configured with the admin client (idempotent), and the mesh's token/lease counts.

``setup_targets`` creates, under names of its own (so it never touches a user's mounts)::

    auth/bench-jwt            jwt auth trusting the mesh's identity issuer: oidc_discovery_url + the mesh CA
                              (nodes in network namespaces cannot reach the issuer on loopback: there the
                              issuer's public keys are given as jwt_validation_pubkeys instead)
    auth/bench-jwt/role/bench bound_audiences [vaultmesh-bench], user_claim sub, short token TTL
    bench-kv/                 kv v2 with one secret, bench-kv/data/app/config
    bench-db/                 database engine, connection "pg" (postgresql-database-plugin, verify_connection),
                              role "bench": creation and revocation statements, short TTLs
    bench-chaos/              kv v1: the acknowledged-write log of chaos runs
    sys/policies/acl/bench    what a bench workload may do: read its KV and creds, revoke its own leases

The mesh-as-code ``apply`` may later declare the same; until then this is the one place that knows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vaultmesh.bench.model import Counts
from vaultmesh.engine.admin import ensure_mount, retry_while_upgrading
from vaultmesh.engine.client import EngineClient, RetryPolicy
from vaultmesh.errors import EngineError, StateError
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.server import keys_dir, read_issuer_record
from vaultmesh.layout import HOST
from vaultmesh.lifecycle import mesh as m
from vaultmesh.runtime.local import wait_until
from vaultmesh.workload.reap import scan_tokens

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_CONNECTION_URL = "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable"
AUDIENCE = "vaultmesh-bench"

CREATION_SQL = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
"""A login role and nothing more: the bench measures issuing credentials, never reads the machine's data."""
REVOCATION_SQL = "DROP ROLE IF EXISTS \"{{name}}\";"


@dataclass(frozen=True)
class Targets:
    """Names and addresses a bench worker needs; picklable (sent to worker processes)."""

    entry: str
    nodes: tuple[str, ...]
    ca_file: str
    issuer: str
    keys_dir: str
    auth_mount: str = "bench-jwt"
    role: str = "bench"
    audience: str = AUDIENCE
    kv_mount: str = "bench-kv"
    kv_path: str = "app/config"
    db_mount: str = "bench-db"
    db_role: str = "bench"
    chaos_mount: str = "bench-chaos"
    policy: str = "bench"
    database: bool = True
    """False when the mesh's nodes cannot reach PostgreSQL on 127.0.0.1 (network-namespace nodes)."""

    @property
    def kv_read_path(self) -> str:
        return f"{self.kv_mount}/data/{self.kv_path}"

    @property
    def creds_path(self) -> str:
        return f"{self.db_mount}/creds/{self.db_role}"

    @property
    def login_path(self) -> str:
        return f"auth/{self.auth_mount}/login"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nodes_on_loopback(mesh: m.Mesh) -> bool:
    return all(n.host == HOST for n in mesh.layout.nodes)


def admin_client(mesh: m.Mesh, *, deadline: float = 15.0) -> EngineClient:
    client = mesh.client(retry=RetryPolicy(deadline=deadline))
    client.token = m.admin_token(mesh, client)
    return client


def setup_targets(mesh: m.Mesh, *, client: EngineClient | None = None, database: bool | None = None,
                  pg_connection_url: str = PG_CONNECTION_URL, pg_user: str = "postgres",
                  pg_password: str = "unused") -> Targets:
    """Create (or update) the bench's auth, secrets and policy on ``mesh``; safe to run again."""
    client = client or admin_client(mesh)
    root = mesh.paths.root
    record = read_issuer_record(root)
    if record is None:
        raise StateError(f"no identity issuer recorded in {root}/identity",
                         hint="`vaultmesh up` starts the mesh's identity issuer")
    on_loopback = nodes_on_loopback(mesh)
    if database is None:
        database = on_loopback
    t = Targets(entry=mesh.layout.entry_addr, nodes=tuple(mesh.node_addrs), ca_file=str(mesh.paths.ca_cert),
                issuer=record.issuer, keys_dir=str(keys_dir(root)), database=database)
    ensure_mount(client, f"sys/auth/{t.auth_mount}", {"type": "jwt", "description": "vaultmesh bench workloads"})
    if on_loopback:
        jwt_config: dict[str, Any] = {"oidc_discovery_url": record.issuer,
                                      "oidc_discovery_ca_pem": mesh.paths.ca_cert.read_text(),
                                      "bound_issuer": record.issuer}
    else:
        ring = KeyRing.load(keys_dir(root))
        jwt_config = {"jwt_validation_pubkeys": [k.public_pem() for k in ring.keys],
                      "bound_issuer": record.issuer}
    client.write(f"auth/{t.auth_mount}/config", jwt_config)
    ensure_mount(client, f"sys/mounts/{t.kv_mount}", {"type": "kv", "options": {"version": "2"}})
    ensure_mount(client, f"sys/mounts/{t.chaos_mount}", {"type": "kv", "options": {"version": "1"}})
    retry_while_upgrading(lambda: client.write(f"{t.kv_mount}/data/{t.kv_path}",
                                               {"data": {"api_key": "bench-not-a-secret", "region": "local"}}))
    policy = (f'path "{t.kv_mount}/data/*" {{ capabilities = ["read"] }}\n'
              'path "sys/leases/revoke" { capabilities = ["update"] }\n')
    if database:
        ensure_mount(client, f"sys/mounts/{t.db_mount}", {"type": "database"})
        client.write(f"{t.db_mount}/config/pg", {
            "plugin_name": "postgresql-database-plugin", "connection_url": pg_connection_url,
            "username": pg_user, "password": pg_password, "allowed_roles": [t.db_role],
            "verify_connection": True, "max_open_connections": 8})
        client.write(f"{t.db_mount}/roles/{t.db_role}", {
            "db_name": "pg", "creation_statements": [CREATION_SQL], "revocation_statements": [REVOCATION_SQL],
            "default_ttl": "5m", "max_ttl": "15m"})
        policy += f'path "{t.creds_path}" {{ capabilities = ["read"] }}\n'
    client.write(f"sys/policies/acl/{t.policy}", {"policy": policy})
    client.write(f"auth/{t.auth_mount}/role/{t.role}", {
        "role_type": "jwt", "user_claim": "sub", "bound_audiences": [t.audience],
        "token_policies": [t.policy], "token_ttl": "10m", "token_max_ttl": "30m"})
    return t


def count_leases(client: EngineClient, prefix: str = "", *, limit: int = 200_000) -> int:
    """Leases under ``prefix`` (``LIST sys/leases/lookup/<prefix>`` recursively; needs sudo)."""
    total = 0
    todo = [prefix]
    while todo:
        p = todo.pop()
        for key in client.list(f"sys/leases/lookup/{p}", consistent=True):
            if key.endswith("/"):
                todo.append(p + key)
            else:
                total += 1
                if total >= limit:
                    return total
    return total


def lease_prefixes(client: EngineClient) -> list[str]:
    """Where leases can live: ``auth/`` and every secrets mount (the lookup root itself cannot be listed)."""
    mounts = client.read("sys/mounts", consistent=True) or {}
    paths = sorted(k for k in (mounts.get("data") or mounts) if isinstance(k, str) and k.endswith("/"))
    return ["auth/", *[p for p in paths if p not in ("sys/", "cubbyhole/", "identity/")]]


def counts(client: EngineClient) -> Counts:
    """Tokens and leases of the whole mesh. A token is an accessor that resolves (``lookup-accessor``): a
    revocation cut short by an election can leave the accessor of a deleted token, which holds nothing."""
    return Counts(tokens=len(scan_tokens(client)),
                  leases=sum(count_leases(client, p) for p in lease_prefixes(client)))


def wait_for_baseline(client: EngineClient, baseline: Counts, *, timeout: float = 20.0,
                      clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                      count: Callable[[EngineClient], Counts] = counts) -> tuple[Counts, float | None]:
    """Poll the counts until they are back at (or below) ``baseline``; returns (last counts, seconds or None)."""
    t0 = clock()
    last: list[Counts] = []

    def back() -> bool:
        last.append(count(client))
        return last[-1].tokens <= baseline.tokens and last[-1].leases <= baseline.leases

    if not wait_until(back, timeout=timeout, interval=0.25, clock=clock, sleep=sleep):
        return last[-1], None
    return last[-1], clock() - t0


def revoke_prefix(client: EngineClient, prefix: str) -> str | None:
    """Revoke every lease under ``prefix`` at once (sync): the cleanup of single-operation runs. Returns None
    when done, else a sentence for the report: a refusal does not stop the run (the count check that follows
    fails the verdict when leases remain), but it is said, not hidden."""
    try:
        client.write(f"sys/leases/revoke-prefix/{prefix}", {"sync": True})
    except EngineError as err:
        return f"revoke-prefix {prefix} failed: {err}"
    return None


def load_signer(targets: Targets) -> Any:
    """The issuer's active signing key, parsed once (a worker mints thousands of tokens with it)."""
    return KeyRing.load(Path(targets.keys_dir)).active
