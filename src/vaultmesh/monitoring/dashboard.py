"""A Grafana dashboard of one mesh, generated from its mesh file. Pure: a spec in, the dashboard (a JSON
document) out.

Raft-aware where the public OpenBao dashboard is not: the leader's name, peers and failure tolerance,
autopilot's view of every node, applied-index lag and last contact per follower, commit time; then requests,
leases and tokens, audit failures, certificate days left, and what the keeper reports (snapshot age, drills,
restarts, lease budgets). Thresholds come from the spec (node count, ``snapshots.every``, ``tls.*_days``);
panels of a keeper job that is not scheduled are left out. Every query reads only ``names.KNOWN_METRICS`` and
carries ``mesh="<name>"``; the data source is a dashboard variable (``${datasource}``), so the JSON imports
into any Grafana with a Prometheus data source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from vaultmesh.monitoring.names import CERT_EXPIRY, JOB_KEEPER, JOB_NODE
from vaultmesh.monitoring.rules import REQUEST_P99_MS, cert_thresholds, selector
from vaultmesh.spec.models import MeshSpec

SCHEMA_VERSION = 39
"""Grafana's dashboard schema of the 10.x/11.x line; older Grafanas migrate what they can on import."""
WIDTH = 24
"""Grafana's grid is 24 columns wide."""
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

Kind = Literal["stat", "timeseries"]


@dataclass(frozen=True)
class Panel:
    title: str
    kind: Kind
    queries: tuple[tuple[str, str], ...]
    """(PromQL, legend) pairs."""
    unit: str = "none"
    description: str = ""
    steps: tuple[tuple[str, float | None], ...] = ()
    """Threshold steps, (colour, from value); the first one's value is None (from minus infinity)."""
    text_mode: str = "auto"
    """``name``: a stat shows the series' legend (the leader's node name), not its value."""
    width: int = 4
    height: int = 4


