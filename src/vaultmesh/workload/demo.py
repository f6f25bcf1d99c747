"""Configure a mesh for workloads by hand: an identity issuer, JWT auth, KV v2, a database engine, a policy.

Used by the integration tests and ``benchmarks/workload_cold_start.py`` until mesh-as-code ``apply`` declares
the same things; it also documents, as code, what a workload needs from the mesh. Never on the ``run`` path
(it imports the identity package, hence cryptography).

What ``configure`` creates (mount names are parameters, so test modules do not collide)::

    auth/<auth_mount>            jwt, oidc_discovery_url = the issuer (CA pinned), bound_issuer
    auth/<auth_mount>/role/<r>   role_type jwt, user_claim sub, bound_audiences, token_ttl/max_ttl,
                                 claim_mappings {"/kubernetes.io/serviceaccount/name": "workload"}
    <kv_mount>/                  kv v2, with the given secrets
    <db_mount>/                  database, connection "pg" (postgresql-database-plugin), role <db_role>
    sys/policies/acl/<policy>    read the KV and creds paths; update sys/leases/revoke (so run can revoke each
                                 lease synchronously before revoking its token)
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultmesh import pki
from vaultmesh.engine.admin import ensure_mount, retry_while_upgrading
from vaultmesh.engine.client import EngineClient
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.server import IssuerServer
from vaultmesh.identity.tokens import mint


@dataclass
class Issuer:
    """A running identity issuer and its key ring."""

    server: IssuerServer
    ring: KeyRing
    ca_pem: str

    @property
    def url(self) -> str:
        return self.server.issuer_url

    def token(self, workload: str, *, audience: str | Sequence[str] = "vaultmesh", ttl: float = 600,
              now: float | None = None, **kw: Any) -> str:
        return mint(self.ring, issuer=self.url, workload=workload, audience=audience, ttl=ttl,
                    now=time.time() if now is None else now, **kw)

    def stop(self) -> None:
        self.server.stop()


def start_issuer(mesh_state_dir: Path, workdir: Path) -> Issuer:
    """Start an issuer on a free loopback port with a certificate from the mesh's own CA."""
    paths = mesh_state_dir / "pki"
    ca = pki.CertPair((paths / "ca.pem").read_bytes(), (paths / "ca-key.pem").read_bytes())
    cert = pki.issue_server_cert(ca, "identity", dns_names=["localhost"], ip_addresses=["127.0.0.1"],
                                 now=dt.datetime.now(dt.UTC), days=1)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "identity.pem").write_bytes(cert.cert_pem)
    (workdir / "identity-key.pem").write_bytes(cert.key_pem)
    (workdir / "identity-key.pem").chmod(0o600)
    ring = KeyRing.load_or_create(workdir / "keys", time.time())
    server = IssuerServer(ring, certfile=workdir / "identity.pem", keyfile=workdir / "identity-key.pem")
    server.start()
    return Issuer(server, ring, ca.cert_pem.decode())


@dataclass(frozen=True)
class WorkloadMounts:
    auth: str = "jwt"
    kv: str = "secret"
    db: str = "database"
    role: str = "batch"
    db_role: str = "jobs-ro"
    policy: str = "workload-batch"
    audience: str = "vaultmesh"
    token_ttl: str = "5m"
    token_max_ttl: str = "1h"
    db_ttl: str = "5m"
    db_max_ttl: str = "1h"
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {
        "jobs/nightly": {"api_token": "tok-nightly-123", "region": "eu-west-1"}})
    extra_policy: str = ""


def plugin_connection_url(dsn: str) -> tuple[str, str, str]:
    """``postgresql://user[:pw]@host:port/db`` -> (templated connection_url, username, password)."""
    u = urllib.parse.urlsplit(dsn)
    host = u.hostname or "127.0.0.1"
    netloc = f"{{{{username}}}}:{{{{password}}}}@{host}" + (f":{u.port}" if u.port else "")
    query = u.query or "sslmode=disable"
    url = urllib.parse.urlunsplit((u.scheme, netloc, u.path or "/postgres", query, ""))
    return url, urllib.parse.unquote(u.username or "postgres"), urllib.parse.unquote(u.password or "unused")


def configure(client: EngineClient, issuer: Issuer, pg_dsn: str, m: WorkloadMounts = WorkloadMounts()) -> None:
    """Create (or update) everything a workload of role ``m.role`` needs; idempotent."""
    ensure_mount(client, f"sys/auth/{m.auth}", {"type": "jwt"})
    client.write(f"auth/{m.auth}/config", {"oidc_discovery_url": issuer.url, "oidc_discovery_ca_pem": issuer.ca_pem,
                                           "bound_issuer": issuer.url})
    ensure_mount(client, f"sys/mounts/{m.kv}", {"type": "kv", "options": {"version": "2"}})
    ensure_mount(client, f"sys/mounts/{m.db}", {"type": "database"})
    for path, data in m.secrets.items():
        retry_while_upgrading(lambda p=path, d=data: client.write(f"{m.kv}/data/{p}", {"data": dict(d)}))
    url, user, password = plugin_connection_url(pg_dsn)
    client.write(f"{m.db}/config/pg", {"plugin_name": "postgresql-database-plugin", "connection_url": url,
                                       "username": user, "password": password, "allowed_roles": ["*"],
                                       "verify_connection": True})
    client.write(f"{m.db}/roles/{m.db_role}", {
        "db_name": "pg",
        "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                                "VALID UNTIL '{{expiration}}'; GRANT pg_read_all_data TO \"{{name}}\";"],
        "default_ttl": m.db_ttl, "max_ttl": m.db_max_ttl})
    policy = (f'path "{m.kv}/data/*" {{ capabilities = ["read"] }}\n'
              f'path "{m.db}/creds/{m.db_role}" {{ capabilities = ["read"] }}\n'
              'path "sys/leases/revoke" { capabilities = ["update"] }\n' + m.extra_policy)
    client.write(f"sys/policies/acl/{m.policy}", {"policy": policy})
    client.write(f"auth/{m.auth}/role/{m.role}", {
        "role_type": "jwt", "user_claim": "sub", "bound_audiences": [m.audience],
        "claim_mappings": {"/kubernetes.io/serviceaccount/name": "workload"},
        "token_policies": [m.policy], "token_ttl": m.token_ttl, "token_max_ttl": m.token_max_ttl})


