"""Take a mesh down (stop its processes, keep its data) or destroy it (revoke its leases, stop it, delete its
state dir)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from vaultmesh.api.client import RetryPolicy
from vaultmesh.errors import StateError, VaultmeshError
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle import revoke
from vaultmesh.runtime import processes

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def down(root: Path, *, progress: Progress = _quiet) -> list[str]:
    """Stop the keeper, the entry and the issuer, then every node, then the seal node, by pid, each wave in
    parallel (``runtime.processes.down``); keep all data. Returns what was stopped."""
    with m.locked(root):
        return processes.down(m.open_mesh(root).layout, progress=progress)


def _warn_stderr(line: str) -> None:
    sys.stderr.write(f"warning: {line}\n")


def destroy(root: Path, *, progress: Progress = _quiet, warn: Progress = _warn_stderr,
            revoke_budget: float = revoke.BUDGET) -> revoke.RevokeReport | None:
    """Revoke the mesh's leases (best effort, ``revoke_budget`` seconds), stop it and delete its state dir.

    Refused (nothing touched) when ``root`` is a folder without a vaultmesh ``state.json``: a mistyped
    ``--dir`` must never delete someone's files. A mesh that is stopped, sealed or silent is destroyed anyway;
    ``warn`` gets one line saying what may remain outside it (default: stderr). Returns the revocation report
    (None when there was no mesh).
    """
    if root.exists() and not m.exists(root):
        raise StateError(f"{root} is not a vaultmesh state dir (it holds no state.json); nothing was deleted",
                         hint="check --dir / VAULTMESH_DIR")
    report = None
    if m.exists(root):
        mesh = m.open_mesh(root)  # refuses a state.json that is not a readable vaultmesh one
        layout = mesh.layout
        with m.locked(root):
            report = revoke_leases(mesh, budget=revoke_budget, progress=progress)
        line = report.leftover_line()
        if line:
            warn(line)
        down(root, progress=progress)
        hosted = [n for n in layout.nodes if n.remote is not None]
        if hosted:
            from vaultmesh.hosts import runtime as hosts

            for remote in layout.entry_hosts:
                hosts.remove_entry(remote)
            for node in hosted:  # its service, then the mesh's folder on its host
                assert node.remote is not None
                hosts.remove(node)
                hosts.remove_mesh_dir(node)
                progress(f"removed {node.name} and the mesh's files from {node.remote.where}")
        if any(n.netns for n in layout.nodes):
            from vaultmesh.runtime import netns

            netns.remove(layout)
    if root.exists():
        m.destroy(root)
    return report


def revoke_leases(mesh: m.Mesh, *, budget: float = revoke.BUDGET,
                  progress: Progress = _quiet) -> revoke.RevokeReport:
    """Revoke every lease of a running mesh (see ``lifecycle/revoke.py``); a mesh with no running, unsealed
    node is not waited for."""
    start = time.monotonic()
    running = [n for n in mesh.layout.nodes if processes.node_process(n).pid() is not None]
    if not running:
        return revoke.RevokeReport(False, reason="no node is running")
    try:
        client = mesh.client(retry=RetryPolicy(deadline=budget))
    except VaultmeshError as err:
        return revoke.RevokeReport(False, reason=str(err))
    with client:
        health = []
        for node in running:
            try:
                health.append(client.health(node.api_addr, timeout=min(2.0, budget)))
            except (OSError, ValueError):
                health.append(None)
        if not revoke.serving_nodes(health):
            sealed = any(h and h.get("sealed") for h in health)
            return revoke.RevokeReport(False, reason="every node is sealed" if sealed else
                                       "no node answered its health check")
        progress("revoking the mesh's leases")
        return revoke.revoke_all(client, lambda: m.admin_token(mesh, client),
                                 budget=max(0.5, budget - (time.monotonic() - start)), progress=progress)
