"""Rate-limit quotas in the mesh file: validation, desired resources, reads, the plan and lint."""

from __future__ import annotations

from typing import Any

import pytest

from vaultmesh.errors import SpecError
from vaultmesh.reconcile import observe
from vaultmesh.reconcile.lint import lint
from vaultmesh.reconcile.observe import Observed, ObservedState, Read, observed_state, reads_needed
from vaultmesh.reconcile.plan import Create, Delete, NoOp, Update, plan_changes, requests_for
from vaultmesh.reconcile.resources import Resource, ResourceKey, desired_resources
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.resources import ResourcesSpec

KEY = b"k" * 32
BASE = """\
auth:
  jwt:
    type: jwt
    config: {jwks_url: "https://issuer.test/jwks"}
    roles:
      batch: {bound_audiences: [vaultmesh], bound_claims: {team: data}}
secrets:
  database:
    type: database
    connections:
      pg: {connection_url: "postgresql://{{username}}:{{password}}@db.test/app"}
    roles:
      ro: {db_name: pg, creation_statements: ["CREATE ROLE x"]}
namespaces:
  team-a:
    auth:
      approle: {type: approle, roles: {ci: {}}}
"""


def spec_of(quotas: str, base: str = BASE) -> ResourcesSpec:
    return parse_spec(base + "quotas:\n  rate_limit:\n" + quotas, source="mesh.yaml")


def error_of(quotas: str) -> str:
    with pytest.raises(SpecError) as err:
        spec_of(quotas)
    return str(err.value)


def quotas_of(spec: ResourcesSpec) -> list[Resource]:
    return [r for r in desired_resources(spec, secrets={}, hash_key=KEY) if r.kind == "rate_limit_quota"]


# -- the file --------------------------------------------------------------------------------------------

def test_a_quota_takes_openbao_defaults_for_what_it_leaves_out() -> None:
    q = spec_of("    logins: {path: auth/jwt, rate: 5}\n").quotas.rate_limit["logins"]
    assert (q.path, q.rate, q.interval, q.block_interval, q.role) == ("auth/jwt", 5, 1, 0, None)


def test_durations_and_fractional_rates_are_accepted() -> None:
    q = spec_of("    g: {rate: 2.5, interval: 1m, block_interval: 5m}\n").quotas.rate_limit["g"]
    assert (q.path, q.rate, q.interval, q.block_interval) == ("", 2.5, 60, 300)


def test_a_trailing_slash_is_the_same_path() -> None:
    assert spec_of("    a: {path: auth/jwt/, rate: 5}\n").quotas.rate_limit["a"].path == "auth/jwt"


@pytest.mark.parametrize("quota, where, words", [
    ("{path: auth/jwt, rate: 0}", "quotas.rate_limit.q.rate", "greater than 0"),
    ("{path: auth/jwt, rate: '5'}", "quotas.rate_limit.q.rate", "valid number"),
    ("{path: auth/jwt, rate: true}", "quotas.rate_limit.q.rate", "valid number"),
    ("{path: auth/jwt}", "quotas.rate_limit.q.rate", "Field required"),
    ("{path: auth/jwt, rate: 5, interval: 0}", "quotas.rate_limit.q.interval", "at least 1s"),
    ("{path: auth/jwt, rate: 5, interval: 1.5s}", "quotas.rate_limit.q.interval", "not a duration"),
    ("{path: auth/jwt, rate: 5, burst: 9}", "quotas.rate_limit.q.burst", "unknown field"),
    ("{path: /auth/jwt, rate: 5}", "quotas.rate_limit.q.path", "starts with '/'"),
    ("{path: 'auth/*/login', rate: 5}", "quotas.rate_limit.q.path", "at most one '*' at the very end"),
    ("{path: auth/nosuch, rate: 5}", "quotas.rate_limit.q.path", "names no auth mount declared at the root"),
    ("{path: team-a/auth/jwt, rate: 5}", "quotas.rate_limit.q.path", "in namespace 'team-a'"),
    ("{path: kv/data/x, rate: 5}", "quotas.rate_limit.q.path", "names no secrets engine"),
    ("{path: database, rate: 5, role: ro}", "quotas.rate_limit.q.role", "path must be that mount"),
    ("{path: auth/jwt/login, rate: 5, role: batch}", "quotas.rate_limit.q.role", "path must be that mount"),
    ("{path: team-a/auth/approle, rate: 5, role: nope}", "quotas.rate_limit.q.role", "role 'nope' is not declared"),
    ("{path: auth/jwt, rate: 5, role: batch}", "quotas.rate_limit.q.role", "cannot limit one role of a jwt"),
    ("{path: auth/userpass, rate: 5, role: admin}", "quotas.rate_limit.q.role", "has no roles"),
])
def test_invalid_quotas_are_one_line_naming_file_line_and_field(quota: str, where: str, words: str) -> None:
    message = error_of(f"    q: {quota}\n")
    assert message.startswith(f"mesh.yaml:20: {where}:"), message
    assert words in message and "\n" not in message


