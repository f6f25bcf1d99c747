"""Pure parts of `policy test`: probe paths, verdicts, report lines, test JWT claims, throwaway resources."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultmesh.errors import VaultmeshError
from vaultmesh.reconcile.policytest import (
    TEST_ISSUER,
    CheckResult,
    Report,
    login_claims,
    parse_capabilities,
    probe_paths,
    run_policy_tests,
    subject_of,
    throwaway_resources,
    verdict,
)
from vaultmesh.spec.load import load_spec, parse_spec
from vaultmesh.spec.resources import Expectation, JwtRole

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "playdream" / "mesh.yaml"


# -- probe paths -----------------------------------------------------------------------------------------

def test_a_concrete_path_is_probed_as_it_is() -> None:
    assert probe_paths("secret/data/jobs/x") == ["secret/data/jobs/x"]


def test_sys_wildcard_is_probed_at_representative_sys_paths() -> None:
    assert probe_paths("sys/*") == ["sys/policies/acl/x", "sys/mounts", "sys/auth", "sys/vaultmesh-probe"]


def test_other_wildcards_are_probed_at_a_path_under_the_prefix() -> None:
    assert probe_paths("secret/data/jobs/*") == ["secret/data/jobs/vaultmesh-probe"]


def test_a_bare_star_covers_sys_too() -> None:
    assert probe_paths("*") == ["sys/policies/acl/x", "sys/mounts", "sys/auth", "vaultmesh-probe"]


# -- verdicts --------------------------------------------------------------------------------------------

def test_can_passes_when_the_capability_is_listed() -> None:
    assert verdict("read", True, ["read", "list"])


def test_can_fails_on_deny() -> None:
    assert not verdict("read", True, ["deny"])


def test_root_grants_every_capability() -> None:
    assert verdict("sudo", True, ["root"])
    assert not verdict("read", False, ["root"])
    assert not verdict("any", False, ["root"])


def test_cannot_passes_on_deny_or_absent() -> None:
    assert verdict("update", False, ["deny"])
    assert verdict("update", False, [])
    assert verdict("update", False, ["read"])


def test_cannot_fails_when_the_capability_is_listed() -> None:
    assert not verdict("list", False, ["read", "list"])


def test_cannot_any_fails_on_any_capability() -> None:
    assert verdict("any", False, ["deny"])
    assert not verdict("any", False, ["read"])


# -- results and report ----------------------------------------------------------------------------------

def test_a_wildcard_check_passes_only_when_every_probe_passes() -> None:
    ok = CheckResult("s", "any", "sys/*", False, (("sys/mounts", ("deny",)), ("sys/auth", ("deny",))))
    bad = CheckResult("s", "any", "sys/*", False, (("sys/mounts", ("deny",)), ("sys/auth", ("read",))))
    assert ok.ok and not bad.ok


def test_a_check_with_an_error_fails() -> None:
    assert not CheckResult("s", "read", "a", True, error="login failed: 400 invalid audience").ok


def test_report_line_names_verdict_subject_capability_path_and_finding() -> None:
    line = CheckResult("batch job", "read", "secret/data/jobs/x", True, (("secret/data/jobs/x", ("read",)),)).line()
    assert line == "PASS  batch job: can read secret/data/jobs/x  (found: read)"


def test_report_line_for_a_failed_cannot() -> None:
    line = CheckResult("web", "list", "secret/metadata/jobs", False,
                       (("secret/metadata/jobs", ("list", "read")),)).line()
    assert line == "FAIL  web: cannot list secret/metadata/jobs  (found: list, read)"


def test_report_line_groups_wildcard_probes_by_finding() -> None:
    line = CheckResult("s", "any", "sys/*", False,
                       (("sys/mounts", ("deny",)), ("sys/auth", ("read",)), ("sys/x", ("deny",)))).line()
    assert line.endswith("(found: deny at sys/mounts, sys/x; read at sys/auth)")
    assert line.startswith("FAIL")


def test_report_line_shows_the_error() -> None:
    line = CheckResult("s", "read", "a", True, error="login failed: 400 claim does not match").line()
    assert line == "FAIL  s: can read a  (found: login failed: 400 claim does not match)"


def test_report_is_ok_only_when_every_check_passes_and_ends_with_a_summary() -> None:
    good = CheckResult("s", "read", "a", True, (("a", ("read",)),))
    bad = CheckResult("s", "read", "b", True, (("b", ("deny",)),))
    assert Report((good,)).ok
    report = Report((good, bad), where="throwaway OpenBao")
    assert not report.ok
    lines = report.lines()
    assert len(lines) == 3
    assert lines[0].startswith("PASS") and lines[1].startswith("FAIL")
    assert lines[2] == "2 assertion(s), 1 failed (throwaway OpenBao)"


def test_subject_is_the_name_else_the_login_or_policies_with_the_namespace() -> None:
    named = Expectation.model_validate({"name": "n", "policies": ["p"], "can": {"read": ["x"]}})
    login = Expectation.model_validate({"namespace": "team", "login": {"mount": "jwt", "role": "r"},
                                        "can": {"read": ["x"]}})
    pols = Expectation.model_validate({"policies": ["a", "b"], "cannot": {"any": ["sys/*"]}})
    assert subject_of(named) == "n"
    assert subject_of(login) == "[team] login jwt/r"
    assert subject_of(pols) == "policies a,b"


def test_parse_capabilities_by_path_and_single_path_form() -> None:
    resp = {"data": {"a": ["read"], "sys/mounts": ["deny"], "capabilities": ["read"]}}
    assert parse_capabilities(resp, ["a", "sys/mounts"]) == {"a": ("read",), "sys/mounts": ("deny",)}
    assert parse_capabilities({"capabilities": ["list"]}, ["x"]) == {"x": ("list",)}
    assert parse_capabilities({"data": {}}, ["x"]) == {"x": ()}


# -- test JWT claims -------------------------------------------------------------------------------------

def _role(**kw: object) -> JwtRole:
    return JwtRole.model_validate({"bound_audiences": ["vaultmesh"], **kw})


def test_login_claims_satisfy_the_role_bounds() -> None:
    role = _role(bound_claims={"team": "data", "env": ["prod", "dev"]})
    claims = login_claims(role, {"job": "nightly"}, issuer="https://i", now=1000.0, user="u")
    assert claims["aud"] == ["vaultmesh"]
    assert claims["team"] == "data" and claims["env"] == "prod" and claims["job"] == "nightly"
    assert claims["iss"] == "https://i" and claims["sub"] == "u"
    assert claims["nbf"] == 1000 and claims["exp"] > 1000


def test_login_claims_from_the_assertion_win_over_bounds() -> None:
    claims = login_claims(_role(bound_claims={"team": "data"}), {"team": "web"}, issuer="https://i", now=0,
                          user="u")
    assert claims["team"] == "web"


def test_login_claims_use_the_bound_subject_and_fill_the_user_claim() -> None:
    role = _role(bound_subject="system:serviceaccount:ci:builder", user_claim="email")
    claims = login_claims(role, {}, issuer="https://i", now=0, user="u")
    assert claims["sub"] == "system:serviceaccount:ci:builder"
    assert claims["email"] == "u"


def test_glob_bound_claims_get_a_matching_value() -> None:
    claims = login_claims(_role(bound_claims={"repo": "org/*"}, bound_claims_type="glob"), {},
                          issuer="https://i", now=0, user="u")
    assert claims["repo"] == "org/x"


# -- what goes into the throwaway server -----------------------------------------------------------------

def test_throwaway_resources_skip_outside_services_and_trust_the_run_key() -> None:
    spec, _ = load_spec(EXAMPLE)
    out = throwaway_resources(spec, ca_pem="CA", public_pem="PEM")
    kinds = {r.kind for r in out}
    assert not kinds & {"db_connection", "db_role", "kv_secret"}
    assert {"policy", "auth_mount", "jwt_role", "approle_role", "namespace", "transit_key"} <= kinds
    (config,) = [r for r in out if r.kind == "jwt_config"]
    assert dict(config.body) == {"jwt_validation_pubkeys": ["PEM"], "bound_issuer": TEST_ISSUER}


def test_throwaway_resources_need_no_secret_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec("""
version: 1
secrets:
  database:
    type: database
    connections:
      pg:
        plugin_name: postgresql-database-plugin
        connection_url: "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres"
        password: {from_env: SURELY_NOT_SET_FOR_POLICYTEST}
""")
    monkeypatch.delenv("SURELY_NOT_SET_FOR_POLICYTEST", raising=False)
    out = throwaway_resources(spec, ca_pem="CA", public_pem="PEM")
    assert [r.kind for r in out] == ["secrets_mount"]


def test_a_file_without_expectations_is_refused_with_one_message() -> None:
    with pytest.raises(VaultmeshError, match="no expect blocks"):
        run_policy_tests(parse_spec("version: 1\n"), base_dir=Path("."), live_dir=None, engine=None)
