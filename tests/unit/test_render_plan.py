"""Rendering a plan: text for review, JSON for machines, a one-line summary."""

from __future__ import annotations

import json

from rich.text import Text

from vaultmesh.reconcile.observe import Observed, ObservedState
from vaultmesh.reconcile.plan import Plan, applied_hashes, plan_changes
from vaultmesh.reconcile.render import render_json, render_text, summary
from vaultmesh.reconcile.resources import ResourceKey, desired_resources, secret_values
from vaultmesh.spec.resources import ResourcesSpec

KEY = b"k" * 32
PASSWORD = "p4ssw0rd-never-shown"
READ = 'path "secret/data/x" {\n  capabilities = ["read"]\n}\n'
SPEC = {
    "policies": {"reader": READ},
    "auth": {"approle": {"type": "approle", "roles": {"ci": {"token_policies": ["reader"], "token_ttl": "10m"}}}},
    "secrets": {"db": {"type": "database", "connections": {"pg": {
        "connection_url": "postgresql://{{username}}:{{password}}@h/db", "password": {"from_env": "PW"}}}}},
    "namespaces": {"team-a": {}},
}


def desired() -> list:
    spec = ResourcesSpec.model_validate(SPEC)
    return desired_resources(spec, secrets=secret_values(spec, env={"PW": PASSWORD}, read_file=str), hash_key=KEY)


def fresh_plan() -> Plan:
    return plan_changes(desired(), ObservedState())


def drifted_plan() -> Plan:
    """Applied, then: the role's TTL edited on the server, the policy edited, a stray policy added."""
    first = fresh_plan()
    observed = []
    for a in first.actions:
        body = {k: v for k, v in a.resource.body.items() if k not in a.resource.write_only_fields}
        if a.key.path == "auth/approle/role/ci":
            body["token_ttl"] = 1800
        if a.key.path == "sys/policies/acl/reader":
            body["policy"] = READ.replace('"read"', '"read", "list"')
        observed.append(Observed(a.kind, a.key.namespace, a.key.path, body))
    observed.append(Observed("policy", "", "sys/policies/acl/stray"))
    return plan_changes(desired(), ObservedState.of(observed), previous_hashes=applied_hashes(first))


def test_each_action_starts_with_its_marker() -> None:
    text = render_text(drifted_plan(), prune=True)
    assert "\n~ approle role  auth/approle/role/ci\n" in text
    assert "\n- policy  sys/policies/acl/stray  (unmanaged)\n" in text
    assert "\n+ namespace  sys/namespaces/team-a\n" in render_text(fresh_plan())


def test_an_update_shows_old_and_new_value_with_a_readable_duration() -> None:
    assert "    ~ token_ttl: 1800 (30m) -> 600 (10m)\n" in render_text(drifted_plan())


def test_a_policy_change_is_shown_as_a_line_diff() -> None:
    text = render_text(drifted_plan())
    assert '        -   capabilities = ["read", "list"]\n' in text
    assert '        +   capabilities = ["read"]\n' in text


def test_namespaced_objects_show_their_full_path() -> None:
    plan = plan_changes(desired(), ObservedState.of([Observed("policy", "team-a", "sys/policies/acl/old")]))
    assert "- policy  team-a/sys/policies/acl/old  (unmanaged)" in render_text(plan)


def test_unchanged_objects_are_hidden_unless_verbose() -> None:
    plan = drifted_plan()
    assert "secrets engine  sys/mounts/db" not in render_text(plan)
    assert "= secrets engine  sys/mounts/db" in render_text(plan, verbose=True)


def test_a_sensitive_value_is_shown_as_sensitive_and_never_in_clear() -> None:
    text = render_text(fresh_plan())
    assert "    + password = (sensitive) " in text
    assert PASSWORD not in text and PASSWORD not in render_json(fresh_plan())


def test_the_summary_counts_each_kind_of_action() -> None:
    assert summary(drifted_plan()) == ("Plan: 0 to create, 2 to update, 0 to delete, 1 unmanaged (kept; "
                                       "--prune deletes them), 4 unchanged.")
    assert summary(drifted_plan(), prune=True) == "Plan: 0 to create, 2 to update, 1 to delete, 4 unchanged."


def test_the_text_carries_the_checksum_apply_will_verify() -> None:
    plan = drifted_plan()
    assert f"Checksum: {plan.checksum(prune=True)}" in render_text(plan, prune=True)


def test_a_plan_without_changes_says_so() -> None:
    first = fresh_plan()
    observed = [Observed(a.kind, a.key.namespace, a.key.path,
                         {k: v for k, v in a.resource.body.items() if k not in a.resource.write_only_fields})
                for a in first.actions]
    plan = plan_changes(desired(), ObservedState.of(observed), previous_hashes=applied_hashes(first))
    assert render_text(plan).endswith("No changes: the mesh matches the file.\n")


def test_the_text_prints_unchanged_through_rich_markup() -> None:
    text = render_text(drifted_plan(), prune=True, verbose=True)
    assert Text.from_markup(text).plain == text


def test_boolean_lists_do_not_look_like_rich_tags() -> None:
    spec = ResourcesSpec.model_validate({"secrets": {"t": {"type": "transit", "keys": {"k": {"exportable": True}}}}})
    plan = plan_changes(desired_resources(spec, secrets={}, hash_key=KEY), ObservedState())
    text = render_text(plan)
    assert Text.from_markup(text).plain == text


def test_json_has_the_checksum_summary_and_every_action() -> None:
    plan = drifted_plan()
    doc = json.loads(render_json(plan, prune=True))
    assert doc["checksum"] == plan.checksum(prune=True)
    assert doc["summary"] == {"create": 0, "update": 2, "delete": 0, "prune": 1, "noop": 4}
    ci = next(a for a in doc["actions"] if a["path"] == "auth/approle/role/ci")
    assert ci["op"] == "update"
    assert ci["changes"] == [{"field": "token_ttl", "old": 1800, "new": 600, "sensitive": False}]


def test_json_marks_unmanaged_deletes() -> None:
    doc = json.loads(render_json(drifted_plan()))
    [stray] = [a for a in doc["actions"] if a["op"] == "delete"]
    assert (stray["id"], stray["prune"], stray["replace"]) == ("sys/policies/acl/stray", True, False)


def test_rendering_never_changes_the_plan() -> None:
    plan = drifted_plan()
    before = plan.checksum(prune=True)
    render_text(plan, prune=True, verbose=True)
    render_json(plan)
    assert plan.checksum(prune=True) == before
    assert ResourceKey("", "sys/policies/acl/stray") in {a.key for a in plan.actions}
