"""Bring a mesh up: create it, or complete or heal it, and return when it is healthy.

One cycle of ``converge`` (Patroni's ``ha.py`` shape): gather a frozen ``MeshView`` carrying the run's own facts
(``RunFacts``: what this run started and restarted, the last error of each node) -> ``decide`` returns the steps
and the reason -> each step's executor does it and returns one sentence saying what it did. Processes are
started through ``runtime.processes``; down, destroy and status live in ``teardown`` and ``status`` (their names
are re-exported here for callers of this module).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.errors import InvalidRequest, NotReady, RuntimeFailure, StateError, VaultmeshError
from vaultmesh.fsutil import read_json, write_atomic, write_json
from vaultmesh.layout import MeshLayout, NodeLayout
from vaultmesh.lifecycle import decide as d
from vaultmesh.lifecycle import keeper_process as keeper
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.mesh import entry_wanted
from vaultmesh.lifecycle.status import address, keeper_json, status, status_json
from vaultmesh.lifecycle.teardown import destroy, down, revoke_leases
from vaultmesh.lifecycle.view import MeshView, RunFacts, gather_view
from vaultmesh.render.node import ADMIN_PASSWORD_ENV, TRANSIT_KEY, bootstrap_requests
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import log_tail, resolve_engine, stop_processes
from vaultmesh.runtime.processes import entry_pid_file
from vaultmesh.spec.models import MeshSpec

__all__ = ["UpResult", "address", "destroy", "down", "entry_pid_file", "entry_wanted", "issuer_pid_file",
           "keeper_json", "revoke_leases", "status", "status_json", "up"]

Progress = Callable[[str], None]

Rescale = Callable[[m.Mesh, int, Progress], m.Mesh]
"""Changes a healthy mesh's node count (its state lock held) and returns it reopened."""

RESCALE: list[Rescale] = []
"""How ``up -f`` with another ``nodes`` changes the node count: ``change.scale``'s executor, the path of
``vaultmesh scale`` (the CLI registers it: lifecycle sits below change and cannot import it)."""


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class UpResult:
    mesh: m.Mesh
    view: MeshView
    created: bool
    seconds: float
    started: tuple[str, ...]


def issuer_pid_file(layout: MeshLayout) -> Path:
    return processes.issuer_process(layout.paths).pid_file


def up(root: Path, spec: MeshSpec | None, spec_text: str, *, engine_override: str | None = None,
       spec_dir: Path | None = None, timeout: float = 120.0, progress: Progress = _quiet) -> UpResult:
    """Create the mesh when ``root`` holds none, else complete or heal it; return when it is healthy."""
    t0 = time.monotonic()
    if engine_override is not None or not m.exists(root):
        resolve_engine(engine_override)  # a wrong engine is refused before anything is written
    with m.locked(root):
        created = False
        rescale_to: int | None = None
        if m.exists(root):
            mesh = m.open_mesh(root)
            if spec is not None and spec_text:
                # another node count is a scale (after the mesh is healthy), not another shape
                m.check_same_lifecycle(mesh, spec.model_copy(update={"nodes": mesh.spec.nodes}))
                if spec.nodes != mesh.spec.nodes and not RESCALE:
                    raise StateError(f"the mesh in {root} has {mesh.spec.nodes} nodes, the file {spec.nodes}",
                                     hint=f"run `vaultmesh scale --nodes {spec.nodes}`")
                rescale_to = spec.nodes if spec.nodes != mesh.spec.nodes else None
                name = m.new_name(mesh, spec)
                if name is not None:
                    was = mesh.spec.name
                    mesh = m.rename(mesh, name)
                    progress(f"renamed the mesh {was} -> {name}: each node reports the new name from its next "
                             "start (the CA keeps its subject)")
        else:
            spec = spec or MeshSpec()
            engine = resolve_engine(engine_override)
            progress(f"creating a {spec.nodes}-node mesh in {root} ({engine.product} {engine.version})")
            mesh = m.create_mesh(root, spec, spec_text, engine=engine_override, spec_dir=spec_dir)
            created = True
        engine_path = resolve_engine(engine_override or mesh.engine).path
        m.render_configs(mesh)
        if any(n.netns for n in mesh.layout.nodes):
            from vaultmesh.runtime import netns

            netns.ensure(mesh.layout)
        hosted = any(n.remote for n in mesh.layout.nodes)
        changed = push_bundles(mesh, progress) if hosted else set()
        if processes.issuer_process(mesh.paths).pid(adopt=True) is None:
            cert, key = m.ensure_identity_cert(mesh)
            pid = processes.start_issuer(mesh.paths, cert, key, mesh.spec.issuer_address)
            progress(f"started the workload identity issuer (pid {pid})")
        ex = Executor(mesh, engine_path, entry_wanted(mesh.spec), progress)
        result = converge(ex, t0, timeout, created)
        for name in sorted(changed - set(ex.started) - ex.restarted - {"entry"}):  # one node at a time
            ex.restart([name], why="its pushed files changed")
            result = converge(ex, time.monotonic(), timeout, created)
        if "entry" in changed and "entry" not in ex.started:
            from vaultmesh.hosts import runtime as hosts

            for remote in mesh.layout.entry_hosts:
                hosts.restart_entry(remote)
            progress("restarted the entry on " + ", ".join(r.host for r in mesh.layout.entry_hosts)
                     + ": its pushed config changed")
            result = converge(ex, time.monotonic(), timeout, created)
        if hosted and (changed or ex.started):
            # node 1's config lost its self-initialisation once the mesh was; the hosts get that copy now (it
            # matters at a start only) and node 1's environment file with the handed password goes
            push_bundles(result.mesh, _quiet, settle=True)
        if rescale_to is not None:
            progress(f"the file says nodes: {rescale_to}; scaling {mesh.spec.nodes} -> {rescale_to}")
            mesh = RESCALE[-1](result.mesh, rescale_to, progress)
            ex = Executor(mesh, engine_path, entry_wanted(mesh.spec), progress)
            result = converge(ex, time.monotonic(), timeout, created)
        if result.mesh.spec.keeper.enabled and keeper.keeper_pid(result.mesh.paths, adopt=True) is None:
            pid = keeper.start_keeper(result.mesh.paths)
            progress(f"started the keeper (pid {pid}): it heals the mesh, reaps what gone workloads left "
                     "behind, and takes the scheduled snapshots")
        return result


