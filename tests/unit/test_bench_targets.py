"""The bench's own mesh file (``bench/targets.yaml``): what it declares, adjusted for the mesh it goes to."""

from __future__ import annotations

from vaultmesh.bench.targets import Targets, bench_mesh_file, connection_of
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.resources import BENCH_PREFIX

T = Targets(entry="https://e", nodes=(), ca_file="ca", issuer="https://i", keys_dir="k")


def test_the_shipped_file_declares_the_names_the_workers_use_all_under_the_bench_prefix() -> None:
    spec = parse_spec(bench_mesh_file())
    assert set(spec.auth) == {T.auth_mount} and T.role in spec.auth[T.auth_mount].roles
    assert set(spec.secrets) == {T.kv_mount, T.db_mount, T.chaos_mount}
    assert T.kv_path in spec.secrets[T.kv_mount].seed  # type: ignore[union-attr]
    assert T.db_role in spec.secrets[T.db_mount].roles  # type: ignore[union-attr]
    assert set(spec.policies) == {T.policy}
    assert all(n.startswith(BENCH_PREFIX) for n in [*spec.auth, *spec.secrets, *spec.policies])
    assert T.creds_path in spec.policies[T.policy].hcl  # type: ignore[operator]


def test_without_a_database_there_is_no_database_mount() -> None:
    assert T.db_mount not in parse_spec(bench_mesh_file(database=False)).secrets


def test_network_namespace_nodes_get_the_issuers_keys_instead_of_its_discovery_url() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----\n"
    config = parse_spec(bench_mesh_file(issuer_keys=[pem])).auth[T.auth_mount].config
    assert config is not None and config.jwt_validation_pubkeys == [pem] and config.oidc_discovery_url is None  # type: ignore[union-attr]


def test_a_dsn_becomes_a_templated_connection_and_its_password_stays_out_of_the_file() -> None:
    assert connection_of("postgresql://app:s%40cret@db.example:5433/jobs?sslmode=require") == (
        "postgresql://{{username}}:{{password}}@db.example:5433/jobs?sslmode=require", "app", "s@cret")
    assert connection_of("postgresql://postgres@127.0.0.1:5432/postgres") == (
        "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable", "postgres", None)
    text = bench_mesh_file(pg_dsn="postgresql://app:s3cret@db.example/jobs")
    assert "s3cret" not in text
    conn = parse_spec(text).secrets[T.db_mount].connections["pg"]  # type: ignore[union-attr]
    assert conn.username == "app" and conn.connection_url.startswith("postgresql://{{username}}:{{password}}@db.")
