"""Lint: valid but risky things in the mesh file, each named by field path and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from vaultmesh.reconcile.lint import LintWarning, lint
from vaultmesh.spec.resources import ResourcesSpec

EXAMPLE = Path(__file__).parents[2] / "examples" / "playdream" / "mesh.yaml"
JWT_CONFIG = {"jwks_url": "https://issuer.test/jwks"}


def warnings(data: dict[str, Any], **kw: Any) -> list[LintWarning]:
    return lint(ResourcesSpec.model_validate(data), **kw)


def codes(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [(w.code, w.where) for w in warnings(data)]


def used(policy: str, hcl: str, **policy_fields: Any) -> dict[str, Any]:
    """A file where ``policy`` is granted by a well-bound role, so only the policy itself can be linted."""
    return {"policies": {policy: {"hcl": hcl, **policy_fields}},
            "auth": {"approle": {"type": "approle", "roles": {"r": {"token_policies": [policy]}}}}}


def test_the_playdream_example_is_lint_clean() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    spec = ResourcesSpec.model_validate({k: v for k, v in data.items() if k in ResourcesSpec.model_fields},
                                        context={"base_dir": EXAMPLE.parent})
    assert lint(spec) == []


def test_a_grant_on_every_path_is_flagged() -> None:
    assert codes(used("p", 'path "*" { capabilities = ["read"] }')) == [("policy-wildcard", "policies.p")]


def test_a_wildcard_under_sys_is_flagged() -> None:
    assert codes(used("p", 'path "sys/*" { capabilities = ["read"] }')) == [("policy-sys", "policies.p")]


def test_a_deny_on_sys_is_not_a_grant() -> None:
    assert codes(used("p", 'path "sys/*" { capabilities = ["deny"] }')) == []


def test_sudo_is_flagged() -> None:
    assert ("policy-sudo", "policies.p") in codes(
        used("p", 'path "sys/leases/revoke-prefix/x" { capabilities = ["update", "sudo"] }'))


def test_an_admin_policy_may_hold_wildcards_and_sudo() -> None:
    assert codes(used("p", 'path "*" { capabilities = ["sudo", "create"] }', admin=True)) == []


def test_writing_a_whole_engine_is_flagged() -> None:
    data = used("p", 'path "secret/data/*" { capabilities = ["create", "update"] }')
    data["secrets"] = {"secret": {"type": "kv"}}
    [w] = warnings(data)
    assert w.code == "policy-engine-write" and "create, update" in w.message


def test_reading_a_whole_engine_is_not_flagged() -> None:
    assert codes(used("p", 'path "secret/*" { capabilities = ["read", "list"] }')) == []


def test_writing_below_a_folder_of_an_engine_is_not_flagged() -> None:
    assert codes(used("p", 'path "secret/data/jobs/nightly/*" { capabilities = ["create"] }')) == []


def test_the_warning_names_the_policy_line() -> None:
    [w] = warnings(used("p", 'path "a" { capabilities = ["read"] }\npath "*" { capabilities = ["read"] }'))
    assert "policy line 2" in w.message


def test_a_policy_no_role_uses_is_flagged() -> None:
    assert codes({"policies": {"lonely": 'path "a" { capabilities = ["read"] }'}}) == [
        ("policy-unused", "policies.lonely")]


def test_a_policy_used_only_in_another_namespace_is_still_unused_here() -> None:
    data = used("p", 'path "a" { capabilities = ["read"] }')
    data["namespaces"] = {"team": {"policies": {"p": 'path "a" { capabilities = ["read"] }'}}}
    assert codes(data) == [("policy-unused", "namespaces.team.policies.p")]


def test_role_ttls_above_the_limits_are_flagged() -> None:
    data = {"limits": {"token_ttl": "10m", "token_max_ttl": "30m"},
            "auth": {"approle": {"type": "approle", "roles": {"r": {"token_ttl": "20m", "token_max_ttl": "2h"}}}}}
    assert codes(data) == [("ttl-above-limit", "auth.approle.roles.r.token_max_ttl"),
                           ("ttl-above-limit", "auth.approle.roles.r.token_ttl")]


def test_a_jwt_role_without_audiences_is_flagged() -> None:
    data = {"auth": {"jwt": {"type": "jwt", "config": JWT_CONFIG, "roles": {"r": {"bound_subject": "x"}}}}}
    assert codes(data) == [("jwt-no-audience", "auth.jwt.roles.r")]


def test_a_jwt_role_without_claims_or_subject_is_flagged() -> None:
    data = {"auth": {"jwt": {"type": "jwt", "config": JWT_CONFIG, "roles": {"r": {"bound_audiences": ["a"]}}}}}
    assert codes(data) == [("jwt-unbound", "auth.jwt.roles.r")]


def test_a_template_reading_metadata_no_role_maps_is_flagged() -> None:
    hcl = 'path "kv/{{identity.entity.aliases.auth/jwt/.metadata.job}}" { capabilities = ["read"] }'
    data = {"policies": {"p": hcl}, "auth": {"jwt": {"type": "jwt", "config": JWT_CONFIG, "roles": {
        "r": {"bound_audiences": ["a"], "bound_subject": "s", "token_policies": ["p"]}}}}}
    assert codes(data) == [("template-unmapped", "policies.p")]


def test_raw_audit_logging_is_flagged() -> None:
    data = {"audit": {"raw": {"type": "file", "options": {"file_path": "raw.log", "log_raw": True}}}}
    assert codes(data) == [("audit-log-raw", "audit.raw.options.log_raw")]


def test_warnings_carry_the_file_line_when_the_loader_knows_it() -> None:
    data = {"policies": {"lonely": 'path "a" { capabilities = ["read"] }'}}
    [w] = warnings(data, lines={("policies",): 3, ("policies", "lonely"): 4})
    assert w.line == 4
    assert str(w).startswith("4: policies.lonely: ")  # after "<file>:", as validation errors read


# -- what a reviewer would catch (issue 8) ----------------------------------------------------------------

def jwt_file(role: dict[str, Any], policy: str = 'path "kv/data/x" { capabilities = ["read"] }',
             config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"policies": {"p": {"hcl": policy}},
            "auth": {"jwt": {"type": "jwt", "config": config or JWT_CONFIG,
                             "roles": {"r": {"bound_audiences": ["a"], "bound_claims": {"team": "t"},
                                             "token_policies": ["p"], **role}}}}}


TEMPLATED = 'path "kv/data/jobs/{{identity.entity.aliases.auth/jwt/.metadata.job}}" { capabilities = ["read"] }'


def test_a_template_on_metadata_of_a_claim_that_is_not_the_alias_is_flagged() -> None:
    assert ("template-alias-unpinned", "auth.jwt.roles.r.user_claim") in codes(
        jwt_file({"user_claim": "sub", "claim_mappings": {"job": "job"}}, TEMPLATED))


def test_a_template_on_metadata_of_the_alias_claim_is_not_flagged() -> None:
    assert codes(jwt_file({"user_claim": "job", "claim_mappings": {"job": "job"}}, TEMPLATED)) == []
    by_name = 'path "kv/data/jobs/{{identity.entity.aliases.auth/jwt/.name}}" { capabilities = ["read"] }'
    assert codes(jwt_file({"user_claim": "job"}, by_name)) == []


def test_the_lint_flags_the_old_example_role() -> None:
    old = jwt_file({"user_claim": "sub", "claim_mappings": {"job": "job", "team": "team"}}, TEMPLATED)
    [w] = [w for w in warnings(old) if w.code == "template-alias-unpinned"]
    assert "user_claim: job" in w.message


@pytest.mark.parametrize("path", ["s*", "secret/*", "+/data/x", "kv*"])
def test_writes_on_a_glob_near_the_root_are_flagged(path: str) -> None:
    found = {c for c, _ in codes(used("p", f'path "{path}" {{ capabilities = ["update"] }}'))}
    assert found & {"policy-glob-write", "policy-engine-write"}


def test_writes_under_a_team_prefix_and_reads_near_the_root_are_not_flagged() -> None:
    assert codes(used("p", 'path "secret/data/team-a/*" { capabilities = ["create", "update"] }')) == []
    assert codes(used("p", 'path "secret/*" { capabilities = ["list"] }')) == []


@pytest.mark.parametrize("path", ["sys/policies/acl/*", "auth/jwt/role/*", "auth/*", "identity/entity/id/x",
                                  "identity/entity-alias", "sys/leases/revoke", "sys/leases/revoke-prefix/db"])
def test_admin_paths_granted_to_a_workload_role_are_flagged(path: str) -> None:
    assert ("policy-admin-path", "policies.p") in codes(
        used("p", f'path "{path}" {{ capabilities = ["update"] }}'))


def test_admin_paths_in_a_policy_no_role_holds_are_not_workload_grants() -> None:
    data = {"policies": {"ops": {"hcl": 'path "identity/entity/id/x" { capabilities = ["read"] }'}}}
    assert "policy-admin-path" not in {c for c, _ in codes(data)}


def test_the_bootstrap_admin_policy_on_a_role_is_flagged() -> None:
    data = {"auth": {"approle": {"type": "approle", "roles": {"r": {"token_policies": ["vaultmesh-admin"]}}}}}
    assert ("role-admin-policy", "auth.approle.roles.r.token_policies") in codes(data)


def test_glob_bound_claims_are_flagged_and_exact_ones_are_not() -> None:
    assert ("jwt-glob-claims", "auth.jwt.roles.r.bound_claims") in codes(
        jwt_file({"bound_claims": {"team": "da*"}}))
    assert ("jwt-glob-claims", "auth.jwt.roles.r.bound_claims") in codes(
        jwt_file({"bound_claims_type": "glob"}))
    assert codes(jwt_file({})) == []


def test_a_plain_http_identity_provider_is_flagged() -> None:
    assert ("jwt-plain-http", "auth.jwt.config.jwks_url") in codes(
        jwt_file({}, config={"jwks_url": "http://issuer.test/jwks"}))
    assert ("jwt-plain-http", "auth.jwt.config.oidc_discovery_url") in codes(
        jwt_file({}, config={"oidc_discovery_url": "HTTP://issuer.test"}))


def db_file(statement: str, **role: Any) -> dict[str, Any]:
    return {"secrets": {"database": {"type": "database",
                                     "connections": {"pg": {"connection_url": "postgresql://{{username}}:"
                                                                              "{{password}}@h/db"}},
                                     "roles": {"ro": {"db_name": "pg", "creation_statements": [statement],
                                                      **role}}}}}


@pytest.mark.parametrize("statement", [
    'CREATE ROLE "{{name}}" WITH LOGIN SUPERUSER PASSWORD \'{{password}}\';',
    'CREATE ROLE "{{name}}" WITH LOGIN createrole PASSWORD \'{{password}}\';',
    'GRANT pg_read_all_data TO "{{name}}";',
])
def test_privileged_creation_statements_are_flagged(statement: str) -> None:
    assert ("db-privileged", "secrets.database.roles.ro.creation_statements[0]") in codes(db_file(statement))


def test_a_plain_login_role_is_not_flagged() -> None:
    ok = 'CREATE ROLE "{{name}}" WITH LOGIN NOSUPERUSER NOCREATEROLE PASSWORD \'{{password}}\';'
    assert codes(db_file(ok)) == []


def test_lease_ttls_above_the_limits_are_flagged() -> None:
    assert ("ttl-above-limit", "secrets.database.roles.ro.max_ttl") in codes(
        db_file('CREATE ROLE "{{name}}";', max_ttl="2h"))
    assert codes(db_file('CREATE ROLE "{{name}}";', max_ttl="1h")) == []
    tuned = jwt_file({})
    tuned["auth"]["jwt"]["tune"] = {"max_lease_ttl": "24h"}
    assert ("ttl-above-limit", "auth.jwt.tune.max_lease_ttl") in codes(tuned)


def test_the_benchs_database_role_asks_for_no_privilege_on_the_shared_postgresql() -> None:
    from vaultmesh.bench.targets import bench_mesh_file

    data = yaml.safe_load(bench_mesh_file())
    data.pop("version")
    assert [c for c in codes(data) if c[0] == "db-privileged"] == []
    role = data["secrets"]["vaultmesh-bench-db"]["roles"]["bench"]
    assert any("DROP ROLE" in st for st in role["revocation_statements"])