def test_two_quotas_on_one_path_and_role_are_refused_like_openbao_does() -> None:
    message = error_of("    a: {path: auth/jwt, rate: 5}\n    b: {path: auth/jwt/, rate: 9}\n")
    assert "quotas.rate_limit.b.path: quota 'a' already limits path 'auth/jwt'" in message
    spec_of("    a: {path: team-a/auth/approle, rate: 5}\n    b: {path: team-a/auth/approle, rate: 9, role: ci}\n")


def test_built_in_root_mounts_and_namespaces_may_be_limited() -> None:
    spec_of("    a: {path: auth/userpass, rate: 1}\n    b: {path: sys, rate: 100}\n    c: {path: team-a, rate: 50}\n"
            "    d: {path: team-a/auth/approle, rate: 5, role: ci}\n    e: {path: 'database/creds/*', rate: 5}\n")


def test_lease_budgets_are_positive_whole_numbers() -> None:
    with pytest.raises(SpecError, match=r"secrets.database.roles.ro.lease_budget: Input should be greater"):
        parse_spec(BASE.replace('creation_statements: ["CREATE ROLE x"]}',
                                'creation_statements: ["CREATE ROLE x"], lease_budget: 0}'), source="mesh.yaml")
    with pytest.raises(SpecError, match=r"auth.jwt.roles.batch.lease_budget: Input should be a valid integer"):
        parse_spec(BASE.replace("bound_claims: {team: data}}", "bound_claims: {team: data}, lease_budget: '9'}"),
                   source="mesh.yaml")


# -- desired resources -----------------------------------------------------------------------------------

def test_a_quota_is_a_root_resource_with_every_field_managed() -> None:
    (r,) = quotas_of(spec_of("    logins: {path: auth/jwt, rate: 5}\n"))
    assert (r.namespace, r.path, r.name) == ("", "sys/quotas/rate-limit/logins", "logins")
    assert dict(r.body) == {"path": "auth/jwt", "rate": 5, "interval": 1, "block_interval": 0, "role": ""}
    assert r.depends_on == (ResourceKey("", "sys/auth/jwt"),)
    assert r.source == ("quotas", "rate_limit", "logins")


def test_a_quota_in_a_namespace_depends_on_the_namespace_and_its_mount() -> None:
    (r,) = quotas_of(spec_of("    ci: {path: team-a/auth/approle, rate: 5, role: ci}\n"))
    assert r.namespace == "" and r.body["role"] == "ci"
    assert r.depends_on == (ResourceKey("", "sys/namespaces/team-a"), ResourceKey("team-a", "sys/auth/approle"))


def test_a_global_quota_depends_on_nothing_and_a_secrets_path_on_its_engine() -> None:
    spec = spec_of("    g: {rate: 100}\n    creds: {path: 'database/creds/*', rate: 5}\n")
    deps = {r.name: r.depends_on for r in quotas_of(spec)}
    assert deps == {"g": (), "creds": (ResourceKey("", "sys/mounts/database"),)}


def test_lease_budgets_are_never_sent_to_openbao() -> None:
    text = (BASE.replace("bound_claims: {team: data}}", "bound_claims: {team: data}, lease_budget: 40}")
            .replace('creation_statements: ["CREATE ROLE x"]}', 'creation_statements: ["CREATE ROLE x"], '
                     'lease_budget: 20}'))
    desired = desired_resources(parse_spec(text), secrets={}, hash_key=KEY)
    roles = {r.kind: r.body for r in desired if r.kind in ("jwt_role", "db_role")}
    assert set(roles) == {"jwt_role", "db_role"}
    assert all("lease_budget" not in body for body in roles.values())


