"""Every doctor check passes on the facts of a production-shaped mesh and turns when its fact is broken."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vaultmesh.doctor.checks import CHECKS, Cert, Facts, NodeFacts, Role, evaluate, exit_code

NOW = 1_800_000_000.0
NODES = tuple(NodeFacts(name=f"node-{i}", zone=f"zone-{z}", host=f"10.0.0.{i}", healthy=True, version="2.7.2",
                        core_limit=0, data_free=0.6, data_fstype="ext4", data_device=2)
              for i, z in ((1, "a"), (2, "b"), (3, "c")))
GOOD = Facts(now=NOW, nodes=NODES, failure_tolerance=1, autopilot_healthy=True, seal="transit", seal_key_device=9,
             certs=(Cert("ca", 3000), Cert("node-1", 80)), keeper_running=True, keeper_heal=True,
             auth_mounts={"jwt/": "jwt", "token/": "token"}, roles=(Role("jwt/", "jwt", "batch", 900, 3600),),
             root_tokens=0, audit_devices={"file/": "file", "central/": "syslog"}, monitoring="prometheus",
             snapshot_every=900, mesh_age=86400, newest_snapshot=NOW - 300, drill_every=86400,
             drill_time=NOW - 3600, drill_ok=True, load_test=NOW - 7200,
             modes={"/s": (0o700, 0o700), "/s/seal/static.key": (0o600, 0o600)})


def by_id(facts: Facts) -> dict[str, str]:
    return {f.id: f.status for f in evaluate(facts)}


def test_a_production_shaped_mesh_passes_every_check() -> None:
    found = evaluate(GOOD)
    assert [f for f in found if f.status != "pass"] == [] and exit_code(found) == 0
    assert len(CHECKS) >= 15 and len({f.id for f in found}) == len(found)


def node(i: int, **changes: object) -> tuple[NodeFacts, ...]:
    return tuple(replace(n, **changes) if k == i else n for k, n in enumerate(NODES))  # type: ignore[arg-type]


BROKEN: list[tuple[str, dict[str, object], str]] = [
    ("nodes.count", {"nodes": NODES[:1]}, "fail"),
    ("nodes.count", {"nodes": NODES[:1], "dev": True}, "warn"),
    ("nodes.zones", {"nodes": node(1, zone="zone-a")}, "fail"),
    ("nodes.hosts", {"nodes": tuple(replace(n, host="127.0.0.1") for n in NODES)}, "warn"),
    ("nodes.healthy", {"nodes": node(2, healthy=False)}, "fail"),
    ("raft.tolerance", {"failure_tolerance": 0}, "fail"),
    ("raft.tolerance", {"autopilot_healthy": False}, "fail"),
    ("raft.tolerance", {"failure_tolerance": None}, "warn"),
    ("raft.disk", {"nodes": node(0, data_free=0.05)}, "fail"),
    ("raft.disk", {"nodes": node(0, data_free=0.15)}, "warn"),
    ("raft.disk", {"nodes": node(0, data_fstype="tmpfs")}, "warn"),
    ("seal.auto", {"seal": "shamir"}, "warn"),
    ("seal.auto", {"seal": "static", "seal_key_device": 2}, "warn"),
    ("tls.expiry", {"certs": (Cert("ca", 3000), Cert("node-2", 12))}, "fail"),
    ("tls.expiry", {"certs": ()}, "warn"),
    ("tls.renewal", {"keeper_running": False}, "warn"),
    ("auth.roles", {"auth_mounts": {"token/": "token"}, "roles": ()}, "warn"),
    ("auth.roles", {"roles": ()}, "warn"),
    ("policies.lint", {"lint": ("policies.p: grants the whole engine [policy-wildcard]",)}, "warn"),
    ("tokens.ttl", {"roles": (Role("jwt/", "jwt", "batch", 0),)}, "fail"),
    ("tokens.ttl", {"roles": (Role("jwt/", "jwt", "batch", 7200),)}, "warn"),
    ("tokens.root", {"root_tokens": 1}, "fail"),
    ("audit.enabled", {"audit_devices": {}}, "fail"),
    ("audit.second", {"audit_devices": {"file/": "file"}}, "warn"),
    ("audit.second", {"audit_devices": {"a/": "file", "b/": "file"}}, "warn"),
    ("monitoring.alerts", {"monitoring": None}, "warn"),
    ("snapshots.recent", {"newest_snapshot": NOW - 3 * 900}, "fail"),
    ("snapshots.recent", {"newest_snapshot": None}, "fail"),
    ("snapshots.recent", {"newest_snapshot": None, "mesh_age": 60}, "warn"),
    ("snapshots.recent", {"snapshot_problem": "gzip: the stream is corrupt"}, "fail"),
    ("drill.passed", {"drill_ok": False, "drill_detail": "restore: sealed with another key"}, "fail"),
    ("drill.passed", {"drill_time": None}, "warn"),
    ("drill.passed", {"drill_time": NOW - 3 * 86400}, "warn"),
    ("load.tested", {"load_test": None}, "warn"),
    ("load.tested", {"load_ok": False, "load_run": "bench steady"}, "warn"),
    ("files.modes", {"modes": {"/s/seal/static.key": (0o644, 0o600)}}, "fail"),
    ("files.modes", {"modes": {"/s": (0o755, 0o700)}}, "fail"),
    ("metrics.loopback", {"nodes": node(0, host="93.184.216.34")}, "fail"),
    ("core.dumps", {"nodes": node(1, core_limit=-1)}, "fail"),
    ("core.dumps", {"nodes": tuple(replace(n, core_limit=None) for n in NODES)}, "warn"),
    ("versions.match", {"nodes": node(2, version="2.6.2")}, "fail"),
]


@pytest.mark.parametrize(("check", "changes", "status"), BROKEN, ids=[f"{c}-{s}-{i}" for i, (c, _, s) in
                                                                      enumerate(BROKEN)])
def test_a_broken_fact_turns_its_check(check: str, changes: dict[str, object], status: str) -> None:
    found = {f.id: f for f in evaluate(replace(GOOD, **changes))}  # type: ignore[arg-type]
    assert found[check].status == status, found[check]
    assert found[check].message and found[check].fix


def test_every_check_is_broken_by_some_test() -> None:
    assert {c for c, _, _ in BROKEN} == {f.id for f in evaluate(GOOD)}


def test_without_the_admin_login_the_api_checks_warn_and_never_pass() -> None:
    silent = by_id(replace(GOOD, answering=False))
    for check in ("auth.roles", "policies.lint", "tokens.ttl", "tokens.root", "audit.enabled", "audit.second"):
        assert silent[check] == "warn"


def test_a_fail_makes_exit_1_and_warnings_do_not() -> None:
    assert exit_code(evaluate(replace(GOOD, monitoring=None))) == 0
    assert exit_code(evaluate(replace(GOOD, root_tokens=2))) == 1
