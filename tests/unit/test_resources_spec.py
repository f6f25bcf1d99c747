"""The mesh-as-code part of the mesh file: what is valid, and where an error points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from vaultmesh.spec.policy import HclError, parse_policy
from vaultmesh.spec.resources import ResourcesSpec
from vaultmesh.spec.types import format_duration, parse_ttl

EXAMPLE = Path(__file__).parents[2] / "examples" / "playdream" / "mesh.yaml"

JWT_CONFIG = {"jwks_url": "https://issuer.test/jwks"}
READ_ALL = 'path "secret/data/*" { capabilities = ["read"] }'


def errors(data: dict[str, Any], **context: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as info:
        ResourcesSpec.model_validate(data, context=context or None)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def jwt_mount(roles: dict[str, Any]) -> dict[str, Any]:
    return {"type": "jwt", "config": JWT_CONFIG, "roles": roles}


# -- durations -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    (900, 900), ("900", 900), ("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("2d", 172800),
    (60.0, 60),
])
def test_durations_accept_units_and_seconds(text: object, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("bad", [-1, 1.5, True, "15 minutes", "1w", "", "-5m", None])
def test_durations_refuse_what_openbao_would_misread(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_ttl(bad)


@given(st.integers(min_value=0, max_value=10**8))
def test_a_formatted_duration_parses_back_to_the_same_seconds(seconds: int) -> None:
    assert parse_ttl(format_duration(seconds)) == seconds


def test_limits_default_to_15_minutes_and_1_hour() -> None:
    spec = ResourcesSpec()
    assert (spec.limits.token_ttl, spec.limits.token_max_ttl) == (900, 3600)


def test_limits_are_read_as_durations() -> None:
    spec = ResourcesSpec.model_validate({"limits": {"token_ttl": "5m", "token_max_ttl": "30m"}})
    assert (spec.limits.token_ttl, spec.limits.token_max_ttl) == (300, 1800)


# -- shape -----------------------------------------------------------------------------------------------

def test_an_empty_file_is_valid() -> None:
    assert ResourcesSpec.model_validate({}) == ResourcesSpec()


def test_an_unknown_field_is_refused_at_its_path() -> None:
    errs = errors({"auth": {"jwt": {**jwt_mount({}), "colour": "blue"}}})
    assert errs[0][0] == ("auth", "jwt", "colour")


def test_an_unknown_field_deep_in_a_role_is_refused_at_its_path() -> None:
    errs = errors({"auth": {"jwt": jwt_mount({"batch": {"bound_audiences": ["x"], "tokn_ttl": "5m"}})}})
    assert errs[0][0] == ("auth", "jwt", "roles", "batch", "tokn_ttl")


def test_an_unknown_auth_type_names_the_known_ones() -> None:
    [(loc, msg)] = errors({"auth": {"ldap": {"type": "ldap"}}})
    assert loc == ("auth", "ldap", "type")
    assert "approle, jwt, kubernetes, oidc" in msg


def test_role_ttls_are_normalised_to_seconds() -> None:
    spec = ResourcesSpec.model_validate({"auth": {"jwt": jwt_mount({"b": {"bound_audiences": ["x"],
                                                                          "token_ttl": "10m"}})}})
    assert spec.auth["jwt"].roles["b"].token_ttl == 600


def test_a_role_ttl_above_its_own_max_is_refused() -> None:
    errs = errors({"auth": {"jwt": jwt_mount({"b": {"bound_audiences": ["x"], "token_ttl": "2h",
                                                    "token_max_ttl": "1h"}})}})
    assert errs[0][0] == ("auth", "jwt", "roles", "b")


# -- policies --------------------------------------------------------------------------------------------

def test_a_policy_may_be_written_as_a_plain_string() -> None:
    spec = ResourcesSpec.model_validate({"policies": {"reader": READ_ALL}})
    assert spec.policies["reader"].hcl == READ_ALL


def test_bad_hcl_is_refused_with_the_line_inside_the_policy() -> None:
    hcl = 'path "a" {\n  capabilities = ["read"]\n}\npath "b" {\n  capabilities = ["read"]\n'
    [(loc, msg)] = errors({"policies": {"p": {"hcl": hcl}}})
    assert loc == ("policies", "p", "hcl")
    assert "line 4" in msg and "never closed" in msg


@pytest.mark.parametrize(("hcl", "words"), [
    ('path "a" { capabilities = ["reed"] }', "unknown capability 'reed'"),
    ('path "a" { capabilites = ["read"] }', "no 'capabilities"),
    ('path "a" { capabilities = ["read"] } }', "without a matching opening brace"),
    ('key "a" { capabilities = ["read"] }', "only 'path"),
    ('path "a { capabilities = ["read"] }', "not closed"),
    ("# nothing here\n", "grants nothing"),
])
def test_structural_policy_mistakes_are_named(hcl: str, words: str) -> None:
    with pytest.raises(HclError, match=words):
        parse_policy(hcl)


def test_every_openbao_capability_is_known() -> None:
    caps = ["create", "read", "update", "patch", "delete", "list", "sudo", "deny", "subscribe"]
    quoted = ", ".join(f'"{c}"' for c in caps)
    hcl = f'path "a/*" {{\n  capabilities = [{quoted}]\n}}'
    assert parse_policy(hcl)[0].capabilities == tuple(caps)


def test_policy_parameters_blocks_and_comments_are_accepted() -> None:
    hcl = """# comment
    // another
    /* block
       comment */
    path "secret/data/x" {
      capabilities = ["create", "update"]
      allowed_parameters = {
        "data" = []
      }
      min_wrapping_ttl = "1s"
    }
    """
    assert [r.path for r in parse_policy(hcl)] == ["secret/data/x"]


def test_a_policy_file_is_read_relative_to_the_mesh_file(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "r.hcl").write_text(READ_ALL)
    spec = ResourcesSpec.model_validate({"policies": {"r": {"file": "policies/r.hcl"}}},
                                        context={"base_dir": tmp_path})
    assert spec.policies["r"].hcl == READ_ALL


def test_a_missing_policy_file_is_reported_at_the_policy(tmp_path: Path) -> None:
    [(loc, msg)] = errors({"policies": {"r": {"file": "nope.hcl"}}}, base_dir=tmp_path)
    assert loc == ("policies", "r")
    assert "nope.hcl" in msg and "does not exist" in msg


def test_bad_hcl_in_a_policy_file_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "r.hcl").write_text('path "a" {\n  capabilities = ["rad"]\n}\n')
    [(loc, msg)] = errors({"policies": {"r": {"file": "r.hcl"}}}, base_dir=tmp_path)
    assert loc == ("policies", "r", "file")
    assert "r.hcl: line 2" in msg


def test_hcl_and_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "r.hcl").write_text(READ_ALL)
    [(_, msg)] = errors({"policies": {"r": {"file": "r.hcl", "hcl": READ_ALL}}}, base_dir=tmp_path)
    assert "not both" in msg


@pytest.mark.parametrize("name", ["root", "vaultmesh-admin"])
def test_reserved_policy_names_are_refused(name: str) -> None:
    [(loc, _)] = errors({"policies": {name: READ_ALL}})
    assert loc == ("policies", name)


def test_policy_names_must_be_lower_case() -> None:
    [(loc, _)] = errors({"policies": {"Readers": READ_ALL}})
    assert loc[:2] == ("policies", "Readers")


def test_a_template_naming_an_undeclared_auth_mount_is_refused() -> None:
    hcl = 'path "kv/{{identity.entity.aliases.auth/jwt/.metadata.job}}" { capabilities = ["read"] }'
    [(loc, msg)] = errors({"policies": {"p": hcl}})
    assert loc == ("policies", "p", "hcl")
    assert "'jwt'" in msg


# -- references ------------------------------------------------------------------------------------------

def test_a_role_naming_a_missing_policy_fails_at_that_policy_name() -> None:
    [(loc, msg)] = errors({"policies": {"reader": READ_ALL},
                           "auth": {"jwt": jwt_mount({"b": {"bound_audiences": ["x"],
                                                            "token_policies": ["reader", "writer"]}})}})
    assert loc == ("auth", "jwt", "roles", "b", "token_policies", 1)
    assert "'writer'" in msg and "reader" in msg


def test_a_role_may_name_the_default_and_bootstrap_admin_policies() -> None:
    ResourcesSpec.model_validate({"auth": {"jwt": jwt_mount({"b": {"bound_audiences": ["x"],
                                                                   "token_policies": ["default",
                                                                                      "vaultmesh-admin"]}})}})


def test_a_namespace_role_cannot_use_a_root_policy() -> None:
    [(loc, _)] = errors({"policies": {"reader": READ_ALL},
                         "namespaces": {"team-a": {"auth": {"jwt": jwt_mount(
                             {"b": {"bound_audiences": ["x"], "token_policies": ["reader"]}})}}}})
    assert loc == ("namespaces", "team-a", "auth", "jwt", "roles", "b", "token_policies", 0)


def test_nested_namespaces_are_validated_at_their_own_path() -> None:
    [(loc, _)] = errors({"namespaces": {"a": {"namespaces": {"b": {"secrets": {"kv": {"type": "kv",
                                                                                      "versoin": 2}}}}}}})
    assert loc == ("namespaces", "a", "namespaces", "b", "secrets", "kv", "versoin")


def test_mount_paths_written_with_and_without_slash_are_duplicates() -> None:
    [(loc, msg)] = errors({"secrets": {"kv": {"type": "kv"}, "kv/": {"type": "kv"}}})
    assert loc == ("secrets", "kv/")
    assert "duplicate" in msg


def test_a_mount_nested_in_another_is_refused() -> None:
    [(loc, _)] = errors({"secrets": {"kv": {"type": "kv"}, "kv/team": {"type": "kv"}}})
    assert loc == ("secrets", "kv/team")


@pytest.mark.parametrize(("section", "path", "body"), [
    ("auth", "userpass", {"type": "approle"}),
    ("auth", "token", {"type": "approle"}),
    ("secrets", "sys", {"type": "kv"}),
    ("secrets", "identity", {"type": "kv"}),
])
def test_paths_owned_by_openbao_or_the_bootstrap_are_refused(section: str, path: str, body: dict) -> None:
    [(loc, msg)] = errors({section: {path: body}})
    assert loc == (section, path)
    assert "reserved" in msg


def test_a_mount_colliding_with_a_namespace_name_is_refused() -> None:
    [(loc, _)] = errors({"secrets": {"team-a": {"type": "kv"}}, "namespaces": {"team-a": {}}})
    assert loc == ("secrets", "team-a")


# -- secrets ---------------------------------------------------------------------------------------------

def test_a_literal_seed_value_is_refused_at_its_key() -> None:
    [(loc, msg)] = errors({"secrets": {"secret": {"type": "kv", "seed": {"jobs/x": {"api_token": "hunter2"}}}}})
    assert loc == ("secrets", "secret", "seed", "jobs/x", "api_token")
    assert "never go in the mesh file" in msg
    assert "hunter2" not in msg


def test_a_seed_from_env_or_file_is_accepted() -> None:
    spec = ResourcesSpec.model_validate({"secrets": {"secret": {"type": "kv", "seed": {"jobs/x": {
        "a": {"from_env": "A"}, "b": {"from_file": "b.txt", "optional": True}}}}}})
    assert spec.secrets["secret"].seed["jobs/x"]["b"].describe() == "file:b.txt"


def test_a_secret_reference_needs_exactly_one_source() -> None:
    [(loc, _)] = errors({"secrets": {"s": {"type": "kv", "seed": {"x": {"k": {"from_env": "A",
                                                                                "from_file": "f"}}}}}})
    assert loc == ("secrets", "s", "seed", "x", "k")


def test_a_literal_database_password_is_refused() -> None:
    [(loc, _)] = errors({"secrets": {"db": {"type": "database", "connections": {"pg": {
        "connection_url": "postgresql://{{username}}:{{password}}@h/db", "password": "pw"}}}}})
    assert loc == ("secrets", "db", "connections", "pg", "password")


def test_a_password_inside_the_connection_url_is_refused() -> None:
    [(loc, msg)] = errors({"secrets": {"db": {"type": "database", "connections": {"pg": {
        "connection_url": "postgresql://postgres:s3cret@h/db"}}}}})
    assert loc == ("secrets", "db", "connections", "pg", "connection_url")
    assert "s3cret" not in msg


def test_a_database_role_must_use_a_declared_connection() -> None:
    [(loc, _)] = errors({"secrets": {"db": {"type": "database", "roles": {"ro": {
        "db_name": "pg", "creation_statements": ["CREATE ROLE x"]}}}}})
    assert loc == ("secrets", "db", "roles", "ro", "db_name")


def test_explicit_allowed_roles_must_list_the_roles_using_the_connection() -> None:
    [(loc, _)] = errors({"secrets": {"db": {"type": "database",
                                            "connections": {"pg": {"connection_url": "postgresql://h/db",
                                                                   "allowed_roles": ["other"]}},
                                            "roles": {"ro": {"db_name": "pg", "creation_statements": ["x"]}}}}})
    assert loc == ("secrets", "db", "connections", "pg", "allowed_roles")


# -- auth ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    {},
    {"jwks_url": "https://a", "jwt_validation_pubkeys": ["k"]},
    {"jwks_ca_pem": "pem", "oidc_discovery_url": "https://a"},
])
def test_a_jwt_config_needs_exactly_one_key_source(config: dict) -> None:
    [(loc, _)] = errors({"auth": {"jwt": {"type": "jwt", "config": config}}})
    assert loc == ("auth", "jwt", "config")


def test_a_jwt_role_without_any_bound_is_refused_like_openbao_does() -> None:
    [(loc, msg)] = errors({"auth": {"jwt": jwt_mount({"b": {"user_claim": "sub"}})}})
    assert loc == ("auth", "jwt", "roles", "b")
    assert "bound_audiences" in msg


def test_a_jwt_mount_with_roles_needs_a_config() -> None:
    [(loc, _)] = errors({"auth": {"jwt": {"type": "jwt", "roles": {"b": {"bound_audiences": ["x"]}}}}})
    assert loc == ("auth", "jwt")


def test_an_unknown_placeholder_is_refused() -> None:
    [(loc, msg)] = errors({"auth": {"jwt": {"type": "jwt", "config": {
        "oidc_discovery_url": "{{vaultmesh.issuer}}"}}}})
    assert loc == ("auth", "jwt", "config", "oidc_discovery_url")
    assert "vaultmesh.issuer_url" in msg


# -- audit and expectations ------------------------------------------------------------------------------

def test_an_audit_file_path_must_be_relative() -> None:
    [(loc, msg)] = errors({"audit": {"extra": {"type": "file", "options": {"file_path": "/var/log/a.log"}}}})
    assert loc == ("audit", "extra", "options", "file_path")
    assert "identical on every node" in msg


def test_socket_and_syslog_audit_devices_are_modelled() -> None:
    spec = ResourcesSpec.model_validate({"audit": {
        "siem": {"type": "socket", "options": {"address": "127.0.0.1:9090"}},
        "sys": {"type": "syslog", "options": {"tag": "bao"}}}})
    assert spec.audit["siem"].options.socket_type == "tcp"


def test_an_expectation_must_name_a_declared_role() -> None:
    [(loc, _)] = errors({"auth": {"jwt": jwt_mount({"b": {"bound_audiences": ["x"]}})},
                         "expect": [{"login": {"mount": "jwt", "role": "web"}, "can": {"read": ["a"]}}]})
    assert loc == ("expect", 0, "login", "role")


def test_an_expectation_needs_a_login_or_policies_and_a_check() -> None:
    errs = errors({"expect": [{"can": {"read": ["a"]}}, {"policies": ["default"]}]})
    assert [loc for loc, _ in errs] == [("expect", 0), ("expect", 1)]


def test_an_expectation_lists_its_checks_in_order() -> None:
    spec = ResourcesSpec.model_validate({"expect": [{"policies": ["default"], "can": {"read": ["a"]},
                                                     "cannot": {"list": ["b"], "any": ["sys/*"]}}]})
    assert spec.expect[0].checks() == [("read", "a", True), ("list", "b", False), ("any", "sys/*", False)]


def test_an_expectation_in_a_namespace_is_checked_against_that_namespace() -> None:
    [(loc, _)] = errors({"namespaces": {"a": {}},
                         "expect": [{"namespace": "b", "policies": ["default"], "can": {"read": ["x"]}}]})
    assert loc == ("expect", 0, "namespace")


# -- the example -----------------------------------------------------------------------------------------

def _example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    return {k: v for k, v in data.items() if k in ResourcesSpec.model_fields}


def test_the_playdream_example_is_valid() -> None:
    spec = ResourcesSpec.model_validate(_example())
    assert set(spec.auth["jwt"].roles) == {"batch", "web"}
    assert spec.policies["web"].file == "policies/web.hcl"


def test_the_playdream_example_reads_its_policy_file() -> None:
    spec = ResourcesSpec.model_validate(_example(), context={"base_dir": EXAMPLE.parent})
    assert 'path "transit/encrypt/web-sessions"' in (spec.policies["web"].hcl or "")


def test_a_spec_round_trips_through_its_dump() -> None:
    spec = ResourcesSpec.model_validate(_example(), context={"base_dir": EXAMPLE.parent})
    assert ResourcesSpec.model_validate(spec.model_dump()) == spec
