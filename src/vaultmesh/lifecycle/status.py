"""Read a mesh's status: its view, the address clients should use, and the documented ``status --json``
shape. Queries only: nothing here writes to the state dir (pids are looked up, never adopted)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509

from vaultmesh.api.client import RetryPolicy
from vaultmesh.layout import MeshLayout
from vaultmesh.lifecycle import keeper_process as keeper
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.view import MeshView, NodeView, gather_view
from vaultmesh.runtime import processes


def entry_running(mesh: m.Mesh) -> bool:
    """The entry is wanted (``entry.mode``) and its HAProxy runs."""
    return m.entry_wanted(mesh.spec) and processes.entry_process(mesh.layout).pid() is not None


def status(root: Path) -> tuple[m.Mesh, MeshView, str]:
    """The mesh's view and the address clients should use (the entry when it runs, else the leader)."""
    mesh = m.open_mesh(root)
    client = mesh.client(retry=RetryPolicy(deadline=2.0))
    want_entry = m.entry_wanted(mesh.spec)
    running_entry = processes.entry_process(mesh.layout).pid() is not None if want_entry else None
    view = gather_view(mesh.layout.nodes, client, seal_node=mesh.layout.seal_node, entry_running=running_entry,
                       entry_addr=mesh.layout.entry_addr, login=lambda: m.admin_token(mesh, client))
    return mesh, view, address(mesh, view)


def address(mesh: m.Mesh, view: MeshView | None) -> str:
    """The entry's address while it runs, else the current leader's. Without a ``view`` the nodes' health is
    asked (in parallel, no token) so a failover is followed; node 1 when no node leads."""
    if entry_running(mesh):
        return mesh.layout.entry_addr
    if view is None:
        view = gather_view(mesh.layout.nodes, mesh.client(retry=RetryPolicy(deadline=1.0)))
    if view.leader is not None:
        return view.leader.api_addr
    return mesh.layout.nodes[0].api_addr


def _node_json(n: NodeView) -> dict[str, Any]:
    return {"name": n.name, "zone": n.zone, "api_addr": n.api_addr, "pid": n.pid, "sealed": n.sealed,
            "leader": n.leader, "voter": n.voter, "healthy": n.healthy, "running": n.running, "error": n.error,
            "version": n.version}


def _host(mesh: m.Mesh, name: str) -> str | None:
    """The host a node runs on (``runtime: ssh``; its ``pid`` is that host's); None: this machine."""
    node = next((n for n in mesh.layout.nodes if n.name == name), None)
    return node.remote.host if node is not None and node.remote is not None else None


def status_json(mesh: m.Mesh, view: MeshView, addr: str) -> dict[str, Any]:
    """The documented shape other tooling depends on (extra keys allowed, these never change)."""
    leader = view.leader
    seal = view.seal_node
    return {
        "healthy": view.healthy,
        "address": addr,
        "leader": leader.name if leader else None,
        "nodes": [{**_node_json(n), "host": _host(mesh, n.name)} for n in view.nodes],
        "entry": {"address": mesh.layout.entry_addr if view.entry_running is not None else None,
                  "running": view.entry_running, "routing": view.entry_routing},
        "failure_tolerance": view.failure_tolerance,
        "seal": mesh.spec.seal.type,
        "seal_node": None if seal is None else {
            "api_addr": seal.api_addr, "pid": seal.pid, "running": seal.running, "sealed": seal.sealed,
            "healthy": view.seal_node_serving, "error": seal.error},
        "ca_cert": str(mesh.paths.ca_cert),
        "keeper": keeper_json(mesh),
        "certificates": {"soonest": soonest_certificate(mesh.layout)},
        "monitoring": {**monitoring_json(mesh), **alertmanager_json(mesh)},
    }


DASHBOARD_PATH = "/dashboard"
"""Where the keeper serves its dashboard page, on its ``/metrics`` listener (``keeper.page``)."""


def dashboard_url(metrics: str | None) -> str | None:
    """The dashboard page beside the keeper's ``/metrics`` address (None without one)."""
    if not metrics or not metrics.endswith("/metrics"):
        return None
    return metrics.removesuffix("/metrics") + DASHBOARD_PATH


