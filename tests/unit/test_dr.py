"""The pure parts of restore and the drill: seal checks, mesh-file changes, leader agreement, the drill's verdict,
RTO, the login token's claims and the role it picks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from vaultmesh.dr.drill import (
    Check,
    DrillReport,
    JwtRole,
    canary_of,
    login_claims,
    pick_role,
    plan_detail,
    pubkeys_config,
    recovery_time,
    scratch_changes,
    skipped,
    trusts,
    verdict,
)
from vaultmesh.dr.restore import (
    FRESH_PORTS,
    fingerprint,
    leaders_inside,
    restore_deadline,
    seal_refusal,
    spec_text_with,
)
from vaultmesh.snapshot.archive import Canary

KEY = b"k" * 32
FP = "sha256:" + fingerprint(KEY)
ISSUER = "https://127.0.0.1:4444"


# -- seal ---------------------------------------------------------------------------------------------------

def test_the_same_static_key_restores() -> None:
    assert seal_refusal(mesh_seal="static", snapshot_seal="static", expected=FP, found=fingerprint(KEY)) is None


def test_the_fingerprint_is_compared_with_or_without_its_sha256_prefix_and_case() -> None:
    assert seal_refusal(mesh_seal="static", snapshot_seal="static", expected=FP.upper().replace("SHA256:", ""),
                        found="sha256:" + fingerprint(KEY)) is None


def test_another_static_key_is_refused_with_both_fingerprints_shortened() -> None:
    why = seal_refusal(mesh_seal="static", snapshot_seal="static", expected=FP, found=fingerprint(b"x" * 32))
    assert why is not None and why.startswith("the snapshot was sealed with another key")
    assert fingerprint(KEY)[:12] in why and fingerprint(KEY) not in why


def test_a_missing_key_or_fingerprint_is_refused() -> None:
    assert "missing" in (seal_refusal(mesh_seal="static", snapshot_seal="static", expected=FP, found=None) or "")
    assert "no seal key fingerprint" in (seal_refusal(mesh_seal="static", snapshot_seal="static", expected=None,
                                                      found=fingerprint(KEY)) or "")


def test_transit_and_kms_seals_are_refused_with_the_reason() -> None:
    for seal in ("transit", "awskms"):
        why = seal_refusal(mesh_seal=seal, snapshot_seal=seal, expected=None, found=None)
        assert why is not None and f"a {seal}-sealed mesh cannot be restored" in why


def test_a_snapshot_of_another_seal_type_is_refused() -> None:
    why = seal_refusal(mesh_seal="static", snapshot_seal="shamir", expected=None, found=fingerprint(KEY))
    assert why == "the snapshot was taken on a shamir-sealed mesh and this mesh's seal is static"


def test_shamir_needs_no_fingerprint() -> None:
    assert seal_refusal(mesh_seal="shamir", snapshot_seal="shamir", expected=None, found=None) is None


# -- the new mesh's file ----------------------------------------------------------------------------------------

def test_changes_merge_into_nested_keys_and_keep_the_rest() -> None:
    text = "name: prod\nports:\n  base: 40000\n  entry: 41000\nentry:\n  mode: haproxy\n  x: 1\n"
    doc = yaml.safe_load(spec_text_with(text, {**FRESH_PORTS, "entry": {"mode": "none"}, "runtime": "netns"}))
    assert doc == {"name": "prod", "ports": {"base": None, "entry": None}, "entry": {"mode": "none", "x": 1},
                   "runtime": "netns"}


def test_no_changes_keep_the_text_as_it_is() -> None:
    assert spec_text_with("# comment\nname: a\n", {}) == "# comment\nname: a\n"


def test_an_empty_file_takes_the_changes() -> None:
    assert yaml.safe_load(spec_text_with("", {"keeper": {"enabled": False}})) == {"keeper": {"enabled": False}}


def test_the_restore_deadline_grows_with_the_snapshot() -> None:
    assert restore_deadline(100_000_000) > restore_deadline(1_000) >= 60


# -- leaders ----------------------------------------------------------------------------------------------------

INSIDE = {"https://10.0.0.1:1", "https://10.0.0.2:1"}


def leader(addr: str, is_self: bool = False) -> dict[str, object]:
    return {"leader_cluster_address": addr, "is_self": is_self}


def test_every_node_naming_one_leader_of_the_mesh_is_agreement() -> None:
    assert leaders_inside({"a": leader("https://10.0.0.1:1", True), "b": leader("https://10.0.0.1:1")}, INSIDE)


def test_a_node_naming_a_leader_outside_the_mesh_is_not() -> None:
    """A restored standby may name the source's leader (its advertisement came with the snapshot)."""
    assert not leaders_inside({"a": leader("https://10.0.0.1:1", True), "b": leader("https://127.0.0.1:9")}, INSIDE)