# -- reads -----------------------------------------------------------------------------------------------

ANSWER = {"data": {"block_interval": 0, "inheritable": False, "interval": 1, "name": "logins",
                   "path": "auth/jwt/", "rate": 5, "role": "", "type": "rate-limit"}}


def test_the_recorded_quota_answer_parses_to_the_request_spelling() -> None:
    assert observe.parse_rate_limit_quota(ANSWER) == {"path": "auth/jwt", "rate": 5, "interval": 1,
                                                      "block_interval": 0, "role": ""}
    assert observe.parse_rate_limit_quota({"data": {"path": "", "rate": 2.5, "interval": "2m",
                                                    "block_interval": "5m", "role": None}}) == \
        {"path": "", "rate": 2.5, "interval": 120, "block_interval": 300, "role": ""}


def server_with(quotas: dict[str, Any]) -> dict[Read, Any]:
    server: dict[Read, Any] = {Read("LIST", "", "sys/quotas/rate-limit"): {"data": {"keys": sorted(quotas)}}
                               if quotas else None}
    for name, answer in quotas.items():
        server[Read("GET", "", f"sys/quotas/rate-limit/{name}")] = answer
    return server


def observe_with(desired: list[Resource], server: dict[Read, Any]) -> ObservedState:
    responses: dict[Read, Any] = {}
    while todo := reads_needed(desired, responses):
        for read in todo:
            responses[read] = server.get(read)
    return observed_state(desired, responses)


def test_quotas_are_read_at_the_root_after_its_mounts_and_undeclared_ones_only_listed() -> None:
    desired = quotas_of(spec_of("    logins: {path: auth/jwt, rate: 5}\n"))
    first = reads_needed(desired, {})
    assert Read("LIST", "", "sys/quotas/rate-limit") not in first
    state = observe_with(desired, server_with({"logins": ANSWER, "stray": {"data": {}}}))
    found = {k.path: o for k, o in state.resources.items() if o.kind == "rate_limit_quota"}
    assert found["sys/quotas/rate-limit/logins"].body["path"] == "auth/jwt"
    assert found["sys/quotas/rate-limit/stray"].body == {}  # listed, not read


# -- the plan --------------------------------------------------------------------------------------------

def observed_quota(name: str, **body: Any) -> Observed:
    base = {"path": "auth/jwt", "rate": 5, "interval": 1, "block_interval": 0, "role": ""}
    return Observed("rate_limit_quota", "", f"sys/quotas/rate-limit/{name}", {**base, **body})


def mounts_present() -> list[Observed]:
    return [Observed("auth_mount", "", "sys/auth/jwt", {"type": "jwt", "config": {}}),
            Observed("secrets_mount", "", "sys/mounts/database", {"type": "database", "config": {}})]


def quota_actions(desired: list[Resource], found: list[Observed]) -> list[Any]:
    plan = plan_changes(desired, ObservedState.of([*mounts_present(), *found]))
    return [a for a in plan.actions if a.kind == "rate_limit_quota"]


def test_a_missing_quota_is_created_after_the_mount_and_with_one_post() -> None:
    desired = desired_resources(spec_of("    logins: {path: auth/jwt, rate: 5}\n"), secrets={}, hash_key=KEY)
    plan = plan_changes(desired, ObservedState())
    ids = [a.key.id for a in plan.actions]
    assert ids.index("sys/auth/jwt") < ids.index("sys/quotas/rate-limit/logins")
    (action,) = [a for a in plan.actions if a.kind == "rate_limit_quota"]
    assert isinstance(action, Create)
    (req,) = requests_for(action)
    assert (req.method, req.namespace, req.path) == ("POST", "", "sys/quotas/rate-limit/logins")
    assert dict(req.body or {}) == {"path": "auth/jwt", "rate": 5, "interval": 1, "block_interval": 0, "role": ""}


