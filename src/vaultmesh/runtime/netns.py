"""Network-namespace hosts for ``runtime: netns`` meshes: each node in its own namespace with its own address.

Topology (names derive from the mesh's 6-hex-digit id; addresses from NETNS_PREFIX in ``layout``)::

    root namespace: bridge vmb<id> 10.213.<o>.1/24  (no uplink: the addresses exist only on this machine)
        ├── veth vmh<id><i>  <->  eth0 in namespace vm<id>-<i>, 10.213.<o>.<10+i>/24
        └── ...

The entry (HAProxy), the CLI and the bench run in the root namespace and reach every node over the bridge.

Partitions cut node-to-node links only: in each namespace on one side, a policy rule drops (silently, like a real
network split) every packet arriving from the other side, while the root namespace still reaches both sides, so a
test can show that the cut-off minority refuses writes. For that the ``local`` routing table's rule is moved from
priority 0 to 32765 in each node namespace, below the partition rules at priority 10.

Every command here is ``ip`` from iproute2 and needs root. ``ensure`` and ``remove`` are idempotent.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from vaultmesh.errors import RuntimeFailure
from vaultmesh.layout import NETNS_PREFIX, MeshLayout, NodeLayout

PARTITION_PREF = 10


def mesh_net_id(root: Path) -> str:
    """A short id for a mesh's namespaces, bridge and veths, stable for its state dir."""
    return hashlib.sha256(str(root.absolute()).encode()).hexdigest()[:6]


def choose_octet(net_id: str, used: Iterable[int]) -> int:
    """The third octet of the mesh's /24: from its id, moved on past ones already on this machine. Pure."""
    taken = set(used)
    start = int(net_id, 16) % 240 + 10
    for k in range(240):
        octet = (start - 10 + k) % 240 + 10
        if octet not in taken:
            return octet
    raise RuntimeFailure(f"no free {NETNS_PREFIX}.x.0/24 left for a network-namespace mesh")


def unavailable() -> str | None:
    """Why network-namespace hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"vmprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def used_octets(prefix: str = NETNS_PREFIX) -> set[int]:
    """The third octets of the ``<prefix>.x.0/24`` networks with an address on this machine."""
    out = _ip("-4", "-o", "addr", "show", check=False).stdout
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return {int(m.group(1)) for m in pat.finditer(out)}


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeFailure(f"`{' '.join(argv)}` failed: {err}") from None
    if check and proc.returncode != 0:
        raise RuntimeFailure(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}",
                             hint="network-namespace meshes need root and iproute2")
    return proc


def _names(node: NodeLayout) -> tuple[str, str, str]:
    """(namespace, bridge, host-side veth) of a netns node."""
    assert node.netns is not None
    net_id, _, index = node.netns[2:].partition("-")
    return node.netns, f"vmb{net_id}", f"vmh{net_id}{index}"


def _gateway(node: NodeLayout) -> str:
    return node.host.rsplit(".", 1)[0] + ".1"


def netns_nodes(layout: MeshLayout) -> list[NodeLayout]:
    return [n for n in layout.nodes if n.netns]


def exec_prefix(node: NodeLayout) -> list[str]:
    """The argv prefix that starts a command inside the node's namespace (``ip netns exec`` then execs it, so the
    recorded pid is the node's own)."""
    return ["ip", "netns", "exec", node.netns] if node.netns else []


def _exists(kind: str, name: str) -> bool:
    if kind == "netns":
        return name in _ip("netns", "list", check=False).stdout.split()
    return _ip("link", "show", name, check=False).returncode == 0


def ensure(layout: MeshLayout) -> None:
    """Create the bridge, each node's namespace and veth pair, and their addresses, where missing."""
    nodes = netns_nodes(layout)
    if not nodes:
        return
    _, bridge, _ = _names(nodes[0])
    ensure_bridge(bridge, _gateway(nodes[0]))
    for node in nodes:
        ns, _, veth = _names(node)
        ensure_host(ns, veth, veth.replace("vmh", "vmp", 1), bridge, node.host)


def ensure_bridge(bridge: str, gateway: str) -> None:
    """The bridge with the root namespace's address ``gateway`` (/24) on it, up; made where missing."""
    if not _exists("link", bridge):
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{gateway}/24", "dev", bridge)
    _ip("link", "set", bridge, "up")


