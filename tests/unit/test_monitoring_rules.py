"""The alert rules: what the spec decides, and every rule proven with `promtool test rules` (a firing case and
a quiet one each, plus a healthy mesh on which no rule fires) for the default mesh, a 5-node mesh and a mesh
with drills scheduled. The cases are data here; the test renders one promtool file per rule."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from vaultmesh.monitoring.names import JOB_ENTRY, JOB_KEEPER, JOB_NODE, unknown_metrics
from vaultmesh.monitoring.rules import (
    COMMIT_P99_MS,
    FOLLOWER_CONTACT_MS,
    FOLLOWER_LAG_ENTRIES,
    REQUEST_P99_MS,
    cert_thresholds,
    mesh_rules,
    render_rules,
)
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.models import MeshSpec

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package "
                                    "`prometheus`; .ci/run installs it)")

STEP = 30
"""Seconds between two samples of the cases, and between two rule evaluations: a fault seen in one sample
only is a blip that a rule with a ``for`` of 30 s or more must not fire on."""
EARLY = 4
"""Samples before the event of a case (a blip, a failure, an election)."""

SPECS = {
    "default": MeshSpec(),
    "five": parse_spec("name: five\nnodes: 5\nzones: [a, b, c, d, e]\n"),
    "drills": parse_spec("name: drilled\nsnapshots: {every: 10m}\ndrills: {every: 30m}\n"
                         "tls: {cert_days: 30, ca_days: 365}\n"),
}


def labels_text(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def run(value: float | str, count: int) -> str:
    """``count`` equal samples in promtool's notation (``_`` for missing ones)."""
    assert count >= 1, count
    return str(value) if count == 1 else f"{value}x{count - 1}"


def ramp(start: float, count: int) -> str:
    """A timestamp that keeps up with the clock: ``start`` then + STEP per sample."""
    return f"{start}+{STEP}x{count - 1}"


@dataclass
class World:
    """The series of a mesh, keyed by their promtool name; a case overrides some of them."""

    spec: MeshSpec
    samples: int
    series: dict[str, str] = field(default_factory=dict)

    def node(self, i: int) -> dict[str, str]:
        zones = self.spec.zones
        return {"mesh": self.spec.name, "job": JOB_NODE, "instance": f"127.0.0.1:{8200 + 2 * i}",
                "node": f"node-{i + 1}", "zone": zones[i % len(zones)]}

    @property
    def keeper(self) -> dict[str, str]:
        return {"mesh": self.spec.name, "job": JOB_KEEPER, "instance": "127.0.0.1:18938"}

    def key(self, metric: str, labels: dict[str, str], **extra: str) -> str:
        return metric + labels_text({**labels, **extra})

    def on_node(self, metric: str, i: int, **extra: str) -> str:
        return self.key(metric, self.node(i), **extra)

    def on_keeper(self, metric: str, **extra: str) -> str:
        return self.key(metric, self.keeper, **extra)

    def const(self, value: float) -> str:
        return run(value, self.samples)