def mesh_panels(spec: MeshSpec) -> list[Panel]:
    """The dashboard's panels in reading order: stats first, then the plots."""
    m, n = spec.name, spec.nodes

    def node(metric: str, **labels: str) -> str:
        return selector(metric, m, JOB_NODE, **labels)

    def keeper(metric: str) -> str:
        return selector(metric, m, JOB_KEEPER)

    def on_leader(expr: str) -> str:
        return f"{expr} and on (instance) ({node('vault_core_active')} == 1)"

    tolerance = (n - 1) // 2
    warn, crit = cert_thresholds(spec)["leaf"]
    stats = [
        Panel("Leader", "stat", ((f"max by (node) ({node('vault_core_active')}) == 1", "{{node}}"),),
              description="The node that is active now (none: no leader, nothing can be written).",
              text_mode="name"),
        Panel(f"Nodes answering (of {n})", "stat", ((f"sum({selector('up', m, JOB_NODE)})", ""),),
              steps=(("red", None), ("orange", n // 2 + 1), ("green", n))),
        Panel(f"Servers in autopilot (of {n})", "stat",
              ((f"count({on_leader(node('vault_autopilot_node_healthy'))})", ""),),
              description="Servers of the Raft configuration, as the leader's autopilot counts them.",
              steps=(("orange", None), ("green", n))),
        Panel("Failure tolerance", "stat",
              ((f"max({on_leader(node('vault_autopilot_failure_tolerance'))})", ""),),
              description=f"Nodes the mesh can lose and keep quorum (a {n}-node mesh: {tolerance}).",
              steps=(("red", None), ("orange", 1), ("green", max(1, tolerance))) if n > 1 else ()),
        Panel("Autopilot healthy", "stat", ((f"min({on_leader(node('vault_autopilot_healthy'))})", ""),),
              steps=(("red", None), ("green", 1))),
        Panel("Sealed nodes", "stat",
              ((f"count(max by (node) ({node('vault_core_unsealed')}) == 0) or vector(0)", ""),),
              description="Nodes whose every vault_core_unsealed series is 0 (a stale cluster=\"\" series "
                          "after first init is not counted).",
              steps=(("green", None), ("red", 1))),
        Panel("Certificate days left", "stat",
              ((f"min(({selector(CERT_EXPIRY, m)} - time()) / 86400)", ""),),
              unit="d", description="The soonest expiry of any certificate of the mesh (exported by the keeper).",
              steps=(("red", None), ("orange", crit), ("green", warn))),
    ]
    if spec.keeper.enabled:
        stats += [
            Panel("Keeper restarts (1h)", "stat",
                  ((f"sum(increase({keeper('vaultmesh_keeper_restarts_total')}[1h]))", ""),),
                  description="Processes the keeper restarted in the last hour.",
                  steps=(("green", None), ("orange", 1))),
            Panel("Lease budgets exceeded", "stat", ((f"max({keeper('vaultmesh_keeper_over_budget')})", ""),),
                  steps=(("green", None), ("red", 1))),
        ]
        every = spec.snapshots.every
        if every is not None:
            stats.append(Panel(
                "Snapshot age", "stat",
                ((f"time() - max({keeper('vaultmesh_snapshot_last_success_timestamp_seconds')})", ""),),
                unit="s", description=f"snapshots.every is {every} s.",
                steps=(("green", None), ("orange", every * 1.5), ("red", every * 2))))
        if spec.drills.every is not None:
            stats += [
                Panel("Last drill", "stat", ((f"min({keeper('vaultmesh_drill_last_ok')})", ""),),
                      description="1: the last restore drill passed.", steps=(("red", None), ("green", 1))),
                Panel("Drill RTO", "stat", ((f"max({keeper('vaultmesh_drill_last_rto_seconds')})", ""),),
                      unit="s"),
            ]
    plots = [
        Panel("Applied-index lag per follower", "timeseries",
              ((f"max by (peer_id) ({on_leader(node('vault_raft_storage_follower_applied_index_delta'))})",
                "{{peer_id}}"),),
              description="Raft entries each follower is behind the leader (autopilot calls it unhealthy past "
                          "1000)."),
        Panel("Follower last contact", "timeseries",
              ((f"max by (peer_id) ({on_leader(node('vault_raft_storage_follower_last_heartbeat_ms'))})",
                "{{peer_id}}"),), unit="ms"),
        Panel("Autopilot: node healthy", "timeseries",
              ((f"min by (node_id) ({on_leader(node('vault_autopilot_node_healthy'))})", "{{node_id}}"),)),
        Panel("Raft commit time", "timeseries",
              tuple((f"max({node('vault_raft_commitTime', quantile=q)})", f"p{round(float(q) * 100)}")
                    for q in ("0.5", "0.99")),
              unit="ms"),
        Panel("Request latency", "timeseries",
              tuple((f"max by (node) ({node('vault_core_handle_request', quantile=q)})",
                     f"{{{{node}}}} p{round(float(q) * 100)}")
                    for q in ("0.5", "0.99")), unit="ms",
              steps=(("green", None), ("red", REQUEST_P99_MS))),
        Panel("Requests and logins", "timeseries",
              ((f"sum by (node) (rate({node('vault_core_handle_request_count')}[1m]))", "{{node}} requests"),
               (f"sum by (node) (rate({node('vault_core_handle_login_request_count')}[1m]))", "{{node}} logins")),
              unit="reqps"),
        Panel("Leases", "timeseries",
              ((f"max({on_leader(node('vault_expire_num_leases'))})", "leases"),
               (f"max({on_leader(node('vault_expire_num_irrevocable_leases'))})", "irrevocable"))),
        Panel("Tokens created by auth mount (5m)", "timeseries",
              ((f"sum by (mount_point, creation_ttl) (increase({node('vault_token_creation')}[5m]))",
                "{{mount_point}} ttl {{creation_ttl}}"),),
              description="OpenBao labels token creation by auth mount and TTL, not by role."),
        Panel("Audit failures (5m)", "timeseries",
              ((f"sum by (node) (increase({node('vault_audit_log_request_failure')}[5m]) + "
                f"increase({node('vault_audit_log_response_failure')}[5m]))", "{{node}}"),),
              steps=(("green", None), ("red", 1))),
        Panel("Certificate days left", "timeseries",
              ((f"({selector(CERT_EXPIRY, m)} - time()) / 86400", "{{cert}}"),), unit="d"),
        Panel("Scrape targets up", "timeseries", ((selector("up", m), "{{job}} {{instance}}"),)),
    ]
    return stats + [Panel(p.title, p.kind, p.queries, p.unit, p.description, p.steps, p.text_mode, 12, 8)
                    for p in plots]


def _grid(panels: list[Panel]) -> list[dict[str, int]]:
    """Left to right, wrapping at ``WIDTH``; a row is as tall as its tallest panel."""
    out, x, y, row = [], 0, 0, 0
    for p in panels:
        if x + p.width > WIDTH:
            x, y, row = 0, y + row, 0
        out.append({"x": x, "y": y, "w": p.width, "h": p.height})
        x, row = x + p.width, max(row, p.height)
    return out


def _panel_json(panel: Panel, pid: int, grid: dict[str, int]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.steps:
        defaults["thresholds"] = {"mode": "absolute",
                                  "steps": [{"color": c, "value": v} for c, v in panel.steps]}
        defaults["color"] = {"mode": "thresholds"}
    options: dict[str, Any] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    if panel.kind == "stat":
        options.update({"textMode": panel.text_mode, "colorMode": "background", "graphMode": "none"})
    else:
        options.update({"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi"}})
    return {
        "id": pid, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": dict(DATASOURCE), "gridPos": grid,
        "targets": [{"refId": chr(ord("A") + i), "datasource": dict(DATASOURCE), "expr": expr,
                     "legendFormat": legend, "instant": panel.kind == "stat", "range": panel.kind != "stat"}
                    for i, (expr, legend) in enumerate(panel.queries)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }


def render_dashboard(spec: MeshSpec) -> dict[str, Any]:
    """The dashboard document (``json.dumps`` it, or import it in Grafana: Dashboards > New > Import)."""
    panels = mesh_panels(spec)
    return {
        "uid": f"vaultmesh-{spec.name}",
        "title": f"vaultmesh: {spec.name}",
        "description": f"Mesh {spec.name}: {spec.nodes} nodes over zones {', '.join(spec.zones)}. Rendered by "
                       "`vaultmesh monitoring dashboard`.",
        "tags": ["vaultmesh", "openbao", "raft"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "utc",
        "annotations": {"list": []},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "options": [],
        }]},
        "panels": [_panel_json(p, i + 1, g) for i, (p, g) in enumerate(zip(panels, _grid(panels), strict=True))],
    }


def render_dashboard_json(spec: MeshSpec) -> str:
    return json.dumps(render_dashboard(spec), indent=2) + "\n"