def monitoring_json(mesh: m.Mesh) -> dict[str, Any]:
    """The Prometheus the keeper runs: its URL while it runs (HTTPS, the mesh CA), else why not; the keeper's
    dashboard page while the keeper runs (it shows what the keeper knows without Prometheus too). A query."""
    from vaultmesh.fsutil import read_json
    from vaultmesh.runtime.processes import prometheus_process

    try:
        record = read_json(mesh.paths.prometheus_record)
    except (OSError, ValueError):
        record = {}
    running = prometheus_process(mesh.paths).pid() is not None
    kept = keeper.read_status(mesh.paths) if keeper.keeper_pid(mesh.paths) is not None else None
    reason = record.get("reason") if isinstance(record, dict) else None
    if mesh.spec.monitoring.mode == "none":
        reason = "monitoring: none in the mesh file"
    elif not mesh.spec.keeper.enabled:
        reason = "the keeper runs Prometheus, and keeper: false"
    return {"mode": mesh.spec.monitoring.mode, "running": running,
            "prometheus_url": record.get("url") if running and isinstance(record, dict) else None,
            "dashboard_url": dashboard_url(kept.metrics if kept else None), "reason": None if running else reason}


def soonest_certificate(layout: MeshLayout, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """The certificate of the mesh that ends first, by its file (``certs status`` asks the listeners): name,
    not_after (ISO 8601), days_left; None when no file can be read."""
    paths = layout.paths
    files = {n.name: n.cert_file for n in layout.nodes}
    if layout.seal_node is not None:
        files["seal"] = layout.seal_node.cert_file
    files.update({"identity": paths.identity_cert, "keeper": paths.keeper_cert, "ca": paths.ca_cert})
    ends = {}
    for name, path in files.items():
        try:
            ends[name] = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
        except (OSError, ValueError):
            continue
    if not ends:
        return None
    name = min(ends, key=lambda k: ends[k])
    left = (ends[name] - (now or dt.datetime.now(dt.UTC))).total_seconds() / 86400
    return {"name": name, "not_after": ends[name].isoformat().replace("+00:00", "Z"), "days_left": round(left, 2)}


def _yes_no(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


STATUS_COLUMNS = ("node", "zone", "address", "pid", "sealed", "role", "voter", "healthy")


def status_rows(view: MeshView) -> list[tuple[str, ...]]:
    """The rows of the ``status`` table, one per node and one for the transit seal node (role ``seal``),
    in ``STATUS_COLUMNS`` order; ``healthy`` is ``yes`` or ``no``; a node that answers shows its engine version
    with its role (``leader 2.7.2``). For the CLI to render."""
    rows = []
    for n in view.nodes:
        role = "leader" if n.leader else ("standby" if n.reachable else (n.error or "down"))
        version = getattr(n, "version", None)  # duck-typed views (tests, older callers) may lack it
        if n.reachable and version:
            role += f" {version}"
        rows.append((n.name, n.zone, n.api_addr, str(n.pid or "-"), _yes_no(n.sealed), role, _yes_no(n.voter),
                     _yes_no(n.healthy)))
    seal = view.seal_node
    if seal is not None:
        role = "seal" if seal.reachable else (seal.error or "down")
        rows.append(("seal", seal.zone, seal.api_addr, str(seal.pid or "-"), _yes_no(seal.sealed), role, "-",
                     _yes_no(view.seal_node_serving)))
    return rows


def keeper_json(mesh: m.Mesh) -> dict[str, Any]:
    pid = keeper.keeper_pid(mesh.paths)
    record = keeper.read_status(mesh.paths)
    return {"enabled": mesh.spec.keeper.enabled, "running": pid is not None, "pid": pid,
            "summary": keeper.describe(record, pid is not None),
            **({"cycle_at": record.cycle_at, "healthy_since": record.healthy_since, "revoked": record.revoked,
                "last_error": record.last_error, "recent": record.recent, "over_budget": record.over_budget}
               if record else {})}


def alertmanager_json(mesh: m.Mesh) -> dict[str, Any]:
    """The Alertmanager the keeper runs for ``monitoring.alerts``: its URL while it runs (HTTPS, the mesh CA),
    else why not (None when no receiver is named). A query."""
    from vaultmesh.fsutil import read_json
    from vaultmesh.runtime.processes import alertmanager_process

    try:
        record = read_json(mesh.paths.alertmanager_record)
    except (OSError, ValueError):
        record = {}
    record = record if isinstance(record, dict) else {}
    running = mesh.spec.monitoring.alerts is not None and alertmanager_process(mesh.paths).pid() is not None
    reason = record.get("reason") or "the keeper has not started it (yet)"
    if mesh.spec.monitoring.mode == "none":
        reason = "monitoring: none in the mesh file"
    elif not mesh.spec.keeper.enabled:
        reason = "the keeper runs Alertmanager, and keeper: false"
    if running or mesh.spec.monitoring.alerts is None:
        reason = None
    return {"alertmanager_url": record.get("url") if running else None, "alertmanager_reason": reason}
