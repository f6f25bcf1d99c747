"""A mesh on disk: create its state dir once, open it later, and get an admin client for it."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from vaultmesh import __version__, pki
from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.errors import EngineError, RuntimeFailure, StateError
from vaultmesh.fsutil import ensure_dir, read_json, write_atomic, write_json
from vaultmesh.layout import (
    ADMIN_USER,
    REMOTE_BASE,
    STATE_FORMAT,
    MeshLayout,
    NodeLayout,
    Remote,
    StatePaths,
    build_layout,
)
from vaultmesh.render.entry import render_entry_config
from vaultmesh.render.node import DEFAULT_AUDIT, AuditDevice, render_hosted_config, render_seal_node_config
from vaultmesh.runtime.local import check_ports_free, free_ports
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.models import LifecycleSpec, MeshSpec, node_host, zone_layout


@dataclass(frozen=True)
class Mesh:
    """Everything known about a mesh without asking it: spec, layout, engine path, bootstrap facts."""

    spec: MeshSpec
    layout: MeshLayout
    engine: str | None
    """The engine binary chosen at creation (None: the pinned bao); ``--engine`` overrides per command."""
    initialized: bool
    state: dict[str, Any]

    @property
    def paths(self) -> StatePaths:
        return self.layout.paths

    @property
    def node_addrs(self) -> list[str]:
        return [n.api_addr for n in self.layout.nodes]

    def client(self, token: str | None = None, *, retry: RetryPolicy | None = None) -> EngineClient:
        """A client that fails over across every node of the mesh."""
        return EngineClient(self.node_addrs, ca_file=str(self.paths.ca_cert), token=token,
                            retry=retry or RetryPolicy())


def _lifecycle_view(spec: MeshSpec) -> dict[str, Any]:
    return LifecycleSpec.model_validate(
        {k: v for k, v in spec.model_dump().items() if k in LifecycleSpec.model_fields}).model_dump()


REMOTE_API_PORT = 8200
"""``runtime: ssh``: each host's node listens on its own address at 8200 (API) and 8201 (cluster), OpenBao's own
ports, unless ``ports.base`` says otherwise."""

LOCK_WAIT = 15.0
"""Seconds a command waits for the state lock: long enough for a keeper's heal step (a node restart, ~1 s)."""


