"""Bring a mesh up (create, complete or heal it), take it down, and read its status."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultmesh.engine.client import EngineClient, RetryPolicy
from vaultmesh.errors import InvalidRequest, NotReady, RuntimeFailure, StateError, VaultmeshError
from vaultmesh.fsutil import read_json, write_atomic, write_json
from vaultmesh.layout import MeshLayout, NodeLayout
from vaultmesh.lifecycle import decide as d
from vaultmesh.lifecycle import keeper_process as keeper
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle import revoke
from vaultmesh.lifecycle.view import MeshView, gather_view
from vaultmesh.render.node import ADMIN_PASSWORD_ENV, TRANSIT_KEY, bootstrap_requests
from vaultmesh.runtime.local import (
    KMS_ENV,
    check_ports_free,
    log_tail,
    resolve_engine,
    start_process,
    stop_process,
    tracked_pid,
)
from vaultmesh.spec.models import MeshSpec

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class UpResult:
    mesh: m.Mesh
    view: MeshView
    created: bool
    seconds: float
    started: tuple[str, ...]


def entry_wanted(spec: MeshSpec) -> bool:
    if spec.entry.mode == "none":
        return False
    found = shutil.which("haproxy") is not None
    if spec.entry.mode == "haproxy" and not found:
        raise RuntimeFailure("entry.mode is haproxy but no haproxy binary is on PATH",
                             hint="apt-get install haproxy, or set entry.mode: auto")
    return found


def entry_pid_file(layout: MeshLayout) -> Path:
    return layout.paths.entry_dir / "haproxy.pid"


def entry_running(layout: MeshLayout) -> bool:
    return tracked_pid(entry_pid_file(layout), str(layout.paths.entry_dir / "haproxy.cfg")) is not None


def _start_node(node: NodeLayout, engine: str, env: dict[str, str] | None = None) -> int:
    prefix: list[str] = []
    if node.netns:  # runtime: netns: the node's own namespace, whose ports are its own
        from vaultmesh.runtime.netns import exec_prefix

        prefix = exec_prefix(node)
    else:
        check_ports_free({f"{node.name} api": node.api_port, f"{node.name} cluster": node.cluster_port})
    return start_process([*prefix, engine, "server", f"-config={node.config_file}"], cwd=node.dir,
                         log_file=node.log_file, pid_file=node.pid_file, env=env, inherit=KMS_ENV)


def _start_entry(layout: MeshLayout) -> int:
    cfg = layout.paths.entry_dir / "haproxy.cfg"
    check_ports_free({"entry": layout.entry_port})
    haproxy = shutil.which("haproxy") or "haproxy"
    return start_process([haproxy, "-db", "-f", str(cfg)], cwd=layout.paths.entry_dir,
                         log_file=layout.paths.entry_dir / "haproxy.log", pid_file=entry_pid_file(layout))


def issuer_pid_file(layout: MeshLayout) -> Path:
    return layout.paths.issuer_pid


def issuer_cert_file(layout: MeshLayout) -> Path:
    return layout.paths.identity_cert


def issuer_running(layout: MeshLayout) -> bool:
    return tracked_pid(issuer_pid_file(layout), str(issuer_cert_file(layout))) is not None


def _start_issuer(mesh: m.Mesh) -> int:
    """The workload identity issuer (OIDC discovery + JWKS over the mesh's TLS), a managed process like the
    entry. Its port is kept across restarts (identity/issuer.json), so JWT auth configs stay valid."""
    import sys

    cert, key = m.ensure_identity_cert(mesh)
    root = mesh.paths.root
    return start_process([sys.executable, "-m", "vaultmesh.cli.main", "--dir", str(root), "identity", "serve",
                          "--cert", str(cert), "--key", str(key)], cwd=mesh.paths.identity_dir,
                         log_file=mesh.paths.issuer_log, pid_file=issuer_pid_file(mesh.layout))


def _seal_ready(mesh: m.Mesh, client: EngineClient) -> bool:
    """The transit seal node serves encrypt for our key with the mesh's seal token."""
    assert mesh.layout.seal_node is not None
    token = mesh.paths.seal_token.read_text().strip()
    with contextlib.suppress(VaultmeshError, OSError):
        client.request("POST", f"transit/encrypt/{TRANSIT_KEY}", {"plaintext": "cmVhZHk="}, token=token,
                       nodes=[mesh.layout.seal_node.api_addr], retry=RetryPolicy(deadline=0.5))
        return True
    return False


def _real_value(v: Any, secrets_by_env: dict[str, str]) -> Any:
    if isinstance(v, dict) and v.get("eval_source") == "env":
        return secrets_by_env[v["env_var"]]
    return v


def _init_shamir(mesh: m.Mesh, client: EngineClient, progress: Progress) -> None:
    """API initialisation with key shares; keys written once (0600); root token used for bootstrap, then
    revoked."""
    first = mesh.layout.nodes[0].api_addr
    seal = mesh.spec.seal
    resp = client.request("POST", "sys/init", {"secret_shares": seal.key_shares,
                                               "secret_threshold": seal.key_threshold},
                          token=None, nodes=[first])
    data = resp.data or {}
    write_json(mesh.paths.shamir_keys, {"keys_base64": data["keys_base64"], "threshold": seal.key_threshold})
    progress(f"Shamir unseal keys written to {mesh.paths.shamir_keys} (0600): move them somewhere safe; "
             "whoever holds them can unseal the mesh")
    _unseal(mesh, client, mesh.layout.nodes[0])
    root = data["root_token"]
    password = mesh.paths.admin_password.read_text().strip()
    for _, op, path, body in bootstrap_requests(mesh.spec):
        payload = {k: _real_value(v, {ADMIN_PASSWORD_ENV: password}) for k, v in body.items()}
        assert op == "update"
        client.request("POST", path, payload, token=root, nodes=[first])
    client.request("POST", "auth/token/revoke-self", {}, token=root, nodes=[first])


def _unseal(mesh: m.Mesh, client: EngineClient, node: NodeLayout) -> None:
    try:
        keys = read_json(mesh.paths.shamir_keys)
    except FileNotFoundError:
        raise NotReady(f"{node.name} is sealed and {mesh.paths.shamir_keys} is gone",
                       hint=f"unseal it by hand: BAO_ADDR={node.api_addr} bao operator unseal") from None
    for key in keys["keys_base64"][: keys["threshold"]]:
        client.request("POST", "sys/unseal", {"key": base64.b64decode(key).hex()}, token=None,
                       nodes=[node.api_addr], retry=RetryPolicy(deadline=5.0))


def _failed_node_message(node: NodeLayout, why: str) -> str:
    return f"{node.name} {why}; last lines of {node.log_file}:\n{log_tail(node.log_file)}"


def up(root: Path, spec: MeshSpec | None, spec_text: str, *, engine_override: str | None = None,
       spec_dir: Path | None = None, timeout: float = 120.0, progress: Progress = _quiet) -> UpResult:
    """Create the mesh when ``root`` holds none, else complete or heal it; return when it is healthy."""
    t0 = time.monotonic()
    if engine_override is not None or not m.exists(root):
        resolve_engine(engine_override)  # a wrong engine is refused before anything is written
    with m.locked(root):
        created = False
        if m.exists(root):
            mesh = m.open_mesh(root)
            if spec is not None and spec_text:
                m.check_same_lifecycle(mesh, spec)
        else:
            spec = spec or MeshSpec()
            engine = resolve_engine(engine_override)
            progress(f"creating a {spec.nodes}-node mesh in {root} ({engine.product} {engine.version})")
            mesh = m.create_mesh(root, spec, spec_text, engine=engine_override, spec_dir=spec_dir)
            created = True
        engine_path = resolve_engine(engine_override or mesh.engine).path
        want_entry = entry_wanted(mesh.spec)
        m.render_configs(mesh)
        if any(n.netns for n in mesh.layout.nodes):
            from vaultmesh.runtime import netns

            netns.ensure(mesh.layout)
        if not issuer_running(mesh.layout):
            progress("starting the workload identity issuer")
            _start_issuer(mesh)
        result = _converge(mesh, engine_path, want_entry, t0, timeout, created, progress)
        if result.mesh.spec.keeper.enabled and keeper.keeper_pid(result.mesh.paths) is None:
            progress("starting the keeper (reaps what workloads that are gone left behind)")
            keeper.start_keeper(result.mesh.paths)
        return result


def _converge(mesh: m.Mesh, engine: str, want_entry: bool, t0: float, timeout: float, created: bool,
              progress: Progress) -> UpResult:
    layout = mesh.layout
    client = mesh.client(retry=RetryPolicy(deadline=3.0))
    seal_client = EngineClient([layout.seal_node.api_addr], ca_file=str(mesh.paths.ca_cert)) \
        if layout.seal_node else None
    started: dict[str, float] = {}
    restarted: set[str] = set()
    deadline = t0 + timeout
    last_wait: d.Wait | None = None
    while True:
        view = gather_view(layout.nodes, client, seal_node=layout.seal_node,
                           entry_running=entry_running(layout) if want_entry else None, probe_write=True,
                           entry_addr=layout.entry_addr)
        if view.seal_node is not None and view.seal_node.sealed is False and seal_client is not None \
                and not _seal_ready(mesh, seal_client):
            view = dataclasses.replace(view, seal_node=dataclasses.replace(view.seal_node, sealed=None))
        steps = d.decide(view, shamir=mesh.spec.seal.type == "shamir", recorded_initialized=mesh.initialized,
                         entry_wanted=want_entry)
        for step in steps:
            match step:
                case d.Ready():
                    return UpResult(mesh, view, created, time.monotonic() - t0, tuple(started))
                case d.StartSealNode():
                    node = layout.seal_node
                    assert node is not None
                    _guard_restart(started, "seal", node)
                    env = {"VAULTMESH_SEAL_TOKEN": mesh.paths.seal_token.read_text().strip()} \
                        if not (node.data_dir / "vault.db").exists() else None
                    progress("starting the transit seal node")
                    _start_node(node, engine, env)
                case d.StartNode(name=name):
                    node = layout.node(name)
                    _guard_restart(started, name, node)
                    env = None
                    if not mesh.initialized and name == layout.nodes[0].name:
                        env = {ADMIN_PASSWORD_ENV: mesh.paths.admin_password.read_text().strip()}
                        write_atomic(mesh.paths.admin_password_handed, b"")  # the first login rotates it
                    progress(f"starting {name} ({node.zone}) on {node.api_addr}")
                    _start_node(node, engine, env)
                case d.Restart(name=name):
                    if name not in restarted:
                        restarted.add(name)
                        node = layout.node(name)
                        progress(f"restarting {name}: it joined Raft; a restart unseals it now instead of on "
                                 "OpenBao's next 5 s retry")
                        stop_process(tracked_pid(node.pid_file, str(node.config_file)), timeout=10)
                        _start_node(node, engine)
                case d.StartEntry():
                    if "entry" in started:
                        raise RuntimeFailure("the entry (haproxy) exited right after start; last lines of "
                                             f"its log:\n{log_tail(layout.paths.entry_dir / 'haproxy.log')}")
                    started["entry"] = time.monotonic()
                    progress(f"starting the entry (haproxy) on {layout.entry_addr}")
                    _start_entry(layout)
                case d.InitShamir():
                    progress("initialising with Shamir key shares")
                    _init_shamir(mesh, client, progress)
                case d.Unseal(name=name):
                    try:
                        _unseal(mesh, client, layout.node(name))
                        progress(f"unsealed {name} with the Shamir keys")
                    except InvalidRequest as err:
                        # a joining node takes keys only once its retry_join has fetched the challenge
                        if "not initialized" not in str(err):
                            raise
                case d.MarkInitialized():
                    mesh = m.mark_initialized(mesh)
                case d.Login():
                    with contextlib.suppress(VaultmeshError):
                        client.token = m.admin_token(mesh, client)
                case d.Wait():
                    if step != last_wait:
                        who = f"{step.node}: " if step.node else ""
                        progress(f"waiting: {who}{step.reason}")
                        last_wait = step
        _check_started_alive(mesh, started)
        if time.monotonic() > deadline:
            wait = next((s for s in steps if isinstance(s, d.Wait)), None)
            why = f"{wait.node + ': ' if wait and wait.node else ''}{wait.reason if wait else 'unknown'}"
            msg = f"the mesh did not become healthy within {timeout:g} s; still {why}"
            if wait and wait.node and wait.node != "seal":
                msg += "\n" + _failed_node_message(layout.node(wait.node), "is the one being waited for")
            raise NotReady(msg)
        time.sleep(0.1)


def _guard_restart(started: dict[str, float], name: str, node: NodeLayout) -> None:
    """A node started in this run that died again is a failure to report, not something to loop on."""
    if name in started:
        raise RuntimeFailure(_failed_node_message(node, "exited right after it was started"))
    started[name] = time.monotonic()


def _check_started_alive(mesh: m.Mesh, started: dict[str, float]) -> None:
    for name in started:
        if name == "entry":
            continue
        node = mesh.layout.seal_node if name == "seal" else mesh.layout.node(name)
        assert node is not None
        if tracked_pid(node.pid_file, str(node.config_file)) is None:
            raise RuntimeFailure(_failed_node_message(node, "exited right after it was started"))


def down(root: Path, *, progress: Progress = _quiet) -> list[str]:
    """Stop the keeper, the entry, the issuer, every node, then the seal node, by pid; keep all data. Returns
    what was stopped."""
    with m.locked(root):
        layout = m.open_mesh(root).layout
        processes = [("keeper", layout.paths.keeper_pid, keeper.marker(layout.paths)),
                     ("entry", entry_pid_file(layout), str(layout.paths.entry_dir / "haproxy.cfg")),
                     ("identity issuer", issuer_pid_file(layout), str(issuer_cert_file(layout)))]
        processes += [(n.name, n.pid_file, str(n.config_file)) for n in reversed(layout.nodes)]
        if layout.seal_node:
            processes.append(("seal", layout.seal_node.pid_file, str(layout.seal_node.config_file)))
        stopped = []
        for name, pid_file, marker in processes:
            pid = tracked_pid(pid_file, marker)
            if pid is not None:
                progress(f"stopping {name} (pid {pid})")
                stop_process(pid, sig=signal.SIGTERM, timeout=15)
                stopped.append(name)
        return stopped


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
    running = [n for n in mesh.layout.nodes if tracked_pid(n.pid_file, str(n.config_file)) is not None]
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


def status(root: Path) -> tuple[m.Mesh, MeshView, str]:
    """The mesh's view and the address clients should use (the entry when it runs, else the leader)."""
    mesh = m.open_mesh(root)
    client = mesh.client(retry=RetryPolicy(deadline=2.0))
    want_entry = entry_wanted(mesh.spec)
    running_entry = entry_running(mesh.layout) if want_entry else None
    view = gather_view(mesh.layout.nodes, client, seal_node=mesh.layout.seal_node, entry_running=running_entry,
                       entry_addr=mesh.layout.entry_addr, login=lambda: m.admin_token(mesh, client))
    return mesh, view, address(mesh, view)


def address(mesh: m.Mesh, view: MeshView | None) -> str:
    if entry_running(mesh.layout):
        return mesh.layout.entry_addr
    if view is not None and view.leader is not None:
        return view.leader.api_addr
    return mesh.layout.nodes[0].api_addr


def status_json(mesh: m.Mesh, view: MeshView, addr: str) -> dict[str, Any]:
    """The documented shape other tooling depends on (extra keys allowed, these never change)."""
    leader = view.leader
    return {
        "healthy": view.healthy,
        "address": addr,
        "leader": leader.name if leader else None,
        "nodes": [{"name": n.name, "zone": n.zone, "api_addr": n.api_addr, "pid": n.pid,
                   "sealed": n.sealed, "leader": n.leader, "voter": n.voter, "healthy": n.healthy,
                   "running": n.running, "error": n.error}
                  for n in view.nodes],
        "entry": {"address": mesh.layout.entry_addr, "running": view.entry_running,
                  "routing": view.entry_routing},
        "failure_tolerance": view.failure_tolerance,
        "seal": mesh.spec.seal.type,
        "ca_cert": str(mesh.paths.ca_cert),
        "keeper": keeper_json(mesh),
    }


def keeper_json(mesh: m.Mesh) -> dict[str, Any]:
    pid = keeper.keeper_pid(mesh.paths)
    record = keeper.read_status(mesh.paths)
    return {"enabled": mesh.spec.keeper.enabled, "running": pid is not None, "pid": pid,
            "summary": keeper.describe(record, pid is not None),
            **({"cycle_at": record.cycle_at, "healthy_since": record.healthy_since, "revoked": record.revoked,
                "last_error": record.last_error, "recent": record.recent, "over_budget": record.over_budget}
               if record else {})}
