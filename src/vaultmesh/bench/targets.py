"""What the bench talks to, set up through ``reconcile.apply`` from a mesh file of its own, and the mesh's
token/lease counts.

``setup_targets`` applies ``targets.yaml`` (shipped beside this module) as a partial file: beside the user's
own, it prunes nothing and leaves the user's audit devices and lease budgets alone. Every name starts with
``vaultmesh-bench`` (``spec.resources.BENCH_PREFIX``), so the plan of any other file never offers them for
deletion::

    auth/vaultmesh-bench-jwt             jwt auth trusting the identity issuer `up` runs: oidc_discovery_url + the
                                         mesh CA (nodes in network namespaces cannot reach the issuer on loopback:
                                         there the issuer's public keys are given as jwt_validation_pubkeys)
    auth/vaultmesh-bench-jwt/role/bench  bound_audiences [vaultmesh-bench], user_claim sub, short token TTL
    vaultmesh-bench-kv/                  kv v2 with one secret, vaultmesh-bench-kv/data/app/config
    vaultmesh-bench-db/                  database engine, connection "pg" (postgresql-database-plugin,
                                         verify_connection), role "bench": a login role and nothing more
    vaultmesh-bench-chaos/               kv v1: the acknowledged-write log of chaos runs
    sys/policies/acl/vaultmesh-bench     what a bench workload may do: read its KV and creds, revoke its leases
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.bench.model import Counts
from vaultmesh.errors import EngineError, StateError
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.server import keys_dir, read_issuer_record
from vaultmesh.layout import HOST
from vaultmesh.lifecycle import mesh as m
from vaultmesh.reconcile.apply import apply
from vaultmesh.runtime.local import wait_until
from vaultmesh.spec.load import parse_spec
from vaultmesh.workload.reap import scan_tokens

TARGETS_FILE = "targets.yaml"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The machine's PostgreSQL, trusting loopback connections."""
AUDIENCE = "vaultmesh-bench"
PG_PASSWORD_ENV = "VAULTMESH_BENCH_PG_PASSWORD"
"""How a DSN's password reaches apply (the file refuses passwords in a connection_url)."""
SEED_ENV = {"VAULTMESH_BENCH_API_KEY": "bench-not-a-secret", "VAULTMESH_BENCH_REGION": "local"}
"""The bench's KV secret: no secret at all, but a mesh file takes seeds from the environment only."""


@dataclass(frozen=True)
class Targets:
    """Names and addresses a bench worker needs; picklable (sent to worker processes). The names are those of
    ``targets.yaml``."""

    entry: str
    nodes: tuple[str, ...]
    ca_file: str
    issuer: str
    keys_dir: str
    auth_mount: str = "vaultmesh-bench-jwt"
    role: str = "bench"
    audience: str = AUDIENCE
    kv_mount: str = "vaultmesh-bench-kv"
    kv_path: str = "app/config"
    db_mount: str = "vaultmesh-bench-db"
    db_role: str = "bench"
    chaos_mount: str = "vaultmesh-bench-chaos"
    policy: str = "vaultmesh-bench"
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


def connection_of(dsn: str) -> tuple[str, str, str | None]:
    """``postgresql://user[:pw]@host[:port]/db[?query]`` -> (the plugin's templated connection_url, username,
    password or None). The password never goes into a mesh file: apply gets it from the environment."""
    u = urllib.parse.urlsplit(dsn)
    netloc = f"{{{{username}}}}:{{{{password}}}}@{u.hostname or '127.0.0.1'}" + (f":{u.port}" if u.port else "")
    url = urllib.parse.urlunsplit((u.scheme, netloc, u.path or "/postgres", u.query or "sslmode=disable", ""))
    password = urllib.parse.unquote(u.password) if u.password else None
    return url, urllib.parse.unquote(u.username or "postgres"), password


def bench_mesh_file(*, database: bool = True, issuer_keys: list[str] | None = None,
                    pg_dsn: str = DEFAULT_PG_DSN) -> str:
    """The text of ``targets.yaml`` for one mesh: without the database mount when ``database`` is False, with
    ``issuer_keys`` (PEM public keys) instead of OIDC discovery when given, connected to ``pg_dsn``."""
    data = yaml.safe_load(resources.files("vaultmesh.bench").joinpath(TARGETS_FILE).read_text())
    if issuer_keys is not None:
        config = data["auth"]["vaultmesh-bench-jwt"]["config"]
        del config["oidc_discovery_url"], config["oidc_discovery_ca_pem"]
        config["jwt_validation_pubkeys"] = list(issuer_keys)
    if not database:
        del data["secrets"]["vaultmesh-bench-db"]
    else:
        url, user, _ = connection_of(pg_dsn)
        conn = data["secrets"]["vaultmesh-bench-db"]["connections"]["pg"]
        conn["connection_url"], conn["username"] = url, user
    return yaml.safe_dump(data, sort_keys=False)


def setup_targets(mesh: m.Mesh, *, client: EngineClient | None = None, database: bool | None = None,
                  pg_dsn: str = DEFAULT_PG_DSN) -> Targets:
    """Apply the bench's mesh file to ``mesh`` (a no-op when it is there already) and say where it is.
    ``database`` defaults to whether the nodes run on loopback (they then reach ``pg_dsn``)."""
    client = client or admin_client(mesh)
    root = mesh.paths.root
    record = read_issuer_record(root)
    if record is None:
        raise StateError(f"no identity issuer recorded in {root}/identity",
                         hint="`vaultmesh up` starts the mesh's identity issuer")
    on_loopback = nodes_on_loopback(mesh)
    if database is None:
        database = on_loopback
    keys = None if on_loopback else [k.public_pem() for k in KeyRing.load(keys_dir(root)).keys]
    text = bench_mesh_file(database=database, issuer_keys=keys, pg_dsn=pg_dsn)
    env = dict(SEED_ENV)
    password = connection_of(pg_dsn)[2]
    if password is not None:
        env[PG_PASSWORD_ENV] = password
    apply(mesh, client, parse_spec(text, source=f"vaultmesh/bench/{TARGETS_FILE}"), base_dir=root, env=env,
          partial=True)
    return Targets(entry=mesh.layout.entry_addr, nodes=tuple(mesh.node_addrs), ca_file=str(mesh.paths.ca_cert),
                   issuer=record.issuer, keys_dir=str(keys_dir(root)), database=database)


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