def converge(ex: Executor, t0: float, timeout: float, created: bool, *,
             until: Callable[[MeshView], bool] | None = None) -> UpResult:
    """Observe, decide, perform, until the mesh is healthy (``Ready``) or, given ``until``, that holds of a view
    (``scale`` brings one added node up this way: started, unsealed with the Shamir keys or restarted once it
    joined, no write probed)."""
    deadline = t0 + timeout
    said: str | None = None
    while True:
        view = ex.observe(probe_write=until is None)
        if until is not None and until(view):
            return UpResult(ex.mesh, view, created, time.monotonic() - t0, tuple(ex.started))
        decision = d.decide(view, shamir=ex.mesh.spec.seal.type == "shamir",
                            recorded_initialized=ex.mesh.initialized, entry_wanted=ex.want_entry)
        restarts = [s.name for s in decision.steps if isinstance(s, d.Restart)]
        sentences = [ex.restart(restarts)] if restarts else []
        for step in decision.steps:
            if isinstance(step, d.Ready):
                return UpResult(ex.mesh, view, created, time.monotonic() - t0, tuple(ex.started))
            if not isinstance(step, d.Restart):
                sentences.append(ex.perform(step))
        for sentence in sentences:
            if sentence and sentence != said:
                ex.progress(sentence)
                said = sentence
        if time.monotonic() > deadline:
            msg = f"the mesh did not become healthy within {timeout:g} s; still {decision.why}"
            node = ex.node_layout(decision.node)
            if node is not None:
                msg += "\n" + _failed_node_message(node, "is the one being waited for")
            raise NotReady(msg)
        time.sleep(0.1)


