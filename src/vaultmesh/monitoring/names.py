"""What Prometheus sees of a mesh: the scrape jobs, the labels every target carries, the metric names OpenBao
2.7.2 and vaultmesh emit, and ``metric_names``, the names a PromQL expression reads. Pure.

The rules and the dashboard use only names from ``KNOWN_METRICS``; a unit test checks every OpenBao name in it
against a recorded scrape of a real 2.7.2 leader and standby (``tests/unit/data/rules/*.names``) and every
vaultmesh name against the keeper's own exporter, so an alert can never wait on a name nobody emits (the
community rule sets do: ``vault_core_response_status_code`` is not emitted by OpenBao 2.7.2).
"""

from __future__ import annotations

import re

JOB_NODE = "vaultmesh-node"
"""Every OpenBao node of the mesh: ``/v1/sys/metrics?format=prometheus``, its own figures (a standby answers
for itself: with ``unauthenticated_metrics_access`` the request is not forwarded to the leader)."""
JOB_KEEPER = "vaultmesh-keeper"
"""The keeper's ``/metrics``: its cycle, restarts, lease budgets, the last snapshot and drill."""
JOB_ENTRY = "vaultmesh-entry"
"""The entry (HAProxy, TLS passed through to the active node). Scraped only for ``up``: its samples are the
active node's, already scraped as that node, so they are dropped (``metric_relabel_configs``) and only
``up{job="vaultmesh-entry"}`` remains: 1 when the entry routes to a node that answers with a certificate the
mesh CA signed."""

MESH_LABEL = "mesh"
"""On every target: the mesh's name, so rules rendered for one mesh never judge another's series in a
Prometheus shared by several meshes."""
NODE_LABEL = "node"
ZONE_LABEL = "zone"

CERT_EXPIRY = "vaultmesh_certificate_expiry_timestamp_seconds"
"""The gauge the certificate rules read (the keeper exports it, ``keeper.metrics.CERT_EXPIRY``): the ``notAfter``
of one certificate as Unix seconds, labelled ``cert``: ``ca`` for the mesh CA, the node name for a node
certificate, ``seal``, ``entry``, ``identity`` or ``keeper`` for the others."""
CA_CERT = "ca"

OPENBAO_METRICS = frozenset({
    # seal and HA: gauges every node refreshes every second
    "vault_core_unsealed", "vault_core_active",
    # requests: summaries (ms) on the node that handles them (the active one, behind the entry)
    "vault_core_handle_request", "vault_core_handle_request_count", "vault_core_handle_login_request_count",
    # Raft: commit time (summary, ms); per-follower figures from the leader's autopilot
    "vault_raft_commitTime", "vault_raft_storage_follower_applied_index_delta",
    "vault_raft_storage_follower_last_heartbeat_ms",
    # autopilot: on the leader only
    "vault_autopilot_healthy", "vault_autopilot_failure_tolerance", "vault_autopilot_node_healthy",
    # leases and tokens (on the active node); vault_token_creation is a counter per creation
    "vault_expire_num_leases", "vault_expire_num_irrevocable_leases", "vault_token_creation",
    # audit: counters bumped by 0 or more at every audited request, so they exist from the first one
    "vault_audit_log_request_failure", "vault_audit_log_response_failure",
})
"""OpenBao 2.7.2 names this package reads, each seen in a scrape of a real node. Not among them: names emitted
only at an event and gone ``prometheus_retention_time`` (60 s) later, such as ``vault_raft_peers`` (at a
configuration change) or ``vault_raft_state_leader``: a panel or a rule on them is empty most of the time."""

VAULTMESH_METRICS = frozenset({
    "vaultmesh_keeper_up", "vaultmesh_keeper_cycle_timestamp_seconds", "vaultmesh_keeper_mesh_answering",
    "vaultmesh_keeper_restarts_total", "vaultmesh_keeper_backing_off", "vaultmesh_keeper_revoked_total",
    "vaultmesh_keeper_over_budget",
    "vaultmesh_snapshot_last_success_timestamp_seconds", "vaultmesh_snapshot_last_size_bytes",
    "vaultmesh_snapshot_last_index", "vaultmesh_snapshot_failures_total",
    "vaultmesh_drill_last_timestamp_seconds", "vaultmesh_drill_last_ok", "vaultmesh_drill_last_rto_seconds",
    "vaultmesh_drill_last_rpo_seconds", CERT_EXPIRY,
})
"""The keeper's ``/metrics`` names (``keeper.metrics``), as exposed (counters end in ``_total``)."""

PROMETHEUS_METRICS = frozenset({"up", "scrape_duration_seconds"})
"""What Prometheus itself writes for every target."""

KNOWN_METRICS = OPENBAO_METRICS | VAULTMESH_METRICS | PROMETHEUS_METRICS

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_WORD = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                       "group_left", "group_right", "inf", "nan", "Inf", "NaN"})


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: words that are not functions, keywords, label names, durations or
    strings (``max by (node) (vault_core_unsealed{mesh="m"}) == 0`` -> ``{"vault_core_unsealed"}``)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub("", text)
    return {m.group(1) for m in _WORD.finditer(text) if not m.group(2) and m.group(1) not in _KEYWORDS}


def unknown_metrics(expr: str) -> set[str]:
    """The names ``expr`` reads that nothing emits (empty for every rule and panel of this package)."""
    return metric_names(expr) - KNOWN_METRICS
