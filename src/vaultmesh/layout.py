"""Where everything of a mesh lives: the state dir's paths and each node's ports. Pure values.

State dir (0700 directories; secrets 0600)::

    state.json            format, vaultmesh version, ports, engine: written once, atomically
    mesh.yaml             the spec the mesh was created from
    pki/ca.pem, ca-key.pem
                          (rotation.json, ca-next.pem, ca-next-key.pem while ``certs rotate-ca`` runs)
    seal/static.key       (static seal) 32 raw bytes
    seal/node/...         (transit seal) the seal node: config, data, log, pid, its token
    nodes/<name>/         config.hcl, data/, tls/{cert,key}.pem, bao.log, bao.pid, audit.log
    entry/                haproxy.cfg, entry.pem (cert + key), haproxy.pid, haproxy.log
    admin/password        the admin userpass password; admin/token the cached admin token
    identity/             the workload identity issuer: keys/ (its key ring), tls/{cert,key}.pem, issuer.json
                          (its URL and port, kept across restarts), serve.pid, serve.log
    reconcile/            hash.key, applied.json, audit.json, budgets.json: what ``apply`` last did
    keeper/               keeper.pid, keeper.log, status.json (what it last did, its metrics address), tls/
    snapshots/            <stamp>-<index>.snap (OpenBao's Raft snapshot) + .snap.json (the manifest), 0600
    drills/               last.json (the last drill's report); <stamp>/ the scratch mesh while a drill runs
    restored-from.json    (a mesh made by ``restore --into``) the manifest of its snapshot

Every path of the state dir is spelled here and nowhere else; each record has one typed reader next to its
writer (``identity.server.read_issuer_record``, ``reconcile.state.ReconcileState``,
``lifecycle.keeper_process.read_status``, ``lifecycle.mesh.open_mesh``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import overload

STATE_FORMAT = 1
"""The newest state-dir format this vaultmesh writes and reads."""

ADMIN_USER = "vaultmesh-admin"
ADMIN_POLICY = "vaultmesh-admin"
HOST = "127.0.0.1"


def https_url(host: str, port: int) -> str:
    """The address of a listener of the mesh: ``https://127.0.0.1:8200`` (an IPv6 host goes in brackets)."""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class Below:
    """A path below another path of the same layout, computed when read: ``ca_cert = Below("root",
    "pki/ca.pem")`` is ``self.root / "pki/ca.pem"``. The state dir's paths are this table (its tree is the
    module docstring); no one else spells them."""

    def __init__(self, base: str, relative: str) -> None:
        self.base = base
        self.relative = relative

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Below: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Path: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Path | Below:
        if obj is None:
            return self
        base: Path = getattr(obj, self.base)
        return base / self.relative


REMOTE_BASE = "var/lib/vaultmesh"
"""Below a host's root: ``<root>/var/lib/vaultmesh/<mesh>/`` holds the mesh's files on that host, laid out like
the state dir (``pki/ca.pem``, ``seal/static.key``, ``nodes/<name>/``), so one renderer serves both."""


@dataclass(frozen=True)
class Remote:
    """The host a node of a ``runtime: ssh`` mesh runs on, and how vaultmesh reaches it."""

    host: str
    address: str
    root: Path
    service: str
    """``auto``, ``systemd`` or ``supervisor``."""
    engine: str
    run_as: str
    """The system user the node runs as on the host."""
    user: str
    port: int
    key_file: Path
    known_hosts: Path
    mesh_dir: Path
    """The mesh's folder on the host (``<root>/var/lib/vaultmesh/<mesh>``)."""

    @property
    def where(self) -> str:
        """How messages name the host: ``h1 (root@10.214.1.11:22)``."""
        return f"{self.host} ({self.user}@{self.address}:{self.port})"


@dataclass(frozen=True)
class NodeLayout:
    name: str
    zone: str
    api_port: int
    cluster_port: int
    dir: Path
    host: str = HOST
    netns: str | None = None
    """The network namespace the node runs in (``runtime: netns``); None: the machine's own network."""
    remote: Remote | None = None
    """The host the node runs on (``runtime: ssh``); None: this machine. ``dir`` is then the node's staged
    bundle in the state dir, pushed to ``remote.mesh_dir / "nodes" / name``."""

    @property
    def api_addr(self) -> str:
        return https_url(self.host, self.api_port)

    @property
    def cluster_addr(self) -> str:
        return https_url(self.host, self.cluster_port)

    config_file = Below("dir", "config.hcl")
    data_dir = Below("dir", "data")
    log_file = Below("dir", "bao.log")
    pid_file = Below("dir", "bao.pid")
    cert_file = Below("dir", "tls/cert.pem")
    key_file = Below("dir", "tls/key.pem")


