"""Lint: valid but risky things in the mesh file, each named by field path and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    assert codes(used("p", 'path "sys/leases/revoke-prefix/x" { capabilities = ["update", "sudo"] }')) == [
        ("policy-sudo", "policies.p")]


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
    assert str(w).startswith("line 4: policies.lonely: ")