@dataclass
class Executor:
    """Performs the steps ``decide`` chose and keeps the run's facts for the next view."""

    mesh: m.Mesh
    engine: str
    want_entry: bool
    progress: Progress
    started: dict[str, float] = field(default_factory=dict)
    restarted: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)
    client: EngineClient = field(init=False)
    seal_client: EngineClient | None = field(init=False)

    def __post_init__(self) -> None:
        layout = self.mesh.layout
        self.client = self.mesh.client(retry=RetryPolicy(deadline=3.0))
        self.seal_client = EngineClient([layout.seal_node.api_addr], ca_file=str(self.mesh.paths.ca_cert)) \
            if layout.seal_node else None

    def observe(self, *, probe_write: bool = True, adopt: bool = True) -> MeshView:
        """The mesh as it is, with this run's facts. ``up`` probes a write and writes lost pid files back; the
        keeper, which looks twice a second, does neither."""
        layout = self.mesh.layout
        entry = processes.entry_process(layout).pid(adopt=adopt) is not None if self.want_entry else None
        facts = RunFacts(frozenset(self.started), frozenset(self.restarted), dict(self.errors))
        return gather_view(layout.nodes, self.client, seal_node=layout.seal_node, entry_running=entry,
                           probe_write=probe_write, entry_addr=layout.entry_addr, adopt=adopt,
                           seal_probe=self._seal_ready if self.seal_client else None, run=facts)

    def engine_for(self, name: str) -> str:
        """The binary a node (or ``seal``) starts on: the one ``upgrade`` moved it to, else the mesh's (a node on
        a host: its host's, ``hosts[].engine``)."""
        node = self.node_layout(name)
        if node is not None and node.remote is not None:
            return m.node_engine(self.mesh.paths, name) or node.remote.engine
        return m.node_engine(self.mesh.paths, name) or self.engine

    def node_layout(self, name: str | None) -> NodeLayout | None:
        layout = self.mesh.layout
        if name == "seal":
            return layout.seal_node
        return next((n for n in layout.nodes if n.name == name), None)

    def perform(self, step: d.Step) -> str | None:
        """Do one step; return one sentence saying what was done (None: nothing worth saying)."""
        mesh, layout = self.mesh, self.mesh.layout
        match step:
            case d.StartSealNode():
                node = layout.seal_node
                assert node is not None
                env = {"VAULTMESH_SEAL_TOKEN": mesh.paths.seal_token.read_text().strip()} \
                    if not (node.data_dir / "vault.db").exists() else None
                pid = processes.start_node(node, self.engine_for("seal"), env)
                self.started["seal"] = time.monotonic()
                return f"started the transit seal node (pid {pid})"
            case d.StartNode(name=name):
                node = layout.node(name)
                env = None
                if not mesh.initialized and name == layout.nodes[0].name:
                    env = {ADMIN_PASSWORD_ENV: mesh.paths.admin_password.read_text().strip()}
                    write_atomic(mesh.paths.admin_password_handed, b"")  # the first login rotates it
                pid = processes.start_node(node, self.engine_for(name), env)
                self.started[name] = time.monotonic()
                return f"started {name} ({node.zone}) on {node.api_addr} (pid {pid})"
            case d.Restart(name=name):
                return self.restart([name])
            case d.StartEntry():
                pid = processes.start_entry(layout)
                self.started["entry"] = time.monotonic()
                return f"started the entry (haproxy) on {layout.entry_addr} (pid {pid})"
            case d.InitShamir():
                return _init_shamir(mesh, self.client)
            case d.Unseal(name=name):
                try:
                    _unseal(mesh, self.client, layout.node(name))
                except InvalidRequest as err:  # decide tries again and gives this as the reason
                    self.errors[name] = str(err)
                    return None
                self.errors.pop(name, None)
                return f"unsealed {name} with the Shamir keys"
            case d.MarkInitialized():
                self.mesh = m.mark_initialized(mesh)
                return "the mesh is initialised: node-1's config no longer carries the self-initialisation"
            case d.Login():
                try:
                    self.client.token = m.admin_token(mesh, self.client)
                except VaultmeshError as err:  # decide tries again and gives this as the reason
                    self.errors["login"] = str(err)
                    return None
                self.errors.pop("login", None)
                return "logged in as the admin"
            case d.Wait(reason=reason, node=node):
                return f"waiting: {node + ': ' if node else ''}{reason}"
            case d.Fail(reason=reason, node=node):
                if node == "entry":
                    raise RuntimeFailure(f"{reason}; last lines of its log:\n"
                                         f"{log_tail(processes.entry_log(layout))}")
                failed = self.node_layout(node)
                raise RuntimeFailure(_failed_node_message(failed, reason) if failed else reason)
        return None

    def restart(self, names: list[str], *, why: str | None = None) -> str:
        """Restart these nodes together (each stop takes about a second); say what was done."""
        self.restarted.update(names)
        nodes = [self.mesh.layout.node(name) for name in names]
        local = [n for n in nodes if n.remote is None]
        stop_processes([processes.node_process(n).pid(adopt=True) for n in local], timeout=10)
        for node in local:
            processes.wait_ports_free(node)
            processes.start_node(node, self.engine_for(node.name))
        for node in nodes:
            if node.remote is not None:
                processes.stop_node(node)
                processes.start_node(node, self.engine_for(node.name))
        if why:
            self.progress(f"restarted {', '.join(names)}: {why}")
            return f"restarted {', '.join(names)}: {why}"
        they = "it" if len(names) == 1 else "they"
        return (f"restarted {', '.join(names)}: {they} joined Raft; a restart unseals {they.replace('they', 'them')} "
                "now instead of on OpenBao's next 5 s retry")

    def _seal_ready(self) -> bool:
        assert self.seal_client is not None
        return seal_ready(self.mesh, self.seal_client)