def healthy(spec: MeshSpec, samples: int) -> World:
    """A quiet mesh: node-1 leads, every node unsealed, autopilot content, the keeper fresh, certificates
    young; node-1 also carries the stale ``vault_core_unsealed{cluster=""} 0`` of a first init."""
    w = World(spec, samples)
    s, n, c = w.series, spec.nodes, w.const
    for i in range(n):
        s[w.on_node("up", i)] = c(1)
        s[w.on_node("vault_core_unsealed", i, cluster=spec.name)] = c(1)
        s[w.on_node("vault_core_active", i, cluster=spec.name)] = c(1 if i == 0 else 0)
        s[w.on_node("vault_raft_commitTime", i, quantile="0.99")] = c(3)
        s[w.on_node("vault_audit_log_request_failure", i)] = c(0)
        s[w.on_node("vault_audit_log_response_failure", i)] = c(0)
        s[w.on_node("vault_autopilot_node_healthy", 0, node_id=f"node-{i + 1}")] = c(1)
        if i:
            s[w.on_node("vault_raft_storage_follower_applied_index_delta", 0, peer_id=f"node-{i + 1}")] = c(0)
            s[w.on_node("vault_raft_storage_follower_last_heartbeat_ms", 0, peer_id=f"node-{i + 1}")] = c(2000)
    s[w.on_node("vault_core_unsealed", 0, cluster="")] = c(0)
    s[w.on_node("vault_autopilot_healthy", 0)] = c(1)
    s[w.on_node("vault_autopilot_failure_tolerance", 0)] = c((n - 1) // 2)
    s[w.on_node("vault_core_handle_request", 0, quantile="0.99")] = c(5)
    s[w.on_node("vault_expire_num_irrevocable_leases", 0)] = c(0)
    s[w.key("up", w.keeper)] = c(1)
    s[w.key("up", {"mesh": spec.name, "job": JOB_ENTRY, "instance": "127.0.0.1:8443"})] = c(1)
    for metric, value in (("vaultmesh_keeper_up", 1), ("vaultmesh_keeper_over_budget", 0),
                          ("vaultmesh_keeper_backing_off", 0), ("vaultmesh_keeper_mesh_answering", 1),
                          ("vaultmesh_snapshot_failures_total", 0), ("vaultmesh_drill_last_ok", 1)):
        s[w.on_keeper(metric)] = c(value)
    s[w.on_keeper("vaultmesh_snapshot_last_success_timestamp_seconds")] = ramp(0, samples)
    s[w.on_keeper("vaultmesh_drill_last_timestamp_seconds")] = ramp(0, samples)
    s[w.on_keeper("vaultmesh_certificate_expiry_timestamp_seconds", cert="ca")] = c(spec.tls.ca_days * 86400)
    s[w.on_keeper("vaultmesh_certificate_expiry_timestamp_seconds", cert="node-1")] = c(spec.tls.cert_days * 86400)
    return w


Overrides = dict[str, str | None]
"""Series to replace (None: remove) in the healthy world."""


@dataclass
class Case:
    fire: Overrides
    alerts: list[dict[str, str]]
    """The labels of each expected alert, beyond severity and mesh."""
    quiet: Overrides
    at: int = 300
    """Seconds from the start when both are evaluated."""


def staircase(every: float, samples: int) -> str:
    """A job that succeeds every ``every`` seconds: the timestamp of its last run."""
    return " ".join(str(math.floor(k * STEP / every) * every) for k in range(samples))


def cases(spec: MeshSpec) -> dict[str, Callable[[World], Case]]:
    """A firing and a quiet case for every rule the spec can have."""
    warn, crit = cert_thresholds(spec)["leaf"]
    ca_warn, ca_crit = cert_thresholds(spec)["ca"]
    day = 86400
    snap_every = spec.snapshots.every or 900
    drill_every = spec.drills.every or 3600
    snap_at = 2 * snap_every + 600
    drill_at = 2 * drill_every + 600

    def sealed(w: World) -> Case:
        return Case({w.on_node("vault_core_unsealed", 1, cluster=spec.name): w.const(0)},
                    [{k: w.node(1)[k] for k in ("node", "zone", "instance")}],
                    {})  # the quiet mesh carries the stale cluster="" 0 series on node-1

    def no_active(w: World) -> Case:
        a, b = (w.on_node("vault_core_active", i, cluster=spec.name) for i in (0, 1))
        # quiet: an election with one sample between the old leader and the new one
        return Case({a: w.const(0)}, [{}], {a: f"{run(1, EARLY)} {run(0, w.samples - EARLY)}",
                                            b: f"{run(0, EARLY + 1)} {run(1, w.samples - EARLY - 1)}"})

    def split(w: World) -> Case:
        k = w.on_node("vault_core_active", 1, cluster=spec.name)
        return Case({k: w.const(1)}, [{}], {k: f"{run(0, EARLY)} 1 {run(0, w.samples - EARLY - 1)}"})

    def flapping(w: World) -> Case:
        a, b = (w.on_node("vault_core_active", i, cluster=spec.name) for i in (0, 1))
        period = [1] * 2 + [0] * 2  # leadership moves every minute
        flip = " ".join(str(period[k % 4]) for k in range(w.samples))
        flop = " ".join(str(1 - period[k % 4]) for k in range(w.samples))
        once = f"{run(1, EARLY)} {run(0, w.samples - EARLY)}"
        again = f"{run(0, EARLY)} {run(1, w.samples - EARLY)}"
        return Case({a: flip, b: flop}, [{}], {a: once, b: again})

    def autopilot(w: World) -> Case:
        return Case({w.on_node("vault_autopilot_node_healthy", 0, node_id="node-3"): w.const(0)},
                    [{"node_id": "node-3"}],
                    # a former leader's last word (kept 60 s by OpenBao) is not the active node's
                    {w.on_node("vault_autopilot_node_healthy", 1, node_id="node-3"): w.const(0)})

    def no_tolerance(w: World) -> Case:
        return Case({w.on_node("vault_autopilot_failure_tolerance", 0): w.const(0)}, [{}],
                    {w.on_node("vault_autopilot_failure_tolerance", 1): w.const(0)})

    def reduced(w: World) -> Case:
        k = w.on_node("vault_autopilot_failure_tolerance", 0)
        return Case({k: w.const(1)}, [{}], {k: f"{run(2, EARLY)} 1 1 {run(2, w.samples - EARLY - 2)}"})

    def lagging(w: World) -> Case:
        delta = w.on_node("vault_raft_storage_follower_applied_index_delta", 0, peer_id="node-2")
        beat = w.on_node("vault_raft_storage_follower_last_heartbeat_ms", 0, peer_id="node-3")
        return Case({delta: w.const(FOLLOWER_LAG_ENTRIES * 5), beat: w.const(FOLLOWER_CONTACT_MS + 5000)},
                    [{"peer_id": "node-2"}, {"peer_id": "node-3"}],
                    {delta: w.const(FOLLOWER_LAG_ENTRIES - 1), beat: w.const(FOLLOWER_CONTACT_MS - 1000)})

    def commit(w: World) -> Case:
        k = w.on_node("vault_raft_commitTime", 0, quantile="0.99")
        return Case({k: w.const(COMMIT_P99_MS + 150)}, [{}], {k: w.const(COMMIT_P99_MS - 50)}, at=600)

    def requests(w: World) -> Case:
        k = w.on_node("vault_core_handle_request", 0, quantile="0.99")
        return Case({k: w.const(REQUEST_P99_MS + 400)}, [{"node": "node-1"}], {k: w.const(REQUEST_P99_MS - 100)},
                    at=600)

    def target_down(w: World) -> Case:
        k = w.on_node("up", 2)
        return Case({k: w.const(0)}, [w.node(2)], {k: f"{run(1, EARLY)} 0 {run(1, w.samples - EARLY - 1)}"})

    def audit(w: World) -> Case:
        k = w.on_node("vault_audit_log_request_failure", 1)
        # quiet: failures long ago leave a counter above 0 that no longer grows
        return Case({k: f"{run(0, EARLY)} 1+1x{w.samples - EARLY - 1}"}, [{"node": "node-2"}], {k: w.const(3)})

    def irrevocable(w: World) -> Case:
        k = w.on_node("vault_expire_num_irrevocable_leases", 0)
        return Case({k: w.const(2)}, [{}], {k: f"{run(2, EARLY)} {run(0, w.samples - EARLY)}"}, at=1500)

    def certs(level: str) -> Callable[[World], Case]:
        leaf_days, ca_days = (warn, ca_warn) if level == "warn" else (crit, ca_crit)

        def make(w: World) -> Case:
            ca = w.on_keeper("vaultmesh_certificate_expiry_timestamp_seconds", cert="ca")
            leaf = w.on_keeper("vaultmesh_certificate_expiry_timestamp_seconds", cert="node-1")
            return Case({ca: w.const((ca_days - 0.5) * day), leaf: w.const((leaf_days - 0.5) * day)},
                        [{**w.keeper, "cert": "ca"}, {**w.keeper, "cert": "node-1"}],
                        {ca: w.const((ca_days + 0.5) * day), leaf: w.const((leaf_days + 0.5) * day)})
        return make

    def keeper_gauge(metric: str, bad: int, good: int) -> Callable[[World], Case]:
        def make(w: World) -> Case:
            k = w.on_keeper(metric)
            return Case({k: w.const(bad)}, [{}], {k: f"{run(good, EARLY)} {bad} {run(good, w.samples - EARLY - 1)}"})
        return make

    def stale(metric: str, every: float, at: int) -> Callable[[World], Case]:
        def make(w: World) -> Case:
            k = w.on_keeper(metric)
            return Case({k: w.const(0)}, [{}], {k: staircase(every, w.samples)}, at=at)
        return make

    def missing(metric: str, every: float, at: int) -> Callable[[World], Case]:
        def make(w: World) -> Case:
            k = w.on_keeper(metric)
            late = int(every // STEP)  # the first run comes one interval after the keeper started
            return Case({k: None}, [{"job": JOB_KEEPER}],
                        {k: f"{run('_', late)} {ramp(late * STEP, w.samples - late)}"}, at=at)
        return make

    def keeper_restarted(w: World) -> Case:
        k = w.on_keeper("vaultmesh_keeper_restarts_total")
        at = 600
        late = at // STEP - 2  # a restart a minute before the evaluation; quiet: one nine minutes before
        return Case({k: f"{run(0, late)} {run(1, w.samples - late)}"}, [w.keeper],
                    {k: f"{run(0, 1)} {run(1, w.samples - 1)}"}, at=at)

    def snapshot_failing(w: World) -> Case:
        k = w.on_keeper("vaultmesh_snapshot_failures_total")
        # quiet: a failure longer than one interval ago
        late = snap_at // STEP - EARLY
        return Case({k: f"{run(0, late)} {run(1, w.samples - late)}"}, [w.keeper],
                    {k: f"{run(0, EARLY)} {run(1, w.samples - EARLY)}"}, at=snap_at)

    def drill_failed(w: World) -> Case:
        k = w.on_keeper("vaultmesh_drill_last_ok")
        return Case({k: w.const(0)}, [{}], {k: f"{run(0, EARLY)} {run(1, w.samples - EARLY)}"})

    return {
        "VaultmeshNodeSealed": sealed, "VaultmeshNoActiveNode": no_active, "VaultmeshSplitActive": split,
        "VaultmeshLeadershipFlapping": flapping, "VaultmeshAutopilotUnhealthy": autopilot,
        "VaultmeshNoFailureTolerance": no_tolerance, "VaultmeshFailureToleranceReduced": reduced,
        "VaultmeshFollowerLagging": lagging, "VaultmeshCommitSlow": commit, "VaultmeshRequestsSlow": requests,
        "VaultmeshTargetDown": target_down, "VaultmeshAuditFailing": audit,
        "VaultmeshIrrevocableLeases": irrevocable,
        "VaultmeshCertificateExpiring": certs("warn"), "VaultmeshCertificateExpiryCritical": certs("crit"),
        "VaultmeshLeaseBudgetExceeded": keeper_gauge("vaultmesh_keeper_over_budget", 1, 0),
        "VaultmeshKeeperBackingOff": keeper_gauge("vaultmesh_keeper_backing_off", 1, 0),
        "VaultmeshKeeperRestarted": keeper_restarted,
        "VaultmeshMeshNotAnswering": keeper_gauge("vaultmesh_keeper_mesh_answering", 0, 1),
        "VaultmeshSnapshotStale": stale("vaultmesh_snapshot_last_success_timestamp_seconds", snap_every, snap_at),
        "VaultmeshSnapshotMissing": missing("vaultmesh_snapshot_last_success_timestamp_seconds", snap_every,
                                            snap_at + 2 * snap_every),
        "VaultmeshSnapshotFailing": snapshot_failing,
        "VaultmeshDrillFailed": drill_failed,
        "VaultmeshDrillStale": stale("vaultmesh_drill_last_timestamp_seconds", drill_every, drill_at),
        "VaultmeshDrillMissing": missing("vaultmesh_drill_last_timestamp_seconds", drill_every,
                                         drill_at + 2 * drill_every),
    }


_TEMPLATE = re.compile(r"\{\{ \$labels\.(\w+) \}\}")


def expand(text: str, labels: dict[str, str]) -> str:
    return _TEMPLATE.sub(lambda m: labels.get(m.group(1), ""), text)


def promtool_file(spec: MeshSpec, rules_file: Path, alert: str, case: Callable[[World], Case]) -> dict[str, object]:
    """One promtool test file: the firing and the quiet case of ``alert``."""
    rule = next(r for r in mesh_rules(spec) if r.alert == alert)
    samples = case(healthy(spec, 100)).at // STEP + 2  # no longer than the case looks
    tests = []
    for kind in ("fire", "quiet"):
        world = healthy(spec, samples)
        made = case(world)
        for key, values in (made.fire if kind == "fire" else made.quiet).items():
            if values is None:
                world.series.pop(key)
            else:
                world.series[key] = values
        expected = []
        if kind == "fire":
            for extra in made.alerts:
                labels = {"severity": rule.severity, "mesh": spec.name, **extra}
                expected.append({"exp_labels": labels,
                                 "exp_annotations": {"summary": expand(rule.summary, labels),
                                                     "description": expand(rule.description, labels)}})
        tests.append({
            "interval": f"{STEP}s",
            "input_series": [{"series": k, "values": v} for k, v in world.series.items()],
            "alert_rule_test": [{"eval_time": f"{made.at}s", "alertname": alert, "exp_alerts": expected}],
        })
    return {"rule_files": [str(rules_file)], "evaluation_interval": f"{STEP}s", "tests": tests}


def healthy_file(spec: MeshSpec, rules_file: Path) -> dict[str, object]:
    """The quiet mesh, left alone: no rule fires at any of several times."""
    last = 2 * 2 * max(spec.snapshots.every or 0, spec.drills.every or 0, 900) + 900
    samples = last // STEP + 2
    world = healthy(spec, samples)
    evals = [{"eval_time": f"{t}s", "alertname": r.alert, "exp_alerts": []}
             for t in (60, 600, last // 2, last) for r in mesh_rules(spec)]
    return {"rule_files": [str(rules_file)], "evaluation_interval": f"{STEP}s",
            "tests": [{"interval": f"{STEP}s",
                       "input_series": [{"series": k, "values": v} for k, v in world.series.items()],
                       "alert_rule_test": evals}]}


def write_promtool_files(spec: MeshSpec, folder: Path) -> tuple[Path, list[Path]]:
    rules_file = folder / "rules.yml"
    rules_file.write_text(render_rules(spec))
    table = cases(spec)
    files = []
    for rule in mesh_rules(spec):
        path = folder / f"test-{rule.alert}.yml"
        path.write_text(yaml.safe_dump(promtool_file(spec, rules_file, rule.alert, table[rule.alert]),
                                       sort_keys=False, width=100_000))
        files.append(path)
    quiet = folder / "test-healthy-mesh.yml"
    quiet.write_text(yaml.safe_dump(healthy_file(spec, rules_file), sort_keys=False, width=100_000))
    return rules_file, [*files, quiet]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


@needs_promtool
@pytest.mark.parametrize("name", sorted(SPECS))
def test_rendered_rules_pass_promtool_check(name: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(render_rules(SPECS[name]))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(mesh_rules(SPECS[name]))} rules found" in done.stdout


@needs_promtool
@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_rule_fires_on_its_fault_and_stays_quiet_otherwise(name: str, tmp_path: Path) -> None:
    _, files = write_promtool_files(SPECS[name], tmp_path)
    done = promtool("test", "rules", *map(str, files))
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert done.stdout.count("SUCCESS") == len(files), done.stdout


def test_every_rule_has_a_case() -> None:
    for spec in SPECS.values():
        assert {r.alert for r in mesh_rules(spec)} <= set(cases(spec))


def test_every_rule_says_what_it_means_and_what_to_do() -> None:
    for spec in SPECS.values():
        for rule in mesh_rules(spec):
            assert rule.severity in ("critical", "warning")
            assert rule.summary and rule.description
            assert re.search(r"`(vaultmesh|bao|iostat|kill)[^`]*`", rule.description), rule.alert
            assert not unknown_metrics(rule.expr), (rule.alert, unknown_metrics(rule.expr))
            assert f'mesh="{spec.name}"' in rule.expr


def test_rule_names_are_unique() -> None:
    for spec in SPECS.values():
        names = [r.alert for r in mesh_rules(spec)]
        assert len(names) == len(set(names))


def alerts(spec: MeshSpec) -> set[str]:
    return {r.alert for r in mesh_rules(spec)}


def test_a_dev_mesh_has_no_rules_about_other_nodes() -> None:
    dev = alerts(parse_spec("dev: true\nnodes: 1\n"))
    assert "VaultmeshNodeSealed" in dev and "VaultmeshNoActiveNode" in dev
    assert not dev & {"VaultmeshSplitActive", "VaultmeshLeadershipFlapping", "VaultmeshNoFailureTolerance",
                      "VaultmeshFollowerLagging"}


def test_only_a_five_node_mesh_is_warned_of_reduced_tolerance() -> None:
    assert "VaultmeshFailureToleranceReduced" not in alerts(SPECS["default"])
    five = next(r for r in mesh_rules(SPECS["five"]) if r.alert == "VaultmeshFailureToleranceReduced")
    assert five.expr.endswith("< 2")


def test_drill_rules_only_when_drills_are_scheduled() -> None:
    assert not {a for a in alerts(SPECS["default"]) if "Drill" in a}
    assert {"VaultmeshDrillFailed", "VaultmeshDrillStale", "VaultmeshDrillMissing"} <= alerts(SPECS["drills"])


def test_no_keeper_no_keeper_rules() -> None:
    off = alerts(parse_spec("keeper: false\n"))
    assert not {a for a in off if "Snapshot" in a or "Keeper" in a or "Budget" in a}
    assert "VaultmeshTargetDown" in off


def test_no_snapshot_schedule_no_snapshot_rules() -> None:
    assert not {a for a in alerts(parse_spec("snapshots: {every: null}\n")) if "Snapshot" in a}


def test_stale_means_two_intervals() -> None:
    rule = next(r for r in mesh_rules(SPECS["drills"]) if r.alert == "VaultmeshSnapshotStale")
    assert rule.expr.endswith("> 1200")  # snapshots.every 10m
    drill = next(r for r in mesh_rules(SPECS["drills"]) if r.alert == "VaultmeshDrillMissing")
    assert drill.duration == "1h"


def test_certificate_thresholds_follow_the_lifetimes() -> None:
    assert cert_thresholds(MeshSpec()) == {"leaf": (30, 7), "ca": (180, 30)}
    assert cert_thresholds(SPECS["drills"]) == {"leaf": (10, 2), "ca": (121, 30)}
    short = parse_spec("tls: {cert_days: 3, ca_days: 6}\n")
    assert cert_thresholds(short) == {"leaf": (1, 1), "ca": (2, 1)}


def test_sealed_ignores_the_stale_first_init_series() -> None:
    rule = next(r for r in mesh_rules(MeshSpec()) if r.alert == "VaultmeshNodeSealed")
    assert rule.expr.startswith("max by (node, zone, instance) (vault_core_unsealed{")


def test_lease_budgets_are_named_in_the_budget_rule() -> None:
    spec = parse_spec("""\
auth:
  jwt:
    type: jwt
    config: {jwks_url: "https://issuer.test/jwks"}
    roles:
      batch: {bound_audiences: [vaultmesh], lease_budget: 40}
      web: {bound_audiences: [vaultmesh], lease_budget: 10}
secrets:
  database:
    type: database
    connections:
      pg: {connection_url: "postgresql://{{username}}:{{password}}@db.test/app"}
    roles:
      ro: {db_name: pg, creation_statements: ["CREATE ROLE x"], lease_budget: 20}
namespaces:
  team-a:
    secrets:
      db:
        type: database
        connections:
          pg: {connection_url: "postgresql://{{username}}:{{password}}@db.test/a"}
        roles:
          ro: {db_name: pg, creation_statements: ["CREATE ROLE x"], lease_budget: 5}
""")
    rule = next(r for r in mesh_rules(spec) if r.alert == "VaultmeshLeaseBudgetExceeded")
    assert "auth/jwt logins: 50 tokens" in rule.description
    assert "database/creds/ro: 20 credentials" in rule.description
    assert "team-a/db/creds/ro: 5 credentials" in rule.description


def test_the_rule_file_is_yaml_with_groups() -> None:
    doc = yaml.safe_load(render_rules(MeshSpec()))
    assert [g["name"] for g in doc["groups"]] == ["vaultmesh-vaultmesh-health", "vaultmesh-vaultmesh-performance",
                                                  "vaultmesh-vaultmesh-operations"]
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
            assert rule["labels"]["mesh"] == "vaultmesh"
