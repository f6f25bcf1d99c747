"""The README's walkthrough, end to end with the CLI only: up, apply the playdream example, issue a workload
identity, `vaultmesh run` a job that uses its KV secret and PostgreSQL credential, and find nothing left
behind once it exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from .conftest import MeshHandle

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "playdream" / "mesh.yaml"

JOB = """
import os, sys, psycopg
with psycopg.connect(host="127.0.0.1", dbname="postgres", user=os.environ["PGUSER"],
                     password=os.environ["PGPASSWORD"]) as conn:
    conn.execute("select 1")
print("job ran as", os.environ["PGUSER"], "with token", os.environ["API_TOKEN"] == "nightly-secret")
"""


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "vaultmesh.cli.main", "--dir", str(root), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_apply_issue_run_and_nothing_left_behind(make_mesh, postgres_dsn: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    handle: MeshHandle = make_mesh()
    root = handle.dir
    cli(root, "apply", "-f", str(EXAMPLE), env={"PLAYDREAM_NIGHTLY_API_TOKEN": "nightly-secret"})
    identity = tmp_path / "identity.jwt"
    cli(root, "identity", "issue", "--workload", "nightly", "--claim", "team=data", "--claim", "job=nightly",
        "--ttl", "10m", "--output", str(identity))
    assert oct(identity.stat().st_mode & 0o777) == "0o600"
    admin = handle.client()
    before = len(admin.list("auth/token/accessors"))

    env = {**os.environ, "BAO_ADDR": ",".join(handle.addrs), "BAO_CACERT": handle.ca,
           "VAULTMESH_IDENTITY_FILE": str(identity)}
    proc = subprocess.run(
        [sys.executable, "-m", "vaultmesh.cli.entry", "run", "--role", "batch",
         "--secret", "API_TOKEN=kv:secret/jobs/nightly#api_token",
         "--secret", "PGUSER=db:database/creds/jobs-ro#username",
         "--secret", "PGPASSWORD=db:database/creds/jobs-ro#password",
         "--", sys.executable, "-c", JOB],
        capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "with token True" in proc.stdout
    pg_user = proc.stdout.split("job ran as ")[1].split()[0]

    # the credential's PostgreSQL role is dropped, and the job's token is gone
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("select count(*) from pg_roles where rolname = %s", (pg_user,)).fetchone() == (0,)
    assert len(admin.list("auth/token/accessors")) == before
    assert admin.list("sys/leases/lookup/database/creds/jobs-ro") == []


def test_run_path_import_is_light() -> None:
    """`vaultmesh run` must not pay for the control plane: no click, rich, pydantic or cryptography."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import vaultmesh.workload.cli"],
                          capture_output=True, text=True, timeout=30)
    heavy = [line for line in proc.stderr.splitlines()
             if line.rsplit("|", 1)[-1].strip().split(".")[0] in {"click", "rich", "pydantic", "cryptography"}]
    assert heavy == []


def test_jobs_sharing_one_subject_cannot_read_each_others_secrets(make_mesh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 8, finding 1: many jobs share one service account (one ``sub``). With ``user_claim: sub`` and a
    policy on alias metadata, the second login rewrote the shared alias and opened its job's paths to the
    first job's token. With the example's ``user_claim: job`` every job is its own alias."""
    handle: MeshHandle = make_mesh()
    root = handle.dir
    cli(root, "apply", "-f", str(EXAMPLE))
    admin = handle.client()
    admin.write("secret/data/jobs/weekly", {"data": {"api_token": "weekly-secret"}})
    tokens = {}
    for job in ("nightly", "weekly"):
        identity = tmp_path / f"{job}.jwt"
        cli(root, "identity", "issue", "--workload", "runner", "--claim", "team=data", "--claim", f"job={job}",
            "--ttl", "10m", "--output", str(identity))
        auth = admin.login("jwt", {"role": "batch", "jwt": identity.read_text().strip()})
        tokens[job] = auth["client_token"]
    caps = admin.write("sys/capabilities-self", {"paths": ["secret/data/jobs/weekly", "secret/data/jobs/nightly"]},
                       token=tokens["nightly"]) or {}
    assert caps["secret/data/jobs/weekly"] == ["deny"]
    assert caps["secret/data/jobs/nightly"] == ["read"]
    for token in tokens.values():
        admin.write("auth/token/revoke-self", {}, token=token)