@dataclass(frozen=True)
class StatePaths:
    root: Path

    state_file = Below("root", "state.json")
    spec_file = Below("root", "mesh.yaml")

    ca_cert = Below("root", "pki/ca.pem")
    ca_key = Below("root", "pki/ca-key.pem")
    ca_rotation = Below("root", "pki/rotation.json")
    """``certs rotate-ca`` under way: the two serials and the old CA's certificate (0600)."""
    ca_next_cert = Below("root", "pki/ca-next.pem")
    """The new CA while a rotation has made it and it does not sign yet; its key ``ca_next_key`` (0600)."""
    ca_next_key = Below("root", "pki/ca-next-key.pem")

    static_key = Below("root", "seal/static.key")
    seal_node_dir = Below("root", "seal/node")
    seal_token = Below("root", "seal/transit-token")
    shamir_keys = Below("root", "seal/shamir-keys.json")

    nodes_dir = Below("root", "nodes")
    entry_dir = Below("root", "entry")

    admin_password = Below("root", "admin/password")
    admin_token = Below("root", "admin/token")
    admin_password_handed = Below("root", "admin/password.handed")
    """Present while the admin password in the file is the one node 1 was started with (in its
    environment, for self-initialisation): the first login rotates it, so that copy is worthless."""

    admin_password_next = Below("root", "admin/password.next")
    """The rotated password between writing it to OpenBao and to ``admin_password``."""

    lock_file = Below("root", ".lock")

    identity_dir = Below("root", "identity")
    identity_keys = Below("identity_dir", "keys")
    """The issuer's key ring directory (``identity.keys.KeyRing``)."""

    issuer_record = Below("identity_dir", "issuer.json")
    """``issuer.json``: the running issuer's URL and port (``identity.server.IssuerRecord``)."""

    identity_cert = Below("identity_dir", "tls/cert.pem")
    identity_key = Below("identity_dir", "tls/key.pem")
    issuer_pid = Below("identity_dir", "serve.pid")
    issuer_log = Below("identity_dir", "serve.log")

    reconcile_dir = Below("root", "reconcile")
    reconcile_hash_key = Below("reconcile_dir", "hash.key")
    """The HMAC key of write-only field fingerprints (``reconcile.state.ReconcileState.hash_key``)."""

    reconcile_applied = Below("reconcile_dir", "applied.json")
    """Fingerprints of what ``apply`` wrote and read back (``ReconcileState.previous_hashes``)."""

    reconcile_audit = Below("reconcile_dir", "audit.json")
    """The audit devices the last ``apply`` declared (read by ``lifecycle.mesh.declared_audit``)."""

    reconcile_budgets = Below("reconcile_dir", "budgets.json")
    """The lease budgets of the file last applied (``ReconcileState.budgets``)."""

    keeper_dir = Below("root", "keeper")
    keeper_pid = Below("keeper_dir", "keeper.pid")
    keeper_log = Below("keeper_dir", "keeper.log")
    keeper_status = Below("keeper_dir", "status.json")
    """What the keeper last did (``keeper.status.KeeperStatus``), rewritten atomically every cycle."""

    keeper_cert = Below("keeper_dir", "tls/cert.pem")
    """The TLS certificate of the keeper's ``/metrics`` listener (127.0.0.1, from the mesh CA)."""

    keeper_key = Below("keeper_dir", "tls/key.pem")

    snapshots_dir = Below("root", "snapshots")
    """Where snapshots go unless ``snapshots.dir`` says otherwise: ``<name>.snap`` + ``<name>.snap.json``."""

    drills_dir = Below("root", "drills")
    """Scratch meshes of restore drills (``drills/<stamp>/``, removed when the drill ends) and
    ``drills/last.json``, the last drill's report."""

    drill_report = Below("drills_dir", "last.json")

    monitoring_dir = Below("root", "monitoring")
    """Prometheus, run by the keeper: its config, rules, TLS, data, log and pid."""
    prometheus_config = Below("monitoring_dir", "prometheus.yml")
    prometheus_rules = Below("monitoring_dir", "rules.yml")
    prometheus_web = Below("monitoring_dir", "web.yml")
    """Prometheus's ``--web.config.file``: HTTPS with ``prometheus_cert``/``prometheus_key`` (from the mesh CA)."""
    prometheus_cert = Below("monitoring_dir", "tls/cert.pem")
    prometheus_key = Below("monitoring_dir", "tls/key.pem")
    prometheus_data = Below("monitoring_dir", "data")
    prometheus_pid = Below("monitoring_dir", "prometheus.pid")
    prometheus_log = Below("monitoring_dir", "prometheus.log")
    prometheus_record = Below("monitoring_dir", "prometheus.json")
    """Its address (the port is kept across restarts) and why it does not run, when it does not."""
    alertmanager_config = Below("monitoring_dir", "alertmanager.yml")
    """0600: it holds the receiver's URL (a webhook URL often carries its token)."""
    alertmanager_data = Below("monitoring_dir", "alertmanager")
    alertmanager_pid = Below("monitoring_dir", "alertmanager.pid")
    alertmanager_log = Below("monitoring_dir", "alertmanager.log")
    alertmanager_record = Below("monitoring_dir", "alertmanager.json")
    alerts_token = Below("monitoring_dir", "alerts-token")
    """0600: the bearer token Alertmanager sends to the keeper's command bridge (``monitoring.alerts.command``)."""

    load_record = Below("root", "bench/last.json")
    """The last ``vaultmesh bench`` or ``chaos`` run on this mesh: when, what, and whether it passed (``doctor``
    reads it)."""

    restored_from = Below("root", "restored-from.json")
    """In a mesh made by ``restore --into``: the manifest of the snapshot it was made from."""


