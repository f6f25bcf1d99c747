"""The lab, as values: the address plan, each host's files, and what is rendered into them. Pure.

Topology (names derive from a 6-hex-digit id of the lab dir, like a netns mesh's; a separate name space)::

    root namespace: bridge vmlb<id> 10.214.<o>.1/24  (no uplink: the addresses exist only on this machine)
        ├── veth vmlh<id><i>  <->  eth0 in namespace vmlab<id>-<i>, 10.214.<o>.<10+i>/24  (host h<i>)
        └── ...

Each host has a root folder, ``<dir>/hosts/<name>``: what vaultmesh takes for "/" on that host. Its sshd and its
supervisord run inside the host's namespace and keep every file (config, keys, socket, pid files, logs) under it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from vaultmesh.errors import VaultmeshError

LAB_PREFIX = "10.214"
"""Lab hosts get ``10.214.<octet>.<10+i>``; ``runtime: netns`` meshes use 10.213 (``layout.NETNS_PREFIX``)."""

ZONES = ("zone-a", "zone-b", "zone-c")
MAX_HOSTS = 7
SSH_PORT = 22
SSH_USER = "root"
RECORD_VERSION = 1
SOCKET_DIR = Path("/run/vaultmesh-lab")
"""Where the lab's supervisord sockets live (0700, root's): short paths, whatever the lab's folder."""


@dataclass(frozen=True)
class HostFiles:
    """Where a lab host keeps its files, all under its root folder."""

    root: Path

    @property
    def sshd_config(self) -> Path:
        return self.root / "etc/ssh/sshd_config"

    @property
    def host_key(self) -> Path:
        return self.root / "etc/ssh/ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "etc/ssh/authorized_keys"

    @property
    def sshd_pid(self) -> Path:
        return self.root / "run/sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.root / "var/log/sshd.log"

    @property
    def supervisord_conf(self) -> Path:
        return self.root / "etc/supervisor/supervisord.conf"

    @property
    def conf_d(self) -> Path:
        return self.root / "etc/supervisor/conf.d"

    @property
    def supervisor_socket(self) -> Path:
        """Under ``SOCKET_DIR``, named by a digest of the root: supervisord binds ``<socket>.<pid>`` first, and a
        socket path has at most 107 bytes, which a root deep in a test's temporary folder exceeds."""
        return SOCKET_DIR / f"{hashlib.sha256(str(self.root).encode()).hexdigest()[:16]}.sock"

    @property
    def supervisord_pid(self) -> Path:
        return self.root / "run/supervisord.pid"

    @property
    def supervisord_log(self) -> Path:
        return self.root / "var/log/supervisord.log"

    @property
    def supervisor_child_logs(self) -> Path:
        return self.root / "var/log/supervisor"

    @property
    def engine(self) -> Path:
        return self.root / "usr/local/bin/bao"

    @property
    def dirs(self) -> tuple[Path, ...]:
        """The folders to make, in order."""
        return (self.root / "etc/ssh", self.conf_d, self.root / "run", self.supervisor_child_logs,
                self.engine.parent)


@dataclass(frozen=True)
class LabHost:
    """One host of the lab: its name, address and zone, where it lives, and (once started) its daemons' pids."""

    name: str
    address: str
    zone: str
    netns: str
    veth: str
    """The root namespace's end of the host's link (``cut`` sets it down)."""
    peer: str
    """The veth's other end until it moves into the namespace as ``eth0``."""
    root: str
    sshd_pid: int | None = None
    supervisord_pid: int | None = None

    @property
    def files(self) -> HostFiles:
        return HostFiles(Path(self.root))


@dataclass(frozen=True)
class LabRecord:
    """What ``lab.json`` holds: the whole plan from the start, pids filled in as hosts come up, so ``lab down``
    finds everything even after a half-made ``lab up``."""

    dir: str
    id: str
    octet: int
    bridge: str
    gateway: str
    hosts: tuple[LabHost, ...] = field(default_factory=tuple)

    @property
    def links(self) -> list[str]:
        """Every link the lab makes in the root namespace: the bridge, then each host's veth."""
        return [self.bridge, *(h.veth for h in self.hosts)]

    @property
    def key_file(self) -> Path:
        return Path(self.dir) / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return Path(self.dir) / "known_hosts"

    @property
    def mesh_file(self) -> Path:
        return Path(self.dir) / "mesh.yaml"

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise VaultmeshError(f"the lab in {self.dir} has no host {name!r}",
                             hint="hosts: " + ", ".join(h.name for h in self.hosts))

    def with_host(self, host: LabHost) -> LabRecord:
        return replace(self, hosts=tuple(host if h.name == host.name else h for h in self.hosts))

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "dir": self.dir, "id": self.id, "octet": self.octet,
                "bridge": self.bridge, "gateway": self.gateway, "links": self.links,
                "hosts": [{"name": h.name, "address": h.address, "zone": h.zone, "netns": h.netns, "veth": h.veth,
                           "peer": h.peer, "root": h.root, "pids": {"sshd": h.sshd_pid,
                                                                    "supervisord": h.supervisord_pid}}
                          for h in self.hosts]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LabRecord:
        hosts = tuple(LabHost(h["name"], h["address"], h["zone"], h["netns"], h["veth"], h["peer"], h["root"],
                              h["pids"].get("sshd"), h["pids"].get("supervisord")) for h in doc["hosts"])
        return cls(doc["dir"], doc["id"], int(doc["octet"]), doc["bridge"], doc["gateway"], hosts)

    def summary(self) -> dict[str, Any]:
        """What ``lab up --json`` prints."""
        return {"hosts": [{"name": h.name, "address": h.address, "zone": h.zone} for h in self.hosts],
                "mesh_file": str(self.mesh_file)}