def ensure_host(ns: str, veth: str, peer: str, bridge: str, address: str) -> None:
    """Namespace ``ns`` with ``eth0`` at ``address`` (/24), linked to ``bridge`` by the veth pair ``veth`` (root
    side) / ``peer`` (its name until it moves into ``ns`` and becomes ``eth0``); the ``local`` rule moved below
    the partition rules. Made where missing, brought up where down."""
    if not _exists("netns", ns):
        _ip("netns", "add", ns)
    _ip("link", "set", "lo", "up", ns=ns)
    if not _exists("link", veth):
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("link", "set", peer, "name", "eth0", ns=ns)
        _ip("addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
    _ip("link", "set", "eth0", "up", ns=ns)
    _ip("link", "set", veth, "master", bridge)
    _ip("link", "set", veth, "up")
    rules = _ip("rule", "show", ns=ns).stdout
    if not re.search(r"^32765:\s+from all lookup local", rules, re.M):
        _ip("rule", "add", "pref", "32765", "table", "local", ns=ns)
    if re.search(r"^0:\s+from all lookup local", rules, re.M):
        _ip("rule", "del", "pref", "0", ns=ns)


def exists(kind: str, name: str) -> bool:
    """Whether the link (in the root namespace) or (``kind`` "netns") namespace ``name`` exists."""
    return _exists(kind, name)


def delete(kind: str, name: str) -> bool:
    """Delete the link or (``kind`` "netns") namespace ``name`` if it exists; True when it was deleted.
    Processes still running inside a namespace keep it alive until they exit: stop them first."""
    if not _exists(kind, name):
        return False
    args = ("netns", "del", name) if kind == "netns" else ("link", "del", name)
    return _ip(*args, check=False).returncode == 0


def remove(layout: MeshLayout) -> list[str]:
    """Delete the mesh's veths, namespaces and bridge (whatever of them exists); returns what was deleted.
    Processes still running inside a namespace keep it alive until they exit: stop the nodes first."""
    gone = []
    nodes = netns_nodes(layout)
    for node in nodes:
        ns, _, veth = _names(node)
        gone += [name for kind, name in (("link", veth), ("netns", ns)) if delete(kind, name)]
    if nodes:
        _, bridge, _ = _names(nodes[0])
        if delete("link", bridge):
            gone.append(bridge)
    return gone


def remove_node(node: NodeLayout) -> list[str]:
    """Delete one node's veth and namespace (a node ``scale`` removed; stop it first); returns what was deleted.
    The bridge stays: the other nodes use it."""
    ns, _, veth = _names(node)
    gone = []
    if _exists("link", veth) and _ip("link", "del", veth, check=False).returncode == 0:
        gone.append(veth)
    if _exists("netns", ns) and _ip("netns", "del", ns, check=False).returncode == 0:
        gone.append(ns)
    return gone


def set_link(name: str, *, up: bool) -> None:
    """Bring link ``name`` (in the root namespace) up or down; setting it as it is already is a no-op."""
    _ip("link", "set", name, "up" if up else "down")


def namespace_pids(ns: str) -> list[int]:
    """The pids of every process in namespace ``ns`` (none when it does not exist)."""
    out = _ip("netns", "pids", ns, check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def cut(layout: MeshLayout, names: Sequence[str]) -> None:
    """Partition: nodes ``names`` and the other nodes drop every packet from each other (silently)."""
    side = set(names)
    nodes = netns_nodes(layout)
    if not nodes or len(nodes) != len(layout.nodes):
        raise RuntimeFailure("a partition needs every node in its own network namespace (runtime: netns)")
    for node in nodes:
        others = [p for p in nodes if (p.name in side) != (node.name in side)]
        for peer in others:
            _ip("rule", "add", "pref", str(PARTITION_PREF), "from", peer.host, "iif", "eth0", "blackhole",
                ns=node.netns)


def mend(layout: MeshLayout, names: Sequence[str] = ()) -> None:
    """Remove every partition rule of the mesh (``names`` is accepted for symmetry with ``cut``)."""
    for node in netns_nodes(layout):
        for _ in range(4 * len(layout.nodes)):  # at most one rule per peer; bounded anyway
            if _ip("rule", "del", "pref", str(PARTITION_PREF), ns=node.netns, check=False).returncode != 0:
                break