def test_a_quota_as_declared_is_a_noop_and_a_changed_rate_an_update() -> None:
    desired = quotas_of(spec_of("    logins: {path: auth/jwt, rate: 5}\n"))
    assert isinstance(quota_actions(desired, [observed_quota("logins")])[0], NoOp)
    (update,) = quota_actions(desired, [observed_quota("logins", rate=50, block_interval=60)])
    assert isinstance(update, Update)
    assert {(c.field, c.old, c.new) for c in update.changes} == {("rate", 50, 5), ("block_interval", 60, 0)}


def test_a_cleared_role_replaces_the_quota_since_openbao_cannot_clear_it() -> None:
    desired = quotas_of(spec_of("    logins: {path: auth/jwt, rate: 5}\n"))
    delete, create = quota_actions(desired, [observed_quota("logins", role="batch")])
    assert isinstance(delete, Delete) and delete.replace and not delete.prune
    assert "role changes from 'batch'" in delete.notes[0]
    assert isinstance(create, Create)


def test_a_quota_on_a_replaced_mount_is_created_again() -> None:
    desired = desired_resources(spec_of("    logins: {path: auth/jwt, rate: 5}\n"), secrets={}, hash_key=KEY)
    found = [Observed("auth_mount", "", "sys/auth/jwt", {"type": "approle", "config": {}}),
             observed_quota("logins")]
    plan = plan_changes(desired, ObservedState.of(found))
    assert [type(a).__name__ for a in plan.actions if a.kind == "rate_limit_quota"] == ["Create"]


def test_an_undeclared_quota_is_pruned_only_when_asked() -> None:
    desired = quotas_of(spec_of("    logins: {path: auth/jwt, rate: 5}\n"))
    plan = plan_changes(desired, ObservedState.of([observed_quota("logins"),
                                                   Observed("rate_limit_quota", "", "sys/quotas/rate-limit/old")]))
    (prune,) = [a for a in plan.actions if isinstance(a, Delete)]
    assert prune.prune and prune.key.path == "sys/quotas/rate-limit/old"
    assert plan.executable() == []
    assert [r.method for r in requests_for(prune)] == ["DELETE"]


# -- lint ------------------------------------------------------------------------------------------------

BUDGETED = (BASE.replace("bound_claims: {team: data}}", "bound_claims: {team: data}, lease_budget: 40}")
            .replace('creation_statements: ["CREATE ROLE x"]}', 'creation_statements: ["CREATE ROLE x"], '
                     'lease_budget: 20}'))


def unbraked(spec: ResourcesSpec) -> list[str]:
    return [w.where for w in lint(spec) if w.code == "budget-unbraked"]


def test_a_budget_without_a_quota_on_its_path_is_a_budget_without_a_brake() -> None:
    spec = parse_spec(BUDGETED)
    assert unbraked(spec) == ["auth.jwt.roles.batch.lease_budget", "secrets.database.roles.ro.lease_budget"]
    (w,) = [w for w in lint(spec) if w.where == "auth.jwt.roles.batch.lease_budget"]
    assert "no rate-limit quota covers auth/jwt/login" in w.message and "path: auth/jwt" in w.message


@pytest.mark.parametrize("quotas", [
    "    a: {path: auth/jwt, rate: 5}\n    b: {path: database, rate: 5}\n",
    "    a: {path: 'auth/jwt/*', rate: 5}\n    b: {path: 'database/creds/*', rate: 5}\n",
    "    a: {path: auth/jwt/login, rate: 5}\n    b: {path: database/creds/ro, rate: 5}\n",
    "    everything: {rate: 500}\n",
])
def test_a_quota_covering_the_path_brakes_the_budget(quotas: str) -> None:
    assert unbraked(spec_of(quotas, BUDGETED)) == []


def test_a_quota_elsewhere_does_not_brake_the_budget() -> None:
    spec = spec_of("    a: {path: auth/userpass, rate: 5}\n    b: {path: 'database/config/*', rate: 5}\n"
                   "    c: {path: team-a, rate: 5}\n", BUDGETED)
    assert len(unbraked(spec)) == 2


def test_a_role_without_a_budget_gets_no_budget_warning() -> None:
    assert unbraked(parse_spec(BASE)) == []
