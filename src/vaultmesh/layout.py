"""Where everything of a mesh lives: the state dir's paths and each node's ports. Pure values.

State dir (0700 directories; secrets 0600)::

    state.json            format, vaultmesh version, ports, engine: written once, atomically
    mesh.yaml             the spec the mesh was created from
    pki/ca.pem, ca-key.pem
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

from dataclasses import dataclass
from pathlib import Path

STATE_FORMAT = 1
"""The newest state-dir format this vaultmesh writes and reads."""

ADMIN_USER = "vaultmesh-admin"
ADMIN_POLICY = "vaultmesh-admin"
HOST = "127.0.0.1"


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

    @property
    def api_addr(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    @property
    def cluster_addr(self) -> str:
        return f"https://{self.host}:{self.cluster_port}"

    @property
    def config_file(self) -> Path:
        return self.dir / "config.hcl"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        return self.dir / "bao.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "bao.pid"

    @property
    def cert_file(self) -> Path:
        return self.dir / "tls" / "cert.pem"

    @property
    def key_file(self) -> Path:
        return self.dir / "tls" / "key.pem"


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def spec_file(self) -> Path:
        return self.root / "mesh.yaml"

    @property
    def ca_cert(self) -> Path:
        return self.root / "pki" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "pki" / "ca-key.pem"

    @property
    def static_key(self) -> Path:
        return self.root / "seal" / "static.key"

    @property
    def seal_node_dir(self) -> Path:
        return self.root / "seal" / "node"

    @property
    def seal_token(self) -> Path:
        return self.root / "seal" / "transit-token"

    @property
    def shamir_keys(self) -> Path:
        return self.root / "seal" / "shamir-keys.json"

    @property
    def nodes_dir(self) -> Path:
        return self.root / "nodes"

    @property
    def entry_dir(self) -> Path:
        return self.root / "entry"

    @property
    def admin_password(self) -> Path:
        return self.root / "admin" / "password"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin" / "token"

    @property
    def admin_password_handed(self) -> Path:
        """Present while the admin password in the file is the one node 1 was started with (in its
        environment, for self-initialisation): the first login rotates it, so that copy is worthless."""
        return self.root / "admin" / "password.handed"

    @property
    def admin_password_next(self) -> Path:
        """The rotated password between writing it to OpenBao and to ``admin_password``."""
        return self.root / "admin" / "password.next"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def identity_dir(self) -> Path:
        return self.root / "identity"

    @property
    def identity_keys(self) -> Path:
        """The issuer's key ring directory (``identity.keys.KeyRing``)."""
        return self.identity_dir / "keys"

    @property
    def issuer_record(self) -> Path:
        """``issuer.json``: the running issuer's URL and port (``identity.server.IssuerRecord``)."""
        return self.identity_dir / "issuer.json"

    @property
    def identity_cert(self) -> Path:
        return self.identity_dir / "tls" / "cert.pem"

    @property
    def identity_key(self) -> Path:
        return self.identity_dir / "tls" / "key.pem"

    @property
    def issuer_pid(self) -> Path:
        return self.identity_dir / "serve.pid"

    @property
    def issuer_log(self) -> Path:
        return self.identity_dir / "serve.log"

    @property
    def reconcile_dir(self) -> Path:
        return self.root / "reconcile"

    @property
    def reconcile_hash_key(self) -> Path:
        """The HMAC key of write-only field fingerprints (``reconcile.state.ReconcileState.hash_key``)."""
        return self.reconcile_dir / "hash.key"

    @property
    def reconcile_applied(self) -> Path:
        """Fingerprints of what ``apply`` wrote and read back (``ReconcileState.previous_hashes``)."""
        return self.reconcile_dir / "applied.json"

    @property
    def reconcile_audit(self) -> Path:
        """The audit devices the last ``apply`` declared (read by ``lifecycle.mesh.declared_audit``)."""
        return self.reconcile_dir / "audit.json"

    @property
    def reconcile_budgets(self) -> Path:
        """The lease budgets of the file last applied (``ReconcileState.budgets``)."""
        return self.reconcile_dir / "budgets.json"

    @property
    def keeper_dir(self) -> Path:
        return self.root / "keeper"

    @property
    def keeper_pid(self) -> Path:
        return self.keeper_dir / "keeper.pid"

    @property
    def keeper_log(self) -> Path:
        return self.keeper_dir / "keeper.log"

    @property
    def keeper_status(self) -> Path:
        """What the keeper last did (``keeper.status.KeeperStatus``), rewritten atomically every cycle."""
        return self.keeper_dir / "status.json"

    @property
    def keeper_cert(self) -> Path:
        """The TLS certificate of the keeper's ``/metrics`` listener (127.0.0.1, from the mesh CA)."""
        return self.keeper_dir / "tls" / "cert.pem"

    @property
    def keeper_key(self) -> Path:
        return self.keeper_dir / "tls" / "key.pem"

    @property
    def snapshots_dir(self) -> Path:
        """Where snapshots go unless ``snapshots.dir`` says otherwise: ``<name>.snap`` + ``<name>.snap.json``."""
        return self.root / "snapshots"

    @property
    def drills_dir(self) -> Path:
        """Scratch meshes of restore drills (``drills/<stamp>/``, removed when the drill ends) and
        ``drills/last.json``, the last drill's report."""
        return self.root / "drills"

    @property
    def drill_report(self) -> Path:
        return self.drills_dir / "last.json"

    @property
    def restored_from(self) -> Path:
        """In a mesh made by ``restore --into``: the manifest of the snapshot it was made from."""
        return self.root / "restored-from.json"


@dataclass(frozen=True)
class MeshLayout:
    """The concrete shape of one mesh: its nodes, their ports and dirs, the entry and seal node."""

    name: str
    paths: StatePaths
    nodes: tuple[NodeLayout, ...]
    entry_port: int
    seal_node: NodeLayout | None = None

    @property
    def entry_addr(self) -> str:
        return f"https://{HOST}:{self.entry_port}"

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


def build_layout(name: str, root: Path, zones: list[tuple[str, str]], ports: list[int],
                 *, transit_seal: bool, netns: tuple[str, int] | None = None) -> MeshLayout:
    """Assign ``ports`` (api, cluster per node, then entry, then seal api, cluster) to the mesh's parts.

    ``netns`` (id, octet): each node runs in its own network namespace with its own address (see NETNS_PREFIX).
    """
    need = 2 * len(zones) + 1 + (2 if transit_seal else 0)
    if len(ports) < need:
        raise ValueError(f"need {need} ports, got {len(ports)}")
    paths = StatePaths(root)
    hosts = netns_names(*netns, len(zones)) if netns else [(None, HOST)] * len(zones)
    nodes = tuple(
        NodeLayout(node, zone, ports[2 * i], ports[2 * i + 1], paths.nodes_dir / node, host=hosts[i][1],
                   netns=hosts[i][0])
        for i, (node, zone) in enumerate(zones)
    )
    entry = ports[2 * len(zones)]
    seal = None
    if transit_seal:
        seal = NodeLayout("seal", "seal", ports[2 * len(zones) + 1], ports[2 * len(zones) + 2],
                          paths.seal_node_dir)
    return MeshLayout(name, paths, nodes, entry, seal)