def test_a_silent_node_or_no_leader_is_not_agreement() -> None:
    assert not leaders_inside({"a": leader("https://10.0.0.1:1", True), "b": None}, INSIDE)
    assert not leaders_inside({"a": leader(""), "b": leader("")}, INSIDE)
    assert not leaders_inside({}, INSIDE)


def test_two_nodes_that_each_say_they_lead_are_not_agreement() -> None:
    assert not leaders_inside({"a": leader("https://10.0.0.1:1", True), "b": leader("https://10.0.0.1:1", True)},
                              INSIDE)


# -- the drill's verdict and RTO --------------------------------------------------------------------------------

def checks(**oks: bool | None) -> list[Check]:
    return [Check(name, ok, "") for name, ok in oks.items()]


def test_a_drill_passes_with_skipped_checks_but_not_with_a_failed_one() -> None:
    assert verdict(checks(restore=True, plan=None, canary=True, transit=True, login=None))
    assert not verdict(checks(restore=True, plan=False, canary=True, transit=True, login=True))
    assert not verdict(checks(restore=False, plan=None, canary=None, transit=None, login=None))
    assert not verdict([])


def test_rto_ends_at_the_first_successful_login() -> None:
    ends = {"plan": 10.0, "canary": 10.5, "transit": 10.6, "login": 11.0}
    assert recovery_time(checks(restore=True, plan=True, canary=True, transit=True, login=True), ends) == 11.0


def test_rto_without_a_login_ends_at_the_last_check() -> None:
    ends = {"plan": 10.0, "canary": 10.5, "transit": 10.6, "login": 10.7}
    assert recovery_time(checks(restore=True, plan=None, canary=True, transit=True, login=None), ends) == 10.7


def test_there_is_no_rto_when_the_login_or_the_restore_failed() -> None:
    ends = {"plan": 10.0, "login": 11.0}
    assert recovery_time(checks(restore=True, plan=True, login=False), ends) is None
    assert recovery_time(checks(restore=False, plan=None, login=None), {}) is None


def test_skipped_checks_say_why() -> None:
    assert skipped(["plan", "login"], "the restore failed") == [Check("plan", None, "the restore failed"),
                                                               Check("login", None, "the restore failed")]


def test_the_scratch_mesh_runs_isolated_without_keeper_or_entry() -> None:
    assert scratch_changes(isolation=True) == {"runtime": "netns", "keeper": {"enabled": False},
                                               "entry": {"mode": "none"}}
    assert scratch_changes(isolation=False)["runtime"] == "local"


def test_the_report_has_the_documented_shape() -> None:
    report = DrillReport(True, 12.34567, 60.0, (Check("restore", True, "ok", 11.0),), "/s.snap", 1.0, 13.0, True,
                         {"up": 3.21})
    doc = json.loads(json.dumps(report.to_json()))
    assert {"ok", "rto_s", "rpo_s", "checks", "snapshot"} <= set(doc)
    assert doc["rto_s"] == 12.346 and doc["checks"] == [{"name": "restore", "ok": True, "detail": "ok",
                                                         "seconds": 11.0}]
    assert report.lines()[-1] == "drill passed: RTO 12.3 s, RPO 60 s, snapshot /s.snap"


def test_a_failed_report_prints_fail_and_no_rto() -> None:
    report = DrillReport(False, None, None, (Check("restore", False, "sealed with another key"),
                                             Check("plan", None, "skipped")), "/s.snap", 1.0, 2.0, True)
    assert report.lines() == ["FAIL restore  sealed with another key", "skip plan     skipped",
                              "drill FAILED: RTO -, RPO -, snapshot /s.snap"]


# -- the login ---------------------------------------------------------------------------------------------------

def test_the_token_carries_the_roles_first_audience_and_its_user_claim() -> None:
    claims = login_claims({"bound_audiences": ["vaultmesh-x", "other"], "user_claim": "sub"}, issuer=ISSUER,
                          now=1000.0)
    assert claims["aud"] == ["vaultmesh-x"] and claims["iss"] == ISSUER
    assert claims["exp"] > claims["iat"] == 1000 and claims["sub"].endswith(":vaultmesh-drill")


