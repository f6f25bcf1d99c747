"""`vaultmesh run` sends its login and reads ahead of the session (cold start, issue 9): what is read ahead and
never taken is revoked like the rest, so a run that fails leaves no lease, token or PostgreSQL role.

Mounts of this module's own (jwt-ahead/, secret-ahead/, db-ahead/) on the shared mesh, from ``meshes/workload.yaml``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from vaultmesh.api.client import EngineClient
from vaultmesh.workload.reap import find_workload_tokens

from .conftest import MeshHandle
from .workloads import SHORT_TTLS, MeshIssuer, apply_file, mesh_issuer

pytestmark = [pytest.mark.integration, pytest.mark.alone]  # timing-sensitive: run alone, after the rest

NAME = "ahead"
AUTH, KV, DB, AUD = f"jwt-{NAME}", f"secret-{NAME}", f"db-{NAME}", f"vaultmesh-{NAME}"
RUN = [sys.executable, "-m", "vaultmesh.workload.cli", "run"]


@dataclass
class Env:
    mesh: MeshHandle
    admin: EngineClient
    issuer: MeshIssuer
    pg_dsn: str
    tmp: Path

    def run(self, workload: str, *secrets: str,
            command: tuple[str, ...] = ("true",)) -> subprocess.CompletedProcess[str]:
        jwt = self.tmp / f"{workload}.jwt"
        jwt.write_text(self.issuer.token(workload, audience=AUD))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_", "VAULTMESH_"))}
        env["TMPDIR"] = str(self.tmp)
        return subprocess.run([*RUN, "--role", "batch", "--auth-mount", AUTH, "--addr", ",".join(self.mesh.addrs),
                               "--ca-cert", self.mesh.ca, "--identity-file", str(jwt), *secrets, "--", *command],
                              env=env, capture_output=True, text=True, timeout=60)

    def leases(self) -> list[str]:
        return self.admin.list(f"sys/leases/lookup/{DB}/creds/jobs-ro/")

    def pg_roles(self) -> set[str]:
        with psycopg.connect(self.pg_dsn, autocommit=True) as c:
            return {r[0] for r in c.execute("select rolname from pg_roles where rolname like 'v-%jobs-ro%'")}


@pytest.fixture(scope="module")
def ahead(shared_mesh: MeshHandle, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ahead")
    admin = shared_mesh.client()
    try:
        apply_file(shared_mesh, admin, "workload", pg_dsn=postgres_dsn, name=NAME, **SHORT_TTLS)
        yield Env(shared_mesh, admin, mesh_issuer(shared_mesh), postgres_dsn, tmp)
    finally:
        admin.close()


def test_a_credential_read_ahead_for_a_run_that_fails_first_is_revoked(ahead: Env) -> None:
    """The first source is refused, so the session never asks for the database credential the run read ahead;
    revoking the token revokes it, and nothing of the run is left."""
    name = f"ahead-{uuid.uuid4().hex[:8]}"
    leases, roles = set(ahead.leases()), ahead.pg_roles()
    proc = ahead.run(name, "--secret", f"X=db:{DB}/creds/forbidden#username",
                     "--secret", f"PGUSER=db:{DB}/creds/jobs-ro#username")
    assert proc.returncode == 125, proc.stderr
    assert proc.stderr.startswith(f"vaultmesh run: reading {DB}/creds/forbidden (for X) refused: ")
    assert set(ahead.leases()) <= leases
    assert ahead.pg_roles() <= roles
    assert find_workload_tokens(ahead.admin, name, auth_mount=AUTH) == []


def test_a_run_gets_its_secrets_read_ahead_and_leaves_nothing(ahead: Env) -> None:
    name = f"ahead-{uuid.uuid4().hex[:8]}"
    out = ahead.tmp / f"{name}.out"
    leases = set(ahead.leases())
    proc = ahead.run(name, "--secret", f"API=kv:{KV}/jobs/nightly#api_token",
                     "--secret", f"PGUSER=db:{DB}/creds/jobs-ro#username",
                     command=("/bin/sh", "-c", f'printf "%s %s" "$API" "$PGUSER" > {out}'))
    assert proc.returncode == 0, proc.stderr
    api, user = out.read_text().split()
    assert api == "tok-nightly-123" and user.startswith("v-")
    assert set(ahead.leases()) <= leases
    assert user not in ahead.pg_roles()
    assert find_workload_tokens(ahead.admin, name, auth_mount=AUTH) == []
