"""Prometheus alerting rules for one mesh, rendered from its mesh file. Pure: a spec in, rules (values) and
their YAML out.

What the spec decides: the mesh's name (every selector carries ``mesh="<name>"``, so a Prometheus shared by
meshes judges each by its own rules), the node count (no split-brain, flapping or failure-tolerance rules on
a one-node dev mesh; a 5-node mesh is also warned when it can lose fewer than two nodes), the keeper (its
rules only when it runs), ``snapshots.every`` and ``drills.every`` (stale after two intervals; no rule for a job
that is not scheduled), ``tls.cert_days`` and ``tls.ca_days`` (warn with a third of the lifetime left,
critical with a twelfth), and the lease budgets (named in the budget rule's description).

Pitfalls the expressions avoid, each seen on OpenBao 2.7.2:
- after its first init a node keeps a stale ``vault_core_unsealed{cluster=""} 0`` next to the real series, so
  "sealed" is ``max by (node)(...) == 0``, never ``vault_core_unsealed == 0``;
- ``vault_core_response_status_code`` is not emitted at all: no rule reads it;
- autopilot and per-follower figures come from the leader only, and a node that lost leadership keeps its last
  values for ``prometheus_retention_time`` (60 s): those rules read the series of the node that is active now
  (``and on (instance) vault_core_active == 1``);
- a counter born at its first event has no increase to see, so rules count changes of gauges
  (leadership) or read counters that exist from the first request (audit failures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import yaml

from vaultmesh.monitoring.names import (
    CA_CERT,
    CERT_EXPIRY,
    JOB_KEEPER,
    JOB_NODE,
    MESH_LABEL,
)
from vaultmesh.spec.models import MeshSpec
from vaultmesh.spec.resources import DatabaseMount, JwtAuth, walk_scopes
from vaultmesh.spec.types import format_duration

Severity = Literal["critical", "warning"]

FOLLOWER_LAG_ENTRIES = 1000
"""A follower this many Raft entries behind the leader is lagging: autopilot's ``max_trailing_logs`` default,
the point where autopilot itself stops counting it healthy."""
FOLLOWER_CONTACT_MS = 10_000
"""A follower the leader has not heard from for this long is lagging: autopilot's ``last_contact_threshold``
default. A healthy follower reads 1-4 s here (the figure is refreshed every few seconds); a SIGSTOPped one
grew past 10 s in 10 s, when autopilot also called it unhealthy."""
COMMIT_P99_MS = 200
"""Raft commit time (p99, ms) above which writes are slow: commits wait for an fsync on a quorum of disks; 200
ms sustained means a slow or saturated disk, not a busy mesh (loopback p99 is a few ms here)."""
REQUEST_P99_MS = 500
"""Request handling time (p99, ms) above which clients feel it (openbao-helm's example rule uses the same)."""
FLAP_WINDOW = "15m"
FLAP_CHANGES = 4
"""More than this many changes of ``vault_core_active`` over all nodes in ``FLAP_WINDOW`` is flapping: one
election flips two gauges (the old leader's to 0, the new one's to 1), so this is more than two elections."""
AUDIT_WINDOW = "5m"
STALE_INTERVALS = 2
"""A scheduled job whose last success is older than this many intervals is stale (one missed run is a retry;
two is a broken schedule)."""
CA_WARN_DAYS_MAX = 180
CA_CRITICAL_DAYS_MAX = 30
"""The CA's thresholds are a third and a twelfth of its lifetime, but no more than these: re-trusting a new CA
takes every client, so half a year of notice is enough and a month is the last call."""

RUNBOOK = "vaultmesh status"
"""The first command of every runbook: it shows every node's process, seal, role and health, and the keeper."""


@dataclass(frozen=True)
class Rule:
    """One alerting rule. ``summary`` and ``description`` may use ``{{ $labels.<name> }}`` only."""

    alert: str
    expr: str
    duration: str
    """Prometheus ``for``: how long the expression must hold before the alert fires (``0s``: at once)."""
    severity: Severity
    summary: str
    description: str
    """What it means and what to do, starting with a command."""
    group: str

    def to_yaml(self, mesh: str) -> dict[str, object]:
        return {"alert": self.alert, "expr": self.expr, "for": self.duration,
                "labels": {"severity": self.severity, MESH_LABEL: mesh},
                "annotations": {"summary": self.summary, "description": self.description}}


def selector(metric: str, mesh: str, job: str | None = None, **labels: str) -> str:
    """``metric{mesh="m",job="j",k="v"}``: a label value that starts with ``!`` is a negative match."""
    matchers = [f'{MESH_LABEL}="{mesh}"'] + ([f'job="{job}"'] if job else [])
    for key, value in labels.items():
        matchers.append(f'{key}!="{value[1:]}"' if value.startswith("!") else f'{key}="{value}"')
    return f"{metric}{{{','.join(matchers)}}}"


def days(n: float) -> int:
    return max(1, math.floor(n))


def cert_thresholds(spec: MeshSpec) -> dict[str, tuple[int, int]]:
    """(warning, critical) days left, for ``leaf`` certificates and the ``ca``."""
    tls = spec.tls
    return {"leaf": (days(tls.cert_days / 3), days(tls.cert_days / 12)),
            CA_CERT: (min(CA_WARN_DAYS_MAX, days(tls.ca_days / 3)),
                      min(CA_CRITICAL_DAYS_MAX, days(tls.ca_days / 12)))}


def lease_budgets(spec: MeshSpec) -> list[str]:
    """Each lease budget the file declares, as ``<what> <limit>`` (the keeper watches them)."""
    out = []
    for ns, _, scope in walk_scopes(spec):
        where = f"{ns}/" if ns else ""
        for mount, auth in scope.auth.items():
            if isinstance(auth, JwtAuth):
                total = sum(role.lease_budget or 0 for role in auth.roles.values())
                if total:
                    out.append(f"{where}auth/{mount} logins: {total} tokens")
        for mount, engine in scope.secrets.items():
            if isinstance(engine, DatabaseMount):
                for name, db_role in engine.roles.items():
                    if db_role.lease_budget is not None:
                        out.append(f"{where}{mount}/creds/{name}: {db_role.lease_budget} credentials")
    return out


def mesh_rules(spec: MeshSpec) -> list[Rule]:
    """Every alerting rule of the mesh, in groups: ``health`` (seal, leadership, Raft, autopilot),
    ``performance``, ``operations`` (targets, keeper, leases, audit, certificates, snapshots, drills)."""
    m = spec.name
    n = spec.nodes

    def node(metric: str, **labels: str) -> str:
        return selector(metric, m, JOB_NODE, **labels)

    def keeper(metric: str) -> str:
        return selector(metric, m, JOB_KEEPER)

    active = f"on (instance) ({node('vault_core_active')} == 1)"
    # the series of the node that is active now: autopilot's and the followers' figures come from the leader

    health, perf, ops = f"vaultmesh-{m}-health", f"vaultmesh-{m}-performance", f"vaultmesh-{m}-operations"
    rules = [
        Rule("VaultmeshNodeSealed", f"max by (node, zone, instance) ({node('vault_core_unsealed')}) == 0", "30s",
             "critical", "node {{ $labels.node }} ({{ $labels.zone }}) is sealed",
             f"It answers but serves nothing. `{RUNBOOK}`; the keeper unseals a node of an auto-unseal mesh by "
             "itself, so a seal that stays means it cannot: read the node's bao.log (nodes/{{ $labels.node }}/ "
             "in the state dir). A Shamir mesh needs its key shares (`bao operator unseal`).", health),
        Rule("VaultmeshNoActiveNode",
             f"(sum(max by (node) ({node('vault_core_active')})) or vector(0)) < 1", "30s", "critical",
             f"mesh {m} has no active node",
             f"Nothing can be read or written. `{RUNBOOK}`: a quorum of {n // 2 + 1} of {n} nodes must run "
             "unsealed for one to be elected; `vaultmesh up` starts what is stopped.", health),
    ]
    if n > 1:
        rules += [
            Rule("VaultmeshSplitActive", f"sum(max by (node) ({node('vault_core_active')})) > 1", "30s",
                 "critical", f"more than one node of mesh {m} says it is active",
                 f"Two leaders mean a partition or a clock gone wrong. `{RUNBOOK}` on every side; the one that "
                 "lost quorum steps down by itself within seconds. If it does not, stop it (`kill` its pid) and "
                 "let `vaultmesh up` start it again as a follower.", health),
            Rule("VaultmeshLeadershipFlapping",
                 f"sum(changes({node('vault_core_active')}[{FLAP_WINDOW}])) > {FLAP_CHANGES}", "0s", "warning",
                 f"leadership of mesh {m} changed more than {FLAP_CHANGES // 2} times in {FLAP_WINDOW}",
                 f"Each election is seconds without writes. `{RUNBOOK}`, then look for a node that keeps "
                 "restarting (the keeper's recent actions), a saturated CPU or disk, or a link that drops "
                 "(raise raft.performance_multiplier on slow links).", health),
        ]
    rules.append(Rule(
        "VaultmeshAutopilotUnhealthy",
        f"min by (node_id) ({node('vault_autopilot_node_healthy')} and {active}) == 0", "30s", "critical",
        "autopilot counts node {{ $labels.node_id }} unhealthy",
        f"The node is down, sealed, or too far behind to vote. `{RUNBOOK}`; the keeper restarts a dead node and "
        "unseals a sealed one; a node that stays unhealthy: read its bao.log.", health))
    if n >= 3:
        rules.append(Rule(
            "VaultmeshNoFailureTolerance",
            f"max({node('vault_autopilot_failure_tolerance')} and {active}) < 1", "30s", "critical",
            f"mesh {m} cannot lose another node",
            f"One more failure loses quorum (and every write). `{RUNBOOK}`: bring the missing or unhealthy nodes "
            "back (`vaultmesh up`) before anything else.", health))
    if n >= 5:
        want = (n - 1) // 2
        rules.append(Rule(
            "VaultmeshFailureToleranceReduced",
            f"max({node('vault_autopilot_failure_tolerance')} and {active}) < {want}", "1m", "warning",
            f"mesh {m} can lose fewer than {want} nodes",
            f"A {n}-node mesh should survive {want} failures. `{RUNBOOK}`: a node is down or unhealthy; "
            "`vaultmesh up` starts it.", health))
    if n > 1:
        rules.append(Rule(
            "VaultmeshFollowerLagging",
            f"max by (peer_id) ({node('vault_raft_storage_follower_applied_index_delta')} and {active}) "
            f"> {FOLLOWER_LAG_ENTRIES} or max by (peer_id) "
            f"({node('vault_raft_storage_follower_last_heartbeat_ms')} and {active}) > {FOLLOWER_CONTACT_MS}",
            "30s", "warning", "follower {{ $labels.peer_id }} lags behind the leader",
            f"It is more than {FOLLOWER_LAG_ENTRIES} entries behind or silent for "
            f"{FOLLOWER_CONTACT_MS // 1000} s, so it cannot take over. `{RUNBOOK}`; check its disk and CPU, and "
            "its bao.log for a snapshot install that keeps restarting.", health))
    rules += [
        Rule("VaultmeshCommitSlow",
             f"max({node('vault_raft_commitTime', quantile='0.99')}) > {COMMIT_P99_MS}", "5m", "warning",
             f"Raft commits of mesh {m} take more than {COMMIT_P99_MS} ms (p99)",
             "Every write waits for an fsync on a quorum of disks. `vaultmesh status` for the leader, then check "
             "the disks of the data dirs (`iostat -x 1`): a shared or throttled disk is the usual cause.", health),
        Rule("VaultmeshRequestsSlow",
             f"max by (node) ({node('vault_core_handle_request', quantile='0.99')}) > {REQUEST_P99_MS}", "5m",
             "warning", "requests on node {{ $labels.node }} take more than " f"{REQUEST_P99_MS} ms (p99)",
             "Clients feel it. `vaultmesh status`; then look at commit time (slow disk), the lease count (a "
             "lease explosion slows every request) and `vaultmesh bench` figures against the baseline.", perf),
        Rule("VaultmeshTargetDown", selector("up", m) + " == 0", "30s", "critical",
             "{{ $labels.job }} {{ $labels.instance }} does not answer Prometheus",
             f"A node, the keeper or the entry is down or its certificate does not verify. `{RUNBOOK}`; the "
             "keeper restarts nodes, the entry and the issuer; `vaultmesh up` starts the keeper itself.", ops),
        Rule("VaultmeshAuditFailing",
             f"sum by (node) (increase({node('vault_audit_log_request_failure')}[{AUDIT_WINDOW}])) "
             f"+ sum by (node) (increase({node('vault_audit_log_response_failure')}[{AUDIT_WINDOW}])) > 0",
             "0s", "critical", "node {{ $labels.node }} fails to write audit entries",
             "With every audit device failing OpenBao refuses requests. `vaultmesh status`, then check the "
             "device's target: a full disk under the state dir, a gone socket or syslog; declare a second audit "
             "device so one failing device does not stop the mesh.", ops),
        Rule("VaultmeshIrrevocableLeases", f"max({node('vault_expire_num_irrevocable_leases')}) > 0", "15m",
             "warning", f"mesh {m} holds leases it cannot revoke",
             "Their backend refused the revocation (a database that is gone, a changed password). `bao list "
             "sys/leases/lookup/<mount>/creds/<role>` to find them; fix the backend or revoke with -force.", ops),
    ]
    leaf_warn, leaf_crit = cert_thresholds(spec)["leaf"]
    ca_warn, ca_crit = cert_thresholds(spec)[CA_CERT]
    left = f"({selector(CERT_EXPIRY, m, cert='!' + CA_CERT)} - time())"
    ca_left = f"({selector(CERT_EXPIRY, m, cert=CA_CERT)} - time())"
    renew = ("vaultmesh has no rotation command yet: re-issue it before it expires, or clients stop trusting the "
             "mesh. `vaultmesh status` shows which process serves it.")
    rules += [
        Rule("VaultmeshCertificateExpiring",
             f"{left} < {leaf_warn} * 86400 or {ca_left} < {ca_warn} * 86400", "0s", "warning",
             "certificate {{ $labels.cert }} of mesh " f"{m} expires soon",
             f"Less than {leaf_warn} days left (a third of tls.cert_days: {spec.tls.cert_days}), or {ca_warn} for "
             f"the CA. {renew}", ops),
        Rule("VaultmeshCertificateExpiryCritical",
             f"{left} < {leaf_crit} * 86400 or {ca_left} < {ca_crit} * 86400", "0s", "critical",
             "certificate {{ $labels.cert }} of mesh " f"{m} is about to expire",
             f"Less than {leaf_crit} days left, or {ca_crit} for the CA. {renew}", ops),
    ]
    if spec.keeper.enabled:
        budgets = lease_budgets(spec)
        declared = (f"Declared: {'; '.join(budgets)}." if budgets else
                    "The mesh file declares none; a partial file applied later may.")
        rules += [
            Rule("VaultmeshLeaseBudgetExceeded", f"max({keeper('vaultmesh_keeper_over_budget')}) > 0", "1m",
                 "warning", f"a lease budget of mesh {m} is exceeded",
                 f"Some role holds more live leases than its lease_budget. `vaultmesh status --json` (keeper."
                 f"over_budget) names it; find the workload that leaks them and brake it with a rate-limit "
                 f"quota. {declared}", ops),
            Rule("VaultmeshKeeperBackingOff", f"max({keeper('vaultmesh_keeper_backing_off')}) == 1", "1m",
                 "warning", f"the keeper of mesh {m} cannot restart something",
                 f"A restart keeps failing and the keeper waits longer between tries. `{RUNBOOK}` shows what and "
                 "why (keeper line); read that process's log.", ops),
            Rule("VaultmeshKeeperRestarted", f"increase({keeper('vaultmesh_keeper_restarts_total')}[5m]) > 0",
                 "0s", "warning", f"the keeper of mesh {m} restarted a process",
                 "A node, the entry or the issuer died (or a node sealed) and the keeper brought it back in the "
                 f"last 5 minutes: the mesh healed, but something killed it. `{RUNBOOK}` shows what was restarted "
                 "(keeper line); read that process's log for why it died.", ops),
            Rule("VaultmeshMeshNotAnswering", f"max({keeper('vaultmesh_keeper_mesh_answering')}) == 0", "30s",
                 "critical", f"the keeper of mesh {m} sees no answering node",
                 f"The keeper's last cycle reached no node. `{RUNBOOK}`; `vaultmesh up` starts what is "
                 "stopped.", ops),
        ]
        rules += _job_rules(spec, "snapshot", spec.snapshots.every, ops)
        rules += _job_rules(spec, "drill", spec.drills.every, ops)
    return rules


def _job_rules(spec: MeshSpec, job: str, every: float | None, group: str) -> list[Rule]:
    """Stale, missing and failing rules for a scheduled keeper job; none when it is not scheduled."""
    if every is None:
        return []
    m = spec.name
    stale = int(STALE_INTERVALS * every)
    word, field = ("Snapshot", "snapshots.every") if job == "snapshot" else ("Drill", "drills.every")
    stamp = selector("vaultmesh_snapshot_last_success_timestamp_seconds" if job == "snapshot"
                     else "vaultmesh_drill_last_timestamp_seconds", m, JOB_KEEPER)
    up = selector("vaultmesh_keeper_up", m, JOB_KEEPER)
    how = ("`vaultmesh snapshot save` takes one by hand and says why it fails" if job == "snapshot" else
           "`vaultmesh drill` runs one by hand and names the check that fails")
    out = [
        Rule(f"Vaultmesh{word}Stale", f"time() - max({stamp}) > {stale}", "0s", "warning",
             f"the last {job} of mesh {m} is older than {format_duration(stale)}",
             f"{field} is {format_duration(int(every))}: {STALE_INTERVALS} runs were missed. `{RUNBOOK}` (keeper "
             f"line); {how}.", group),
        Rule(f"Vaultmesh{word}Missing", f"absent({stamp}) and on () max({up}) == 1", format_duration(stale),
             "warning", f"the keeper of mesh {m} has made no {job} for {format_duration(stale)}",
             f"{field} is {format_duration(int(every))}, and the running keeper reports none. `{RUNBOOK}`; "
             f"{how}.", group),
    ]
    if job == "snapshot":
        out.append(Rule(
            "VaultmeshSnapshotFailing",
            f"increase({selector('vaultmesh_snapshot_failures_total', m, JOB_KEEPER)}[{format_duration(int(every))}])"
            " > 0", "0s", "warning", f"scheduled snapshots of mesh {m} fail",
            f"A scheduled snapshot (or its ship command) failed in the last {format_duration(int(every))} (the "
            f"keeper retries a minute later). `{RUNBOOK}` shows the error; {how}.", group))
    else:
        out.append(Rule(
            "VaultmeshDrillFailed", f"min({selector('vaultmesh_drill_last_ok', m, JOB_KEEPER)}) == 0", "0s",
            "critical", f"the last restore drill of mesh {m} failed",
            "A snapshot did not restore into a working mesh: the backups may not be usable. `vaultmesh status "
            f"--json` (keeper.drill) names the failed checks; {how}.", group))
    return out


def rule_groups(spec: MeshSpec) -> dict[str, list[Rule]]:
    groups: dict[str, list[Rule]] = {}
    for rule in mesh_rules(spec):
        groups.setdefault(rule.group, []).append(rule)
    return groups


def render_rules(spec: MeshSpec) -> str:
    """The rule file (``rule_files`` of prometheus.yml) as YAML text."""
    doc = {"groups": [{"name": name, "rules": [r.to_yaml(spec.name) for r in rules]}
                      for name, rules in rule_groups(spec).items()]}
    header = f"# Alert rules of mesh {spec.name}, rendered by `vaultmesh monitoring rules`; do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True)