def test_a_role_without_audiences_gets_a_token_without_aud() -> None:
    assert "aud" not in login_claims({"user_claim": "sub"}, issuer=ISSUER, now=1000.0)


def test_bound_subject_and_bound_claims_are_met() -> None:
    claims = login_claims({"bound_subject": "spiffe://x/y", "bound_claims": {"team": ["a", "b"], "env": "prod"},
                           "user_claim": "/kubernetes.io/serviceaccount/name"}, issuer=ISSUER, now=1.0)
    assert claims["sub"] == "spiffe://x/y" and claims["team"] == "a" and claims["env"] == "prod"
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "vaultmesh-drill"


def test_glob_bound_claims_are_filled_in_and_pointer_claims_nested() -> None:
    claims = login_claims({"bound_claims_type": "glob", "bound_claims": {"/ns/name": "team-*"},
                           "user_claim": "job"}, issuer=ISSUER, now=1.0)
    assert claims["ns"] == {"name": "team-x"} and claims["job"] == "vaultmesh-drill"


def test_a_mount_trusts_the_issuer_by_bound_issuer_discovery_or_jwks() -> None:
    assert trusts({"bound_issuer": ISSUER}, ISSUER)
    assert trusts({"oidc_discovery_url": ISSUER + "/"}, ISSUER)
    assert trusts({"jwks_url": ISSUER + "/keys"}, ISSUER)
    assert not trusts({"oidc_discovery_url": "https://127.0.0.1:5555"}, ISSUER)
    assert not trusts({"jwks_url": ISSUER + "0/keys"}, ISSUER)


def role(ns: str, mount: str, name: str, *, issuer: str = ISSUER, role_type: str = "jwt") -> JwtRole:
    return JwtRole(ns, mount, name, {"bound_issuer": issuer}, {"role_type": role_type})


def test_the_root_namespaces_role_is_picked_first_then_by_path() -> None:
    roles = [role("team-a/", "jwt", "a"), role("", "jwt-z", "b"), role("", "jwt-a", "c"),
             role("", "jwt-0", "d", issuer="https://elsewhere:1"), role("", "jwt-1", "e", role_type="oidc")]
    chosen = pick_role(roles, ISSUER)
    assert chosen is not None and chosen.where == "jwt-a/role/c"
    assert pick_role([role("", "jwt", "x", issuer="https://elsewhere:1")], ISSUER) is None


def test_the_pubkeys_config_keeps_the_issuer_default_role_and_algorithms() -> None:
    body = pubkeys_config({"bound_issuer": ISSUER, "oidc_discovery_url": ISSUER, "default_role": "batch"},
                          issuer="https://unused:1", public_pems=["PEM"], algorithm="ES256")
    assert body == {"jwt_validation_pubkeys": ["PEM"], "bound_issuer": ISSUER, "jwt_supported_algs": ["ES256"],
                    "default_role": "batch"}
    assert pubkeys_config({"jwt_supported_algs": ["RS256"]}, issuer=ISSUER, public_pems=[], algorithm="ES256")[
        "jwt_supported_algs"] == ["RS256"]


# -- plan and canary -----------------------------------------------------------------------------------------------

@dataclass
class _Key:
    id: str


@dataclass
class _Action:
    marker: str
    kind: str
    key: _Key


def test_no_executable_action_is_a_passed_plan() -> None:
    assert plan_detail([], 7, Path("m.yaml")) == (True, "the 7 resources of m.yaml show no changes")


def test_changes_are_named_at_most_five() -> None:
    actions = [_Action("~", "policy", _Key(f"sys/policies/acl/p{i}")) for i in range(7)]
    ok, detail = plan_detail(actions, 9, Path("m.yaml"))
    assert not ok and detail.startswith("7 change(s) against m.yaml: ~ policy sys/policies/acl/p0")
    assert detail.endswith("and 2 more") and "p5" not in detail


def test_the_canary_comes_from_the_manifest() -> None:
    @dataclass
    class M:
        canary: Canary | None

    assert canary_of(M(Canary("nonce", 3, "vault:v1:x"))) == ("nonce", "vault:v1:x")
    assert canary_of(M(None)) is None