def seal_ready(mesh: m.Mesh, client: EngineClient) -> bool:
    """The transit seal node serves encrypt for our key with the mesh's seal token (``up`` waits for it before
    the nodes start; ``upgrade`` after it replaced the seal node)."""
    seal = mesh.layout.seal_node
    assert seal is not None
    token = mesh.paths.seal_token.read_text().strip()
    try:
        client.request("POST", f"transit/encrypt/{TRANSIT_KEY}", {"plaintext": "cmVhZHk="},
                       token=token, nodes=[seal.api_addr], retry=RetryPolicy(deadline=0.5))
    except (VaultmeshError, OSError):
        return False
    return True


def _real_value(v: Any, secrets_by_env: dict[str, str]) -> Any:
    if isinstance(v, dict) and v.get("eval_source") == "env":
        return secrets_by_env[v["env_var"]]
    return v


def _init_shamir(mesh: m.Mesh, client: EngineClient) -> str:
    """API initialisation with key shares; keys written once (0600); root token used for bootstrap, then
    revoked. Returns what was done."""
    first = mesh.layout.nodes[0].api_addr
    seal = mesh.spec.seal
    resp = client.request("POST", "sys/init", {"secret_shares": seal.key_shares,
                                               "secret_threshold": seal.key_threshold},
                          token=None, nodes=[first])
    data = resp.data or {}
    write_json(mesh.paths.shamir_keys, {"keys_base64": data["keys_base64"], "threshold": seal.key_threshold})
    _unseal(mesh, client, mesh.layout.nodes[0])
    root = data["root_token"]
    password = mesh.paths.admin_password.read_text().strip()
    for _, op, path, body in bootstrap_requests(mesh.spec):
        payload = {k: _real_value(v, {ADMIN_PASSWORD_ENV: password}) for k, v in body.items()}
        assert op == "update"
        client.request("POST", path, payload, token=root, nodes=[first])
    client.request("POST", "auth/token/revoke-self", {}, token=root, nodes=[first])
    return (f"initialised with Shamir key shares; the unseal keys are written to {mesh.paths.shamir_keys} "
            "(0600): move them somewhere safe; whoever holds them can unseal the mesh")


def _unseal(mesh: m.Mesh, client: EngineClient, node: NodeLayout) -> None:
    try:
        keys = read_json(mesh.paths.shamir_keys)
    except FileNotFoundError:
        raise NotReady(f"{node.name} is sealed and {mesh.paths.shamir_keys} is gone",
                       hint=f"unseal it by hand: BAO_ADDR={node.api_addr} BAO_CACERT={mesh.paths.ca_cert} "
                            "bao operator unseal") from None
    for key in keys["keys_base64"][: keys["threshold"]]:
        client.request("POST", "sys/unseal", {"key": base64.b64decode(key).hex()}, token=None,
                       nodes=[node.api_addr], retry=RetryPolicy(deadline=5.0))


def _failed_node_message(node: NodeLayout, why: str) -> str:
    if node.remote is not None:
        from vaultmesh.hosts import runtime as hosts
        return f"{node.name} {why}; last lines of its log on {node.remote.host}:\n{hosts.log_tail(node)}"
    return f"{node.name} {why}; last lines of {node.log_file}:\n{log_tail(node.log_file)}"


def push_bundles(mesh: m.Mesh, progress: Progress = _quiet, *, settle: bool = False) -> set[str]:
    """``runtime: ssh``: check each host's engine and push each node's bundle (only files whose bytes differ),
    all hosts at once. Returns the nodes whose files changed on their host. ``settle``: the mesh is healthy;
    also remove every node's environment file (only a first start needs one)."""
    import concurrent.futures as cf

    from vaultmesh.hosts import runtime as hosts

    static = mesh.spec.seal.type == "static"
    nodes = [n for n in mesh.layout.nodes if n.remote is not None]

    def one(node: NodeLayout) -> list[str]:
        hosts.engine_version(node, m.node_engine(mesh.paths, node.name))
        written = hosts.push(node, hosts.local_bundle(node, mesh.paths, static_seal=static))
        if settle:
            hosts.forget_env(node)
        return written

    with cf.ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        written = dict(zip([n.name for n in nodes], pool.map(one, nodes), strict=True))
    for node in nodes:
        if written[node.name]:
            assert node.remote is not None
            progress(f"pushed {len(written[node.name])} file(s) of {node.name} to {node.remote.where}")
    changed = {name for name, paths in written.items() if paths}
    for remote in mesh.layout.entry_hosts:
        if hosts.push_entry(remote, m.hosted_entry_config(mesh.paths, remote).read_bytes()):
            progress(f"pushed the entry's config to {remote.where}")
            changed.add("entry")
    return changed