@dataclass(frozen=True)
class MeshLayout:
    """The concrete shape of one mesh: its nodes, their ports and dirs, the entry and seal node."""

    name: str
    paths: StatePaths
    nodes: tuple[NodeLayout, ...]
    entry_port: int
    seal_node: NodeLayout | None = None
    entry_hosts: tuple[Remote, ...] = ()
    """``runtime: ssh`` with ``entry.hosts``: the hosts that each run an entry on their own address; empty: the
    entry runs here, on loopback."""

    @property
    def entry_addr(self) -> str:
        """Where clients reach the entry: this machine's loopback, or the first entry host's address."""
        return https_url(self.entry_hosts[0].address if self.entry_hosts else HOST, self.entry_port)

    def node(self, name: str) -> NodeLayout:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def all_ports(self) -> list[int]:
        ports = [p for n in self.nodes for p in (n.api_port, n.cluster_port)] + [self.entry_port]
        if self.seal_node:
            ports += [self.seal_node.api_port, self.seal_node.cluster_port]
        return ports


NETNS_PREFIX = "10.213"
"""``runtime: netns``: node i of a mesh gets ``10.213.<octet>.<11+i>`` in a namespace of its own, on a bridge whose
root-namespace side is ``.1``. The addresses exist only inside this machine (a bridge with no uplink)."""


def netns_names(net_id: str, octet: int, count: int) -> list[tuple[str, str]]:
    """(namespace, address) of each node of a netns mesh whose id is ``net_id`` (6 hex digits)."""
    return [(f"vm{net_id}-{i + 1}", f"{NETNS_PREFIX}.{octet}.{11 + i}") for i in range(count)]


def host_view(layout: MeshLayout, node: NodeLayout) -> tuple[MeshLayout, NodeLayout]:
    """The mesh as ``node``'s host sees it: the same nodes and addresses, with the state dir's paths moved to
    the mesh's folder on that host (what its rendered config must name). Pure; a local node is returned as is."""
    if node.remote is None:
        return layout, node
    paths = StatePaths(node.remote.mesh_dir)
    nodes = tuple(replace(n, dir=paths.nodes_dir / n.name) for n in layout.nodes)
    return replace(layout, paths=paths, nodes=nodes), replace(node, dir=paths.nodes_dir / node.name)


def build_layout(name: str, root: Path, zones: list[tuple[str, str]], ports: list[int],
                 *, transit_seal: bool, netns: tuple[str, int] | None = None,
                 remotes: tuple[Remote, ...] = (), entry_hosts: tuple[str, ...] = ()) -> MeshLayout:
    """Assign ``ports`` (api, cluster per node, then entry, then seal api, cluster) to the mesh's parts.

    ``netns`` (id, octet): each node runs in its own network namespace with its own address (see NETNS_PREFIX).
    ``remotes``: node i runs on ``remotes[i]`` and listens on its address (``runtime: ssh``); ``entry_hosts``
    names those of them that run an entry.
    """
    need = 2 * len(zones) + 1 + (2 if transit_seal else 0)
    if len(ports) < need:
        raise ValueError(f"need {need} ports, got {len(ports)}")
    paths = StatePaths(root)
    hosts: list[tuple[str | None, str]] = [(None, HOST)] * len(zones)
    if netns:
        hosts = [(ns, address) for ns, address in netns_names(*netns, len(zones))]
    if remotes:
        hosts = [(None, r.address) for r in remotes]
    nodes = tuple(
        NodeLayout(node, zone, ports[2 * i], ports[2 * i + 1], paths.nodes_dir / node, host=hosts[i][1],
                   netns=hosts[i][0], remote=remotes[i] if remotes else None)
        for i, (node, zone) in enumerate(zones)
    )
    entry = ports[2 * len(zones)]
    seal = None
    if transit_seal:
        seal = NodeLayout("seal", "seal", ports[2 * len(zones) + 1], ports[2 * len(zones) + 2],
                          paths.seal_node_dir)
    return MeshLayout(name, paths, nodes, entry, seal, tuple(r for r in remotes if r.host in entry_hosts))