def check_host_count(count: int) -> None:
    if not 1 <= count <= MAX_HOSTS:
        raise VaultmeshError(f"a lab has 1 to {MAX_HOSTS} hosts, not {count}", hint="pass --hosts 1..7")


def plan_lab(dir: Path, lab_id: str, octet: int, count: int) -> LabRecord:
    """The lab of ``count`` hosts in ``dir`` (absolute): names, addresses, zones round robin, links, roots."""
    check_host_count(count)
    net = f"{LAB_PREFIX}.{octet}"
    hosts = tuple(LabHost(name=f"h{i}", address=f"{net}.{10 + i}", zone=ZONES[(i - 1) % len(ZONES)],
                          netns=f"vmlab{lab_id}-{i}", veth=f"vmlh{lab_id}{i}", peer=f"vmlp{lab_id}{i}",
                          root=str(dir / "hosts" / f"h{i}"))
                  for i in range(1, count + 1))
    return LabRecord(dir=str(dir), id=lab_id, octet=octet, bridge=f"vmlb{lab_id}", gateway=f"{net}.1", hosts=hosts)


def render_sshd_config(host: LabHost) -> str:
    """The host's sshd_config: keys only, root by key only, its own host key, pid file and authorised keys.

    ``StrictModes no``: sshd would refuse an authorised-keys file below a world-writable folder such as /tmp;
    the lab dir is 0700 and the key files 0600, which is what that check is for."""
    files = host.files
    return "\n".join([
        "# written by vaultmesh lab up",
        f"ListenAddress {host.address}",
        f"Port {SSH_PORT}",
        f"HostKey {files.host_key}",
        f"PidFile {files.sshd_pid}",
        f"AuthorizedKeysFile {files.authorized_keys}",
        f"AllowUsers {SSH_USER}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "PermitUserEnvironment no",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
        "",
    ])


def render_supervisord_conf(host: LabHost) -> str:
    """The host's supervisord.conf: its socket (0700), pid file and logs under its root; programs come from
    ``etc/supervisor/conf.d/*.conf`` (empty at first: the runtime adds the node's). ``silent``: in the foreground
    (``-n``) it would copy its log to stdout as well."""
    files = host.files
    return "\n".join([
        "; written by vaultmesh lab up",
        "[unix_http_server]",
        f"file={files.supervisor_socket}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"pidfile={files.supervisord_pid}",
        f"logfile={files.supervisord_log}",
        f"childlogdir={files.supervisor_child_logs}",
        f"directory={files.root}",
        "silent=true",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{files.supervisor_socket}",
        "",
        "[include]",
        f"files = {files.conf_d}/*.conf",
        "",
    ])


def render_known_hosts(keys: dict[str, str]) -> str:
    """``known_hosts`` lines from {address: "ssh-ed25519 AAAA..."}: port 22, so the plain address form."""
    return "".join(f"{address} {key.strip()}\n" for address, key in keys.items())


def mesh_doc(record: LabRecord) -> dict[str, Any]:
    """A mesh file naming the lab's hosts (``runtime: ssh``), ready for ``vaultmesh up``."""
    return {
        "name": "lab",
        "nodes": len(record.hosts),
        "runtime": "ssh",
        "issuer_address": record.gateway,  # the root namespace's address on the bridge: every host reaches it
        "hosts": [{"name": h.name, "address": h.address, "zone": h.zone, "root": h.root, "service": "supervisor",
                   "engine": str(h.files.engine), "run_as": "root",
                   "ssh": {"user": SSH_USER, "port": SSH_PORT, "key_file": str(record.key_file),
                           "known_hosts": str(record.known_hosts)}}
                  for h in record.hosts],
    }


def render_mesh_file(record: LabRecord) -> str:
    head = f"# the lab in {record.dir}: written by `vaultmesh lab up`, removed by `vaultmesh lab down`\n"
    return head + yaml.safe_dump(mesh_doc(record), sort_keys=False, default_flow_style=None)


def missing_requirement(*, is_root: bool, found: dict[str, str | None]) -> str | None:
    """What the lab needs and is missing here, as one sentence naming the Debian package; None when all is
    there. ``found``: each of ip, sshd, supervisord and supervisorctl and where it was found (None: not found)."""
    if not is_root:
        return "vaultmesh lab needs root (network namespaces, sshd on port 22): run it as root"
    packages = {"ip": "iproute2", "sshd": "openssh-server", "supervisord": "supervisor",
                "supervisorctl": "supervisor"}
    for command, package in packages.items():
        if not found.get(command):
            return f"vaultmesh lab needs {command}, which is not installed: apt-get install {package}"
    return None