@contextlib.contextmanager
def locked(root: Path, *, wait: float = LOCK_WAIT) -> Iterator[None]:
    """One vaultmesh command (or keeper action) at a time changes a state dir; wait up to ``wait`` seconds
    for the one holding it (the keeper passes 0: it never waits, it skips its turn)."""
    ensure_dir(root)
    with open(os.open(StatePaths(root).lock_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        end = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= end:
                    raise StateError(f"another vaultmesh command is working on {root}",
                                     hint="wait for it to finish") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def exists(root: Path) -> bool:
    return StatePaths(root).state_file.exists()


def open_mesh(root: Path) -> Mesh:
    """Read a mesh's state dir. Raises StateError when it is missing, corrupt or from a newer vaultmesh."""
    paths = StatePaths(root)
    if not paths.state_file.exists():
        raise StateError(f"no mesh in {root}", hint="run `vaultmesh up` to create one, or pass --dir")
    try:
        state = read_json(paths.state_file)
        fmt = int(state["format"])
    except (ValueError, KeyError, TypeError) as err:
        raise StateError(f"{paths.state_file} is corrupt ({err})",
                         hint="restore it from a backup, or `vaultmesh destroy --yes` and start over") from None
    if fmt > STATE_FORMAT:
        raise StateError(f"{root} was made by a newer vaultmesh (state format {fmt}, this one reads up to "
                         f"{STATE_FORMAT}; made by {state.get('vaultmesh_version', '?')})",
                         hint="upgrade vaultmesh")
    try:
        text = paths.spec_file.read_text()
    except FileNotFoundError:
        raise StateError(f"{paths.spec_file} is missing", hint="restore it, or destroy and recreate") from None
    spec = parse_spec(text, source=str(paths.spec_file), base_dir=Path(state.get("spec_dir") or root))
    count = node_count(state["ports"], transit_seal=spec.seal.type == "transit")
    if count != spec.nodes:  # a scale part-way (or done, before the mesh file said so): the ports say how many
        spec = spec.model_copy(update={"nodes": count})
    layout = build_layout(spec.name, root, zone_layout(spec), state["ports"],
                          transit_seal=spec.seal.type == "transit", netns=_netns_of(state),
                          remotes=remotes_of(spec, state), entry_hosts=tuple(spec.entry.hosts))
    return Mesh(spec, layout, state.get("engine"), bool(state.get("initialized")), state)


def remotes_of(spec: MeshSpec, state: dict[str, Any]) -> tuple[Remote, ...]:
    """The hosts of a ``runtime: ssh`` mesh, node i on host i; its folder name on every host is recorded in
    ``state.json`` at creation (so a renamed mesh keeps its files). Relative key paths are the mesh file's."""
    rec = state.get("ssh")
    if spec.runtime != "ssh" or not rec:
        return ()
    base = Path(state.get("spec_dir") or ".")

    def local(path: str) -> Path:
        found = Path(path).expanduser()
        return found if found.is_absolute() else base / found

    return tuple(
        Remote(h.name, h.address, Path(h.root), h.service, h.engine, h.run_as, h.ssh.user, h.ssh.port,
               local(h.ssh.key_file), local(h.ssh.known_hosts), Path(h.root) / REMOTE_BASE / str(rec["dir"]))
        for h in (node_host(spec, i) for i in range(spec.nodes)))


def node_count(ports: list[int], *, transit_seal: bool) -> int:
    """How many nodes a ``state.json`` ports list lays out: api and cluster per node, the entry, then the seal
    node's two when the seal is transit."""
    return (len(ports) - 1 - (2 if transit_seal else 0)) // 2


def resized_ports(ports: list[int], old: int, n: int, new: list[int]) -> list[int]:
    """The ports list of an ``old``-node mesh laid out for ``n`` nodes: the first nodes keep theirs, ``new``
    (two per added node) go to the added ones, the entry and seal node keep theirs. Pure."""
    keep = ports[: 2 * min(old, n)]
    if len(new) != 2 * max(0, n - old):
        raise ValueError(f"need {2 * max(0, n - old)} new ports, got {len(new)}")
    return [*keep, *new, *ports[2 * old:]]


def resize(mesh: Mesh, n: int) -> Mesh:
    """Lay the mesh out for ``n`` nodes in ``state.json``: new ports and a certificate (from the mesh CA) for
    each added node, the ports of removed nodes dropped (call it for fewer nodes only once they are gone); every
    config re-rendered (each node's retry_join lists every peer, the entry's backends every node). The mesh file
    keeps its ``nodes`` line (``record_nodes`` once the change is done)."""
    old = len(mesh.layout.nodes)
    if n == old:
        return mesh
    state = read_json(mesh.paths.state_file)
    taken = set(state["ports"])
    new = [p for p in free_ports(2 * max(0, n - old) + len(taken)) if p not in taken][: 2 * max(0, n - old)]
    ports = resized_ports(list(state["ports"]), old, n, new)
    if n > old:
        spec = mesh.spec.model_copy(update={"nodes": n})
        layout = build_layout(spec.name, mesh.paths.root, zone_layout(spec), ports,
                              transit_seal=spec.seal.type == "transit", netns=_netns_of(state))
        added = layout.nodes[old:]
        check_ports_free({k: v for k, v in port_names(layout).items() if k.split(" ")[0] in
                          {x.name for x in added}})
        ca = pki.CertPair(mesh.paths.ca_cert.read_bytes(), mesh.paths.ca_key.read_bytes())
        for node in added:
            _node_dirs_and_cert(node, ca, mesh.spec, dt.datetime.now(dt.UTC))
    write_json(mesh.paths.state_file, {**state, "ports": ports})
    mesh = open_mesh(mesh.paths.root)
    render_configs(mesh)
    return mesh


_NODES_LINE = re.compile(r"^nodes:[^\n]*$", re.M)


def renodes_text(text: str, n: int) -> str:
    """The mesh file ``text`` with ``n`` nodes: its top-level ``nodes:`` line replaced, or one added; every
    other line kept as it was. Pure."""
    line = f"nodes: {n}"
    return _NODES_LINE.sub(line, text, count=1) if _NODES_LINE.search(text) else f"{text.rstrip()}\n{line}\n"


def record_nodes(mesh: Mesh, n: int) -> Mesh:
    """The mesh file in the state dir says ``nodes: n`` (a scale is done)."""
    paths = mesh.paths
    text = paths.spec_file.read_text()
    if parse_spec(text, source=str(paths.spec_file)).nodes != n:
        write_atomic(paths.spec_file, renodes_text(text, n).encode())
    return open_mesh(paths.root)


def _node_dirs_and_cert(node: NodeLayout, ca: pki.CertPair, spec: MeshSpec, now: dt.datetime,
                        also: tuple[str, ...] = ()) -> None:
    """A node's folders and its TLS certificate from the mesh CA (kept when it is there already); ``also``: more
    addresses it is reached at (the entry hosts': the entry passes TLS through, so clients that dial an entry on
    a host check the active node's certificate for that host's address)."""
    ensure_dir(node.dir.parent)
    ensure_dir(node.dir)
    ensure_dir(node.data_dir)
    if node.cert_file.exists() and node.key_file.exists():
        return
    dns, ips = pki.node_cert_names(node.name)
    for address in (node.host, *also):  # a netns or hosted node's own address, the entry hosts'
        if address not in ips:
            ips = [*ips, address]
    pair = pki.issue_server_cert(ca, node.name, dns_names=dns, ip_addresses=ips, now=now, days=spec.tls.cert_days)
    write_atomic(node.cert_file, pair.cert_pem, mode=0o644)
    write_atomic(node.key_file, pair.key_pem)


def _netns_of(state: dict[str, Any]) -> tuple[str, int] | None:
    """(id, octet) of a ``runtime: netns`` mesh, recorded in state.json at creation."""
    rec = state.get("netns")
    return (str(rec["id"]), int(rec["octet"])) if rec else None


def check_same_lifecycle(mesh: Mesh, spec: MeshSpec) -> None:
    """``up -f`` on an existing mesh must not silently change its shape. Its name may change (``rename``): a
    label, which OpenBao takes from each node's config when the node starts."""
    old, new = _lifecycle_view(mesh.spec), _lifecycle_view(spec)
    changed = sorted(k for k in old if k != "name" and old[k] != new[k])
    if changed:
        raise StateError(f"the mesh in {mesh.paths.root} was created with different {', '.join(changed)}",
                         hint="changing the shape of an existing mesh is not supported yet; use another --dir "
                              "or `vaultmesh destroy --yes` first")


def new_name(mesh: Mesh, spec: MeshSpec) -> str | None:
    """The name ``spec`` gives the mesh when it is another than the mesh's; None when the file keeps it or
    names none (a file without ``name`` never renames a mesh to the default)."""
    if "name" not in spec.model_fields_set or spec.name == mesh.spec.name:
        return None
    return spec.name


_NAME_LINE = re.compile(r"^name:[^\n]*$", re.M)


def renamed_text(text: str, name: str) -> str:
    """The mesh file ``text`` naming the mesh ``name``: its top-level ``name:`` line replaced, or one put first;
    every other line kept as it was (comments too). Pure."""
    line = f"name: {name}"
    return _NAME_LINE.sub(line, text, count=1) if _NAME_LINE.search(text) else f"{line}\n{text}"


def rename(mesh: Mesh, name: str) -> Mesh:
    """Give the mesh ``name``: its mesh file and ``state.json`` record it, and every node config rendered from
    here on carries it as ``cluster_name`` (a node reports it, in ``sys/health`` and its metrics' ``cluster``
    label, from its next start). The CA keeps the subject it was made with."""
    paths = mesh.paths
    text = renamed_text(paths.spec_file.read_text(), name)
    spec_dir = Path(mesh.state["spec_dir"]) if mesh.state.get("spec_dir") else paths.root
    if parse_spec(text, source=str(paths.spec_file), base_dir=spec_dir).name != name:
        raise StateError(f"cannot rename the mesh in {paths.root}: {paths.spec_file} has no top-level name line",
                         hint=f"add name: {name} to {paths.spec_file}")
    write_atomic(paths.spec_file, text.encode())
    write_json(paths.state_file, {**read_json(paths.state_file), "name": name})
    return open_mesh(paths.root)


def entry_wanted(spec: MeshSpec) -> bool:
    """Whether the mesh runs an entry (HAProxy): ``entry.mode`` and whether haproxy is installed (on the entry
    hosts, ``entry.hosts``: their start says so when it is not)."""
    if spec.entry.mode == "none":
        return False
    if spec.entry.hosts:
        return True
    found = shutil.which("haproxy") is not None
    if spec.entry.mode == "haproxy" and not found:
        raise RuntimeFailure("entry.mode is haproxy but no haproxy binary is on PATH",
                             hint="apt-get install haproxy, or set entry.mode: auto")
    return found


def pick_ports(spec: MeshSpec) -> list[int]:
    n = 2 * spec.nodes + 1 + (2 if spec.seal.type == "transit" else 0)
    if spec.runtime == "ssh":  # every host has its own address: each node takes the same two ports on its own
        base = spec.ports.base or REMOTE_API_PORT  # (a second node on a host the next two, and so on)
        per_host = [2 * (i // len(spec.hosts)) for i in range(spec.nodes)]
        return [*[p for i in per_host for p in (base + i, base + i + 1)], spec.ports.entry or free_ports(1)[0]]
    if spec.ports.base is not None:
        ports = list(range(spec.ports.base, spec.ports.base + n))
        if spec.ports.entry is not None:
            ports[2 * spec.nodes] = spec.ports.entry
        return ports
    ports = free_ports(n)
    if spec.ports.entry is not None:
        ports[2 * spec.nodes] = spec.ports.entry
    return ports


def _on_host(layout: MeshLayout, port_name: str) -> bool:
    """The port named so (``node-1 api``) is another host's, not this machine's."""
    if port_name == "entry":
        return bool(layout.entry_hosts)
    node = next((n for n in layout.nodes if port_name.split(" ")[0] == n.name), None)
    return node is not None and node.remote is not None


def hosted_entry_config(paths: StatePaths, remote: Remote) -> Path:
    """The staged config of the entry on ``remote`` (``entry/<host>.cfg``; on the host ``entry/haproxy.cfg``)."""
    return paths.entry_dir / f"{remote.host}.cfg"


def port_names(layout: MeshLayout) -> dict[str, int]:
    names = {}
    for n in layout.nodes:
        names[f"{n.name} api"] = n.api_port
        names[f"{n.name} cluster"] = n.cluster_port
    names["entry"] = layout.entry_port
    if layout.seal_node:
        names["seal node api"] = layout.seal_node.api_port
        names["seal node cluster"] = layout.seal_node.cluster_port
    return names


def create_mesh(root: Path, spec: MeshSpec, spec_text: str, *, engine: str | None,
                spec_dir: Path | None) -> Mesh:
    """Write a new mesh's state dir: PKI, seal key, admin password, configs, then state.json last.

    Checks that can fail (ports) run before anything is written; a failure after that leaves a state dir
    that the next ``up`` completes.
    """
    paths = StatePaths(root)
    ports = pick_ports(spec)
    ssh_rec = {"dir": spec.name} if spec.runtime == "ssh" else None
    netns_rec = None
    if spec.runtime == "netns":
        from vaultmesh.runtime import netns

        why = netns.unavailable()
        if why:
            raise StateError(f"runtime: netns is not possible here: {why}", hint="use runtime: local")
        net_id = netns.mesh_net_id(root)
        netns_rec = {"id": net_id, "octet": netns.choose_octet(net_id, netns.used_octets())}
    layout = build_layout(spec.name, root, zone_layout(spec), ports, transit_seal=spec.seal.type == "transit",
                          netns=_netns_of({"netns": netns_rec}),
                          remotes=remotes_of(spec, {"ssh": ssh_rec, "spec_dir": str(spec_dir) if spec_dir else None}),
                          entry_hosts=tuple(spec.entry.hosts))
    check_ports_free({k: v for k, v in port_names(layout).items() if not _on_host(layout, k)})
    ensure_dir(root)
    now = dt.datetime.now(dt.UTC)
    ca = pki.create_ca(f"vaultmesh {spec.name} CA", now=now, days=spec.tls.ca_days)
    write_atomic(paths.ca_key, ca.key_pem)
    write_atomic(paths.ca_cert, ca.cert_pem, mode=0o644)
    ensure_dir(paths.nodes_dir)
    entry_ips = tuple(r.address for r in layout.entry_hosts)
    for node in (*layout.nodes, *((layout.seal_node,) if layout.seal_node else ())):
        _node_dirs_and_cert(node, ca, spec, now, entry_ips)
    if spec.seal.type == "static":
        write_atomic(paths.static_key, secrets.token_bytes(32))
    if layout.seal_node:
        write_atomic(layout.seal_node.dir / "seal.key", secrets.token_bytes(32))
        write_atomic(paths.seal_token, ("vmseal-" + secrets.token_hex(24)).encode())
    write_atomic(paths.admin_password, secrets.token_urlsafe(32).encode())
    write_atomic(paths.spec_file, (spec_text or _default_spec_text(spec)).encode())
    state = {"format": STATE_FORMAT, "vaultmesh_version": __version__, "name": spec.name,
             "created": now.isoformat(timespec="seconds"), "engine": engine, "ports": ports,
             "initialized": False, "spec_dir": str(spec_dir) if spec_dir else None}
    if netns_rec:
        state["netns"] = netns_rec
    if ssh_rec:
        state["ssh"] = ssh_rec
    mesh = Mesh(spec, layout, engine, False, state)
    render_configs(mesh)
    write_json(paths.state_file, state)
    return mesh


def _default_spec_text(spec: MeshSpec) -> str:
    lifecycle = _lifecycle_view(spec)
    return "# The built-in defaults this mesh was created from.\n" + yaml.safe_dump(lifecycle, sort_keys=False)


def render_configs(mesh: Mesh) -> None:
    """(Re)write every node's config; node 1 carries the self-initialisation stanza until the mesh is
    initialised (a restarted node must not carry it, and Shamir never uses it)."""
    spec, layout = mesh.spec, mesh.layout
    seal_token = mesh.paths.seal_token.read_text().strip() if layout.seal_node else None
    self_init = not mesh.initialized and spec.seal.type != "shamir"
    audit = [DEFAULT_AUDIT, *declared_audit(mesh.paths.root)]
    for i, node in enumerate(layout.nodes):
        text = render_hosted_config(spec, layout, node, self_init=self_init and i == 0, audit=audit,
                                    seal_token=seal_token)  # a remote node's config names the paths on its host
        write_atomic(node.config_file, text.encode())
    if layout.seal_node:
        write_atomic(layout.seal_node.config_file, render_seal_node_config(layout).encode())
    write_atomic(mesh.paths.entry_dir / "haproxy.cfg", render_entry_config(layout).encode())
    for remote in layout.entry_hosts:  # each entry host's own copy: bound to its address, its CA file
        text = render_entry_config(layout, bind=remote.address, ca_file=StatePaths(remote.mesh_dir).ca_cert)
        write_atomic(hosted_entry_config(mesh.paths, remote), text.encode())


def ensure_identity_cert(mesh: Mesh) -> tuple[Path, Path]:
    """The identity issuer's TLS certificate (127.0.0.1, localhost and ``issuer_address``) from the mesh CA,
    made once."""
    return _local_cert(mesh, "identity", mesh.paths.identity_cert, mesh.paths.identity_key,
                       also=mesh.spec.issuer_address)


def ensure_keeper_cert(mesh: Mesh) -> tuple[Path, Path]:
    """The keeper's ``/metrics`` TLS certificate (127.0.0.1, localhost) from the mesh CA, made once."""
    return _local_cert(mesh, "keeper", mesh.paths.keeper_cert, mesh.paths.keeper_key)


def ensure_prometheus_cert(mesh: Mesh) -> tuple[Path, Path]:
    """The TLS certificate of the Prometheus the keeper runs (127.0.0.1, localhost) from the mesh CA, made once."""
    return _local_cert(mesh, "prometheus", mesh.paths.prometheus_cert, mesh.paths.prometheus_key)


def _local_cert(mesh: Mesh, name: str, cert: Path, key: Path, *, also: str = "127.0.0.1") -> tuple[Path, Path]:
    if not (cert.exists() and key.exists()):
        ensure_dir(cert.parent.parent)
        ensure_dir(cert.parent)
        ca = pki.CertPair(mesh.paths.ca_cert.read_bytes(), mesh.paths.ca_key.read_bytes())
        pair = pki.issue_server_cert(ca, name, dns_names=["localhost"],
                                     ip_addresses=sorted({"127.0.0.1", also}),
                                     now=dt.datetime.now(dt.UTC), days=mesh.spec.tls.cert_days)
        write_atomic(key, pair.key_pem)
        write_atomic(cert, pair.cert_pem, mode=0o644)
    return cert, key


def declared_audit(root: Path) -> list[AuditDevice]:
    """Audit devices declared by the last ``apply`` (``reconcile/audit.json``), beside the default one."""
    try:
        items = read_json(StatePaths(root).reconcile_audit)
    except FileNotFoundError:
        return []
    return [AuditDevice(d["type"], d["name"], dict(d["options"])) for d in items]


def mark_initialized(mesh: Mesh) -> Mesh:
    if mesh.initialized:
        return mesh
    state = dict(mesh.state, initialized=True)
    mesh = replace(mesh, initialized=True, state=state)
    render_configs(mesh)
    write_json(mesh.paths.state_file, state)
    return mesh


def node_engine(paths: StatePaths, name: str) -> str | None:
    """The engine binary a node was last moved to (``state.json`` ``node_engines``, written by ``upgrade``);
    None: the mesh's own. Read from disk each time: an upgrade in another process may have moved it."""
    try:
        engines = read_json(paths.state_file).get("node_engines") or {}
    except (OSError, ValueError):
        return None
    found = engines.get(name)
    return str(found) if found else None


def record_engine(mesh: Mesh, engine: str, *, node: str | None = None) -> Mesh:
    """Record in ``state.json`` the engine binary ``node`` now runs (``node`` None: the whole mesh's, once every
    node runs it; the per-node records stay, so a heal never starts a node on an older binary)."""
    state = read_json(mesh.paths.state_file)
    if node is None:
        state["engine"] = engine
    else:
        state["node_engines"] = {**(state.get("node_engines") or {}), node: engine}
    write_json(mesh.paths.state_file, state)
    return replace(mesh, state=state, engine=state.get("engine"))


def destroy(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=False)


# -- the operator's credential ---------------------------------------------------------------------

TOKEN_REUSE_MARGIN = 300.0
"""A cached admin token with less than 5 minutes left is replaced by a fresh login."""


def admin_token(mesh: Mesh, client: EngineClient | None = None, *, fresh: bool = False) -> str:
    """A valid admin token: the cached one (0600 file) while it has time left, else a new userpass login."""
    cache = mesh.paths.admin_token
    if not fresh and cache.exists():
        with contextlib.suppress(ValueError, KeyError, OSError):
            cached = read_json(cache)
            if cached["expires_at"] - time.time() > TOKEN_REUSE_MARGIN:
                return str(cached["token"])
    paths = mesh.paths
    client = client or mesh.client()
    if paths.admin_password_next.exists():  # a rotation stopped between OpenBao and the file: finish it
        try:
            client.login("userpass", {"password": paths.admin_password_next.read_text().strip()}, user=ADMIN_USER)
            os.replace(paths.admin_password_next, paths.admin_password)
        except EngineError:
            paths.admin_password_next.unlink()
    try:
        password = paths.admin_password.read_text().strip()
    except FileNotFoundError:
        raise StateError(f"{paths.admin_password} is missing; the admin credential is gone",
                         hint="restore the state dir from a backup") from None
    auth = client.login("userpass", {"password": password}, user=ADMIN_USER)
    token = str(auth["client_token"])
    if paths.admin_password_handed.exists():
        rotate_admin_password(mesh, client, token)
    write_json(cache, {"token": token, "accessor": auth.get("accessor"),
                       "expires_at": time.time() + float(auth.get("lease_duration") or 3600)})
    return token


def rotate_admin_password(mesh: Mesh, client: EngineClient, token: str) -> None:
    """Give the admin user a new password: the one node 1 got in its environment for self-initialisation
    stays readable in /proc for that process's life, so it must stop opening anything. Resumable: the new
    password is on disk (0600) before OpenBao has it, and only then replaces the old file."""
    paths = mesh.paths
    password = secrets.token_urlsafe(32)
    write_atomic(paths.admin_password_next, password.encode())
    client.write(f"auth/userpass/users/{ADMIN_USER}/password", {"password": password}, token=token)
    os.replace(paths.admin_password_next, paths.admin_password)
    paths.admin_password_handed.unlink(missing_ok=True)


__all__ = [
    "Mesh",
    "admin_token",
    "check_same_lifecycle",
    "create_mesh",
    "destroy",
    "entry_wanted",
    "exists",
    "locked",
    "mark_initialized",
    "new_name",
    "node_count",
    "node_engine",
    "open_mesh",
    "record_engine",
    "record_nodes",
    "rename",
    "render_configs",
    "renodes_text",
    "resize",
    "resized_ports",
    "rotate_admin_password",
]
