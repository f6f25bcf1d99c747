"""The plan: desired resources + observed state -> ordered actions with a per-field diff."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultmesh.reconcile.observe import Observed, ObservedState
from vaultmesh.reconcile.plan import (
    Create,
    Delete,
    NoOp,
    Plan,
    UnsafePlan,
    Update,
    applied_hashes,
    plan_changes,
    requests_for,
)
from vaultmesh.reconcile.render import render_json, render_text
from vaultmesh.reconcile.resources import (
    PHASES,
    Resource,
    ResourceKey,
    Sensitive,
    desired_resources,
    secret_values,
)
from vaultmesh.spec.policy import fill_accessors
from vaultmesh.spec.resources import ResourcesSpec

KEY = b"mesh-hash-key-for-tests-32-bytes"
PASSWORD = "correct-horse-battery-staple"
SEED = "s3cr3t-seed-value"
ENV = {"PW": PASSWORD, "SEED": SEED}
JWT = {"type": "jwt", "config": {"jwks_url": "https://issuer.test/jwks"}}
READ = 'path "secret/data/x" {\n  capabilities = ["read"]\n}\n'
TEMPLATED = ('path "secret/data/jobs/{{identity.entity.aliases.auth/jwt/.metadata.job}}" {\n'
             '  capabilities = ["read"]\n}\n')


def build(data: Mapping[str, Any], env: Mapping[str, str] = ENV, **kw: Any) -> list[Resource]:
    spec = ResourcesSpec.model_validate(data)
    return desired_resources(spec, secrets=secret_values(spec, env=env, read_file=lambda p: ""), hash_key=KEY,
                             **kw)


def accessor(mount: str) -> str:
    return "auth_" + mount.replace("/", "_") + "_0a1b2c3d"


def after_apply(desired: Iterable[Resource], *, extra: Iterable[Observed] = ()) -> ObservedState:
    """What the server shows once ``desired`` was applied: no write-only fields, accessors filled in, and
    fields nobody declared set to server defaults."""
    desired = list(desired)
    accessors = {(f"{r.namespace}/{r.mount}" if r.namespace else r.mount): accessor(r.mount)
                 for r in desired if r.kind == "auth_mount"}
    found = []
    for r in desired:
        body = {k: copy.deepcopy(v) for k, v in r.body.items() if k not in r.write_only_fields}
        if r.kind == "policy":
            body["policy"] = fill_accessors(body["policy"], accessors, namespace=r.namespace).text
        elif r.kind in ("auth_mount", "secrets_mount"):
            body["config"] = {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False,
                              "listing_visibility": "hidden", **body.get("config", {})}
            body.setdefault("description", "")
        elif r.kind == "pki_root":
            body = {"issuer_name": r.body["issuer_name"]}
        else:
            body = {"num_uses": 0, "token_explicit_max_ttl": 0, **body}
        found.append(Observed(r.kind, r.namespace, r.path, body))
    return ObservedState.of([*found, *extra], accessors)


def replan(desired: list[Resource], observed: ObservedState | None = None) -> Plan:
    """Apply ``desired`` onto an empty mesh, then plan again against ``observed`` (default: the result)."""
    first = plan_changes(desired, ObservedState())
    return plan_changes(desired, observed or after_apply(desired), previous_hashes=applied_hashes(first))


def only(plan: Plan, path: str) -> Any:
    [action] = [a for a in plan.actions if a.key.path == path]
    return action


PLATFORM = {
    "policies": {"batch": TEMPLATED, "web": READ},
    "auth": {"jwt": {**JWT, "tune": {"max_lease_ttl": "1h"}, "roles": {
        "batch": {"bound_audiences": ["vaultmesh"], "bound_claims": {"team": "data"},
                  "claim_mappings": {"job": "job"}, "token_policies": ["batch"]},
        "web": {"bound_audiences": ["vaultmesh", "web"], "bound_claims": {"team": "web"},
                "token_policies": ["web", "batch"]}}}},
    "secrets": {
        "secret": {"type": "kv", "seed": {"jobs/nightly": {"api_token": {"from_env": "SEED"}}}},
        "database": {"type": "database",
                     "connections": {"pg": {"connection_url": "postgresql://{{username}}:{{password}}@h/db",
                                            "username": "postgres", "password": {"from_env": "PW"}}},
                     "roles": {"jobs-ro": {"db_name": "pg", "creation_statements": ["CREATE ROLE x"],
                                           "default_ttl": "5m"}}}},
    "namespaces": {"team-a": {"policies": {"reader": READ},
                              "auth": {"approle": {"type": "approle", "roles": {"ci": {"token_policies": ["reader"]}}}},
                              "namespaces": {"inner": {"secrets": {"kv": {"type": "kv"}}}}}},
}


# -- creating --------------------------------------------------------------------------------------------

def test_an_empty_mesh_gets_everything_created() -> None:
    plan = plan_changes(build(PLATFORM), ObservedState())
    assert {type(a) for a in plan.actions} == {Create}


def test_creation_follows_dependency_order() -> None:
    plan = plan_changes(build(PLATFORM), ObservedState())
    kinds = [a.kind for a in plan.actions]
    order = ["namespace", "auth_mount", "policy", "db_connection", "jwt_role", "kv_secret"]
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)


def test_a_parent_namespace_is_created_before_its_child() -> None:
    plan = plan_changes(build(PLATFORM), ObservedState())
    ids = [a.key.id for a in plan.actions]
    assert ids.index("sys/namespaces/team-a") < ids.index("team-a/sys/namespaces/inner")
    assert ids.index("team-a/sys/namespaces/inner") < ids.index("team-a/inner/sys/mounts/kv")


def test_roles_get_the_limits_as_default_ttls() -> None:
    role = next(r for r in build(PLATFORM) if r.path == "auth/jwt/role/batch")
    assert (role.body["token_ttl"], role.body["token_max_ttl"]) == (900, 3600)


def test_the_file_limits_replace_the_default_ttls() -> None:
    resources = build({**PLATFORM, "limits": {"token_ttl": "5m", "token_max_ttl": "20m"}})
    role = next(r for r in resources if r.path == "auth/jwt/role/batch")
    assert (role.body["token_ttl"], role.body["token_max_ttl"]) == (300, 1200)


def test_database_allowed_roles_default_to_the_roles_using_the_connection() -> None:
    conn = next(r for r in build(PLATFORM) if r.kind == "db_connection")
    assert conn.body["allowed_roles"] == ["jobs-ro"]


def test_rotate_root_is_a_step_after_creating_the_connection() -> None:
    data = copy.deepcopy(PLATFORM)
    data["secrets"]["database"]["connections"]["pg"]["rotate_root"] = True
    create = only(plan_changes(build(data), ObservedState()), "database/config/pg")
    assert create.resource.after_create == ("database/rotate-root/pg",)


# -- re-planning -----------------------------------------------------------------------------------------

def test_replanning_right_after_apply_changes_nothing() -> None:
    plan = replan(build(PLATFORM))
    assert {type(a) for a in plan.actions} == {NoOp}
    assert not plan.has_changes


def test_a_ttl_changed_on_the_server_is_an_update_naming_the_field() -> None:
    desired = build(PLATFORM)
    observed = after_apply(desired)
    role = observed.resources[ResourceKey("", "auth/jwt/role/batch")]
    drifted = ObservedState.of([*observed.resources.values(),
                                Observed(role.kind, "", role.path, {**role.body, "token_ttl": 1800})],
                               observed.accessors)
    update = only(replan(desired, drifted), "auth/jwt/role/batch")
    assert isinstance(update, Update)
    assert [(c.field, c.old, c.new) for c in update.changes] == [("token_ttl", 1800, 900)]


def test_fields_the_file_does_not_declare_are_not_compared() -> None:
    desired = build(PLATFORM)
    observed = after_apply(desired)
    role = observed.resources[ResourceKey("", "auth/jwt/role/web")]
    drifted = ObservedState.of([*observed.resources.values(),
                                Observed(role.kind, "", role.path, {**role.body, "groups_claim": "groups"})],
                               observed.accessors)
    assert isinstance(only(replan(desired, drifted), "auth/jwt/role/web"), NoOp)


def test_order_of_policies_and_audiences_is_not_a_change() -> None:
    desired = build(PLATFORM)
    observed = after_apply(desired)
    role = observed.resources[ResourceKey("", "auth/jwt/role/web")]
    shuffled = {**role.body, "token_policies": ["batch", "web"], "bound_audiences": ["web", "vaultmesh"]}
    drifted = ObservedState.of([*observed.resources.values(), Observed(role.kind, "", role.path, shuffled)],
                               observed.accessors)
    assert isinstance(only(replan(desired, drifted), "auth/jwt/role/web"), NoOp)


def test_empty_values_from_the_server_match_unset_ones() -> None:
    desired = build(PLATFORM)
    observed = after_apply(desired)
    role = observed.resources[ResourceKey("", "auth/jwt/role/web")]
    nulls = {**role.body, "bound_subject": None, "claim_mappings": None}
    drifted = ObservedState.of([*observed.resources.values(), Observed(role.kind, "", role.path, nulls)],
                               observed.accessors)
    assert isinstance(only(replan(desired, drifted), "auth/jwt/role/web"), NoOp)


def test_a_mount_tune_change_is_an_update_of_that_config_key() -> None:
    desired = build(PLATFORM)
    observed = after_apply(desired)
    mount = observed.resources[ResourceKey("", "sys/auth/jwt")]
    tuned = {**mount.body, "config": {**mount.body["config"], "max_lease_ttl": 7200}}
    drifted = ObservedState.of([*observed.resources.values(), Observed(mount.kind, "", mount.path, tuned)],
                               observed.accessors)
    update = only(replan(desired, drifted), "sys/auth/jwt")
    assert [(c.field, c.old, c.new) for c in update.changes] == [("config.max_lease_ttl", 7200, 3600)]


def test_a_mount_whose_type_changed_is_deleted_then_created() -> None:
    desired = build(PLATFORM)
    observed = after_apply(desired)
    mount = observed.resources[ResourceKey("", "sys/mounts/secret")]
    other = ObservedState.of([*observed.resources.values(),
                              Observed(mount.kind, "", mount.path, {**mount.body, "type": "transit"})],
                             observed.accessors)
    plan = replan(desired, other)
    actions = [a for a in plan.actions if a.key.path == "sys/mounts/secret"]
    assert [type(a) for a in actions] == [Delete, Create]
    assert actions[0].replace and not actions[0].prune


# -- policies and accessors ------------------------------------------------------------------------------

def test_a_templated_policy_gets_the_accessor_of_an_existing_mount() -> None:
    desired = build(PLATFORM)
    observed = ObservedState.of([], {"jwt": "auth_jwt_feedbeef"})
    create = only(plan_changes(desired, observed), "sys/policies/acl/batch")
    assert "auth_jwt_feedbeef.metadata.job" in create.resource.body["policy"]
    assert not create.resource.pending_accessors


def test_a_templated_policy_waits_for_the_accessor_of_a_mount_created_by_the_same_apply() -> None:
    create = only(plan_changes(build(PLATFORM), ObservedState()), "sys/policies/acl/batch")
    assert create.resource.pending_accessors == frozenset({"jwt"})
    assert "auth/jwt/.metadata.job" in create.resource.body["policy"]


def test_policy_text_differences_are_an_update_of_the_policy_field() -> None:
    desired = build(PLATFORM)
    observed = after_apply(desired)
    pol = observed.resources[ResourceKey("", "sys/policies/acl/web")]
    edited = ObservedState.of([*observed.resources.values(),
                               Observed("policy", "", pol.path, {"policy": READ.replace("read", "list")})],
                              observed.accessors)
    update = only(replan(desired, edited), "sys/policies/acl/web")
    assert [c.field for c in update.changes] == ["policy"]


# -- unmanaged and built-in objects ----------------------------------------------------------------------

def test_an_unmanaged_role_is_a_prune_delete() -> None:
    desired = build(PLATFORM)
    extra = Observed("jwt_role", "", "auth/jwt/role/legacy")
    delete = only(replan(desired, after_apply(desired, extra=[extra])), "auth/jwt/role/legacy")
    assert isinstance(delete, Delete) and delete.prune


@pytest.mark.parametrize(("kind", "ns", "path"), [
    ("auth_mount", "", "sys/auth/token"), ("auth_mount", "", "sys/auth/userpass"),
    ("auth_mount", "team-a", "sys/auth/token"), ("secrets_mount", "", "sys/mounts/sys"),
    ("secrets_mount", "team-a", "sys/mounts/identity"), ("secrets_mount", "", "sys/mounts/cubbyhole"),
    ("policy", "", "sys/policies/acl/default"), ("policy", "", "sys/policies/acl/root"),
    ("policy", "", "sys/policies/acl/vaultmesh-admin"), ("policy", "team-a", "sys/policies/acl/default"),
    ("secrets_mount", "", "sys/mounts/vaultmesh-canary"), ("secrets_mount", "", "sys/mounts/vaultmesh-transit"),
    ("transit_key", "", "vaultmesh-transit/keys/canary"),
])
def test_built_in_and_bootstrap_objects_are_never_pruned(kind: str, ns: str, path: str) -> None:
    desired = build(PLATFORM)
    plan = replan(desired, after_apply(desired, extra=[Observed(kind, ns, path)]))
    assert ResourceKey(ns, path) not in {a.key for a in plan.actions}


@pytest.mark.parametrize(("kind", "path"), [
    ("auth_mount", "sys/auth/vaultmesh-bench-jwt"), ("secrets_mount", "sys/mounts/vaultmesh-bench-kv"),
    ("secrets_mount", "sys/mounts/vaultmesh-bench-db"), ("secrets_mount", "sys/mounts/vaultmesh-bench-chaos"),
    ("policy", "sys/policies/acl/vaultmesh-bench"),
])
def test_the_benchs_objects_at_the_root_are_never_offered_for_pruning(kind: str, path: str) -> None:
    desired = build(PLATFORM)
    plan = replan(desired, after_apply(desired, extra=[Observed(kind, "", path)]))
    assert ResourceKey("", path) not in {a.key for a in plan.actions}
    # in a namespace the name is nothing special
    plan = replan(desired, after_apply(desired, extra=[Observed(kind, "team-a", path)]))
    assert only(plan, path).prune


def test_applying_another_file_keeps_the_benchs_records_and_forgets_the_rest() -> None:
    desired = build(PLATFORM)
    plan = replan(desired, after_apply(desired))
    previous = {"vaultmesh-bench-db/config/pg": {"password": "d1"}, "gone/config/pg": {"password": "d2"}}
    assert applied_hashes(plan, previous)["vaultmesh-bench-db/config/pg"] == {"password": "d1"}
    assert "gone/config/pg" not in applied_hashes(plan, previous)


def test_a_userpass_mount_inside_a_namespace_is_not_the_bootstrap_one() -> None:
    desired = build(PLATFORM)
    plan = replan(desired, after_apply(desired, extra=[Observed("auth_mount", "team-a", "sys/auth/userpass")]))
    assert only(plan, "sys/auth/userpass").prune


@pytest.mark.parametrize("path", ["sys/mounts/vaultmesh-canary", "sys/mounts/vaultmesh-transit"])
def test_a_canary_mount_inside_a_namespace_is_not_the_bootstrap_one(path: str) -> None:
    desired = build(PLATFORM)
    plan = replan(desired, after_apply(desired, extra=[Observed("secrets_mount", "team-a", path)]))
    assert only(plan, path).prune


def test_unmanaged_kv_data_and_configs_are_never_offered_for_deletion() -> None:
    desired = build(PLATFORM)
    extra = [Observed("kv_secret", "", "secret/data/other"), Observed("jwt_config", "team-a", "auth/x/config")]
    plan = replan(desired, after_apply(desired, extra=extra))
    assert not [a for a in plan.actions if isinstance(a, Delete)]


def test_deletes_come_first_children_before_parents() -> None:
    desired = build(PLATFORM)
    extra = [Observed("namespace", "", "sys/namespaces/old"), Observed("policy", "", "sys/policies/acl/old"),
             Observed("jwt_role", "", "auth/jwt/role/old"), Observed("auth_mount", "", "sys/auth/github"),
             Observed("namespace", "team-a", "sys/namespaces/old")]
    plan = replan(desired, after_apply(desired, extra=extra))
    deletes = [a.key.id for a in plan.actions if isinstance(a, Delete)]
    assert deletes == ["auth/jwt/role/old", "sys/policies/acl/old", "sys/auth/github",
                       "team-a/sys/namespaces/old", "sys/namespaces/old"]
    assert all(isinstance(a, Delete) for a in plan.actions[:len(deletes)])


def test_unmanaged_deletes_run_only_with_prune() -> None:
    desired = build(PLATFORM)
    plan = replan(desired, after_apply(desired, extra=[Observed("policy", "", "sys/policies/acl/old")]))
    assert plan.executable(prune=False) == []
    assert [a.key.id for a in plan.executable(prune=True)] == ["sys/policies/acl/old"]


# -- secrets ---------------------------------------------------------------------------------------------

def test_no_secret_value_appears_in_any_rendering_of_any_plan() -> None:
    desired = build(PLATFORM)
    for plan in (plan_changes(desired, ObservedState()), replan(desired, after_apply(desired))):
        for text in (render_text(plan, verbose=True), render_json(plan), repr(plan)):
            assert PASSWORD not in text and SEED not in text


def test_a_sensitive_field_shows_as_sensitive_with_a_short_hash() -> None:
    create = only(plan_changes(build(PLATFORM), ObservedState()), "database/config/pg")
    [change] = [c for c in create.changes if c.field == "password"]
    assert change.sensitive
    assert change.new.startswith("(sensitive) ") and len(change.new.split()[1]) == 8


def test_the_hash_is_keyed_so_the_same_value_hashes_differently_per_mesh() -> None:
    spec = ResourcesSpec.model_validate(PLATFORM)
    values = secret_values(spec, env=ENV, read_file=str)
    a = desired_resources(spec, secrets=values, hash_key=b"a" * 32)
    b = desired_resources(spec, secrets=values, hash_key=b"b" * 32)
    digest = {r.key: r.digests for r in a if r.kind == "db_connection"}
    assert digest != {r.key: r.digests for r in b if r.kind == "db_connection"}


def test_a_secret_changed_since_the_last_apply_is_written_again() -> None:
    desired = build(PLATFORM)
    changed = build(PLATFORM, env={**ENV, "PW": "new-password"})
    plan = plan_changes(changed, after_apply(desired),
                        previous_hashes=applied_hashes(plan_changes(desired, ObservedState())))
    update = only(plan, "database/config/pg")
    assert isinstance(update, Update)
    assert [c.field for c in update.changes] == ["password"]
    assert update.changes[0].old != update.changes[0].new


def test_a_secret_with_no_recorded_hash_is_written_again() -> None:
    desired = build(PLATFORM)
    plan = plan_changes(desired, after_apply(desired), previous_hashes={})
    update = only(plan, "secret/data/jobs/nightly")
    assert [(c.field, c.old) for c in update.changes] == [("api_token", "(sensitive, not recorded)")]


def test_an_unchanged_secret_is_not_written() -> None:
    assert isinstance(only(replan(build(PLATFORM)), "secret/data/jobs/nightly"), NoOp)


def test_a_missing_optional_secret_leaves_the_field_out() -> None:
    data = copy.deepcopy(PLATFORM)
    data["secrets"]["database"]["connections"]["pg"]["password"] = {"from_env": "NOPE", "optional": True}
    conn = next(r for r in build(data) if r.kind == "db_connection")
    assert "password" not in conn.body


def test_a_rotated_root_password_is_not_sent_again_when_the_file_changes() -> None:
    data = copy.deepcopy(PLATFORM)
    data["secrets"]["database"]["connections"]["pg"]["rotate_root"] = True
    desired = build(data)
    previous = applied_hashes(plan_changes(desired, ObservedState()))
    action = only(plan_changes(build(data, env={**ENV, "PW": "other"}), after_apply(desired),
                               previous_hashes=previous), "database/config/pg")
    assert isinstance(action, NoOp)
    assert "only sent at creation" in action.notes[0]


def test_secret_objects_never_show_their_value() -> None:
    secret = Sensitive("env:PW", "ab" * 32, PASSWORD)
    assert PASSWORD not in repr(secret) + str(secret)
    assert secret.reveal() == PASSWORD


# -- checksum and safety ---------------------------------------------------------------------------------

def test_the_same_inputs_give_the_same_checksum() -> None:
    assert plan_changes(build(PLATFORM), ObservedState()).checksum() == \
        plan_changes(build(PLATFORM), ObservedState()).checksum()


def test_a_changed_secret_changes_the_checksum() -> None:
    a = plan_changes(build(PLATFORM), ObservedState()).checksum()
    b = plan_changes(build(PLATFORM, env={**ENV, "SEED": "other"}), ObservedState()).checksum()
    assert a != b


def test_prune_changes_the_checksum_only_when_there_is_something_to_prune() -> None:
    desired = build(PLATFORM)
    clean = replan(desired)
    assert clean.checksum(prune=True) == clean.checksum(prune=False)
    dirty = replan(desired, after_apply(desired, extra=[Observed("policy", "", "sys/policies/acl/old")]))
    assert dirty.checksum(prune=True) != dirty.checksum(prune=False)


def test_apply_names_a_prune_mismatch_instead_of_calling_it_a_change() -> None:
    from vaultmesh.reconcile.apply import checksum_refusal

    desired = build(PLATFORM)
    dirty = replan(desired, after_apply(desired, extra=[Observed("policy", "", "sys/policies/acl/old")]))
    reviewed = dirty.checksum(prune=False)
    assert checksum_refusal(dirty, reviewed, prune=False) is None
    assert checksum_refusal(dirty, None, prune=True) is None
    mismatch = checksum_refusal(dirty, reviewed, prune=True)
    assert mismatch is not None and str(mismatch).startswith(
        "the plan was reviewed without --prune and is applied with it")
    changed = checksum_refusal(dirty, "0" * 64, prune=True)
    assert changed is not None and "the mesh or the file changed" in str(changed)


def test_a_plan_deleting_more_than_the_threshold_needs_force() -> None:
    desired = build(PLATFORM)
    extra = [Observed("policy", "", f"sys/policies/acl/old{i}") for i in range(4)]
    plan = replan(desired, after_apply(desired, extra=extra))
    plan.raise_if_unsafe(prune=False)
    with pytest.raises(UnsafePlan, match="deletes 4 objects"):
        plan.raise_if_unsafe(prune=True)
    plan.raise_if_unsafe(prune=True, force=True)
    plan.raise_if_unsafe(prune=True, max_deletes=4)


def test_deleting_a_namespace_or_secrets_engine_always_needs_force() -> None:
    desired = build(PLATFORM)
    plan = replan(desired, after_apply(desired, extra=[Observed("secrets_mount", "", "sys/mounts/old")]))
    with pytest.raises(UnsafePlan, match="everything stored in them"):
        plan.raise_if_unsafe(prune=True)


def test_applied_hashes_forget_objects_no_longer_in_the_file() -> None:
    desired = build(PLATFORM)
    previous = {**applied_hashes(plan_changes(desired, ObservedState())), "secret/data/gone": {"k": "00"}}
    assert "secret/data/gone" not in applied_hashes(replan(desired), previous)
    assert set(applied_hashes(replan(desired), previous)) == {"database/config/pg", "secret/data/jobs/nightly"}


# -- properties ------------------------------------------------------------------------------------------

NAMES = st.sampled_from(["alpha", "beta", "gamma"])
HCL = st.sampled_from([READ, 'path "kv/+/x" { capabilities = ["list"] }', 'path "a" { capabilities = ["deny"] }'])
TTL = st.sampled_from([None, "5m", 600, "1h"])


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@st.composite
def scopes(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    has_jwt = draw(st.booleans())
    policies: dict[str, Any] = draw(st.dictionaries(NAMES, HCL, max_size=3))
    if has_jwt and draw(st.booleans()):
        policies["templated"] = TEMPLATED
    names = sorted(policies)
    pols = st.lists(st.sampled_from(names), unique=True) if names else st.just([])
    auth: dict[str, Any] = {}
    if has_jwt:
        auth["jwt"] = {**JWT, "tune": _clean({"max_lease_ttl": draw(TTL)}), "roles": {
            n: _clean({"bound_audiences": draw(st.lists(st.sampled_from(["a", "b"]), min_size=1, unique=True)),
                       "bound_claims": {"team": draw(st.sampled_from(["x", "y"]))},
                       "claim_mappings": {"job": "job"}, "token_policies": draw(pols), "token_ttl": draw(TTL),
                       "token_max_ttl": "1h"})
            for n in draw(st.sets(NAMES, max_size=2))}}
    if draw(st.booleans()):
        auth["ci/approle"] = {"type": "approle", "roles": {
            n: _clean({"token_policies": draw(pols), "secret_id_ttl": draw(TTL)})
            for n in draw(st.sets(NAMES, max_size=2))}}
    secrets: dict[str, Any] = {}
    if draw(st.booleans()):
        secrets["secret"] = {"type": "kv", "version": draw(st.sampled_from([1, 2])), "seed": {
            p: {"k": {"from_env": "SEED"}} for p in draw(st.sets(st.sampled_from(["a", "b/c"]), max_size=2))}}
    if draw(st.booleans()):
        secrets["db"] = {"type": "database", "connections": {"pg": {
            "connection_url": "postgresql://{{username}}:{{password}}@h/db", "password": {"from_env": "PW"},
            "rotate_root": draw(st.booleans())}},
            "roles": {"ro": _clean({"db_name": "pg", "creation_statements": ["CREATE ROLE x"],
                                    "default_ttl": draw(TTL)})}}
    if draw(st.booleans()):
        secrets["pki"] = {"type": "pki", "root": {"common_name": "mesh"},
                          "roles": {"svc": {"allowed_domains": ["svc"], "max_ttl": "1h"}}}
    if draw(st.booleans()):
        secrets["transit"] = {"type": "transit", "keys": {"k": {"exportable": draw(st.booleans())}}}
    children = {}
    if depth < 2:
        children = draw(st.dictionaries(st.sampled_from(["ns1", "ns2"]), scopes(depth + 1), max_size=2))
    return {"policies": policies, "auth": auth, "secrets": secrets, "namespaces": children}


@settings(max_examples=60, deadline=None)
@given(scopes())
def test_property_replanning_after_apply_is_all_no_op(data: dict[str, Any]) -> None:
    plan = replan(build(data))
    assert [a for a in plan.actions if not isinstance(a, NoOp)] == []


@settings(max_examples=60, deadline=None)
@given(scopes(), st.data())
def test_property_every_action_comes_after_what_it_depends_on(data: dict[str, Any], draw: st.DataObject) -> None:
    desired = build(data)
    applied = draw.draw(st.lists(st.sampled_from(desired), unique_by=lambda r: r.key) if desired
                        else st.just([]))
    extra = draw.draw(st.lists(st.sampled_from([
        Observed("namespace", "", "sys/namespaces/old"), Observed("policy", "ns1", "sys/policies/acl/old"),
        Observed("auth_mount", "", "sys/auth/old"), Observed("jwt_role", "", "auth/jwt/role/old"),
        Observed("secrets_mount", "ns1", "sys/mounts/old")]), unique_by=lambda o: o.key))
    plan = plan_changes(desired, after_apply(applied, extra=extra))
    position = {a.key: i for i, a in enumerate(plan.actions) if not isinstance(a, Delete)}
    deletes = [a for a in plan.actions if isinstance(a, Delete)]
    assert plan.actions[:len(deletes)] == tuple(deletes), "deletes come first"
    phases = [PHASES[a.kind] for a in deletes]
    assert phases == sorted(phases, reverse=True), "deletes go in reverse dependency order"
    for i, a in enumerate(plan.actions):
        if isinstance(a, Create | Update | NoOp):
            for dep in a.resource.depends_on:
                assert position[dep] < i, f"{a.key} before its dependency {dep}"
    assert {a.key for a in plan.actions if not isinstance(a, Delete)} == {r.key for r in desired}


# -- requests the apply edge sends -----------------------------------------------------------------------

def test_creating_a_mount_sends_its_tune_in_the_enable_call() -> None:
    [req] = requests_for(only(plan_changes(build(PLATFORM), ObservedState()), "sys/auth/jwt"))
    assert (req.method, req.path) == ("POST", "sys/auth/jwt")
    assert req.body == {"type": "jwt", "config": {"max_lease_ttl": "3600s"}}


def test_updating_a_mount_tunes_it() -> None:
    desired = build(PLATFORM)
    observed = after_apply(desired)
    mount = observed.resources[ResourceKey("", "sys/auth/jwt")]
    tuned = {**mount.body, "config": {**mount.body["config"], "max_lease_ttl": 7200}}
    drifted = ObservedState.of([*observed.resources.values(), Observed(mount.kind, "", mount.path, tuned)],
                               observed.accessors)
    [req] = requests_for(only(replan(desired, drifted), "sys/auth/jwt"))
    assert (req.path, req.body) == ("sys/auth/jwt/tune", {"max_lease_ttl": "3600s"})


def test_a_waiting_policy_is_filled_with_the_accessor_at_apply_time() -> None:
    create = only(plan_changes(build(PLATFORM), ObservedState()), "sys/policies/acl/batch")
    [req] = requests_for(create, accessors={"jwt": "auth_jwt_12345678"})
    assert "aliases.auth_jwt_12345678.metadata.job" in req.body["policy"]
    with pytest.raises(ValueError, match="accessor of jwt"):
        requests_for(create, accessors={})


def test_creating_a_connection_sends_the_password_then_rotates_root() -> None:
    data = copy.deepcopy(PLATFORM)
    data["secrets"]["database"]["connections"]["pg"]["rotate_root"] = True
    reqs = requests_for(only(plan_changes(build(data), ObservedState()), "database/config/pg"))
    assert [r.path for r in reqs] == ["database/config/pg", "database/rotate-root/pg"]
    assert reqs[0].body["password"] == PASSWORD
    assert PASSWORD not in repr(reqs)


def test_updating_a_rotated_connection_never_sends_the_password() -> None:
    data = copy.deepcopy(PLATFORM)
    data["secrets"]["database"]["connections"]["pg"]["rotate_root"] = True
    desired = build(data)
    observed = after_apply(desired)
    conn = observed.resources[ResourceKey("", "database/config/pg")]
    drifted = ObservedState.of([*observed.resources.values(),
                                Observed(conn.kind, "", conn.path, {**conn.body, "username": "other"})])
    [req] = requests_for(only(replan(desired, drifted), "database/config/pg"))
    assert "password" not in req.body


def test_a_kv_v2_seed_is_written_under_data() -> None:
    [req] = requests_for(only(plan_changes(build(PLATFORM), ObservedState()), "secret/data/jobs/nightly"))
    assert req.body == {"data": {"api_token": SEED}}


def test_a_transit_key_is_created_then_configured_and_allowed_deletion_before_delete() -> None:
    data = {"secrets": {"transit": {"type": "transit", "keys": {"k": {"deletion_allowed": False,
                                                                       "exportable": True}}}}}
    reqs = requests_for(only(plan_changes(build(data), ObservedState()), "transit/keys/k"))
    assert [(r.path, r.body) for r in reqs] == [("transit/keys/k", {"type": "aes256-gcm96", "exportable": True}),
                                                ("transit/keys/k/config", {"deletion_allowed": False})]
    delete = Delete(kind="transit_key", key=ResourceKey("", "transit/keys/old"),
                    observed=Observed("transit_key", "", "transit/keys/old"), prune=True)
    assert [(r.method, r.path) for r in requests_for(delete)] == [("POST", "transit/keys/old/config"),
                                                                  ("DELETE", "transit/keys/old")]


def test_namespace_metadata_is_patched_and_removed_keys_are_cleared() -> None:
    data = {"namespaces": {"team": {"custom_metadata": {"owner": "me"}}}}
    desired = build(data)
    stale = Observed("namespace", "", "sys/namespaces/team", {"custom_metadata": {"owner": "x", "old": "y"}})
    [req] = requests_for(only(plan_changes(desired, ObservedState.of([stale])), "sys/namespaces/team"))
    assert (req.method, req.body) == ("PATCH", {"custom_metadata": {"owner": "me", "old": None}})


def test_a_no_op_sends_nothing() -> None:
    assert all(requests_for(a) == [] for a in replan(build(PLATFORM)).actions)
