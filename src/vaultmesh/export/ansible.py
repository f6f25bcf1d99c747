"""The mesh as an Ansible inventory and playbook. Pure: a spec and each host's bundle in, the export's files out.

``site.yaml`` installs every host's bundle (the CA, the seal key, the node's config, certificate and key), its
service (the hardened systemd unit of ``render.unit``, or the supervisord program where systemd does not run the
host) and starts it, one host at a time (``serial: 1``): the others in inventory order (node 1, which
initialises the mesh, first), the node that is active now last. Before the next host it polls the node's
``/v1/sys/health`` over TLS verified with the mesh CA until it answers 200 (active), 429 (standby) or 473
(performance standby); a host that does not stops the rollout. A second run changes nothing (no restart) unless a
file of the bundle changed, and then restarts that node only, then waits.

A host's bundle (``HostBundle``) is the one ``runtime: ssh`` pushes: ``host_bundles`` lays the mesh out on its
hosts, renders each node's config as its host reads it (``render.node.render_hosted_config``, as ``vaultmesh up``
stages it) and takes the files, modes, owners, service and paths of ``hosts.service``; a mesh without
``hosts:`` gets one loopback host per node.

Not done by the playbook: installing the engine (it checks that ``engine`` exists on the host), unsealing a
Shamir mesh, a step-down before the active node restarts, or the mesh-as-code part (``vaultmesh apply`` does
that afterwards).
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaultmesh import pki
from vaultmesh.errors import VaultmeshError
from vaultmesh.hosts import service
from vaultmesh.layout import HOST, REMOTE_BASE, NodeLayout, Remote, build_layout
from vaultmesh.lifecycle.mesh import remotes_of
from vaultmesh.render.node import ADMIN_PASSWORD_ENV, render_hosted_config
from vaultmesh.render.unit import NodeService
from vaultmesh.spec.models import KMS_SEALS, MeshSpec, zone_layout

API_PORT = 8200
"""A node's API port when each node has a host of its own (cluster port: the next one)."""
HEALTHY = [200, 429, 473]
"""``sys/health`` codes of a node that serves: active, unsealed standby, performance standby."""
HEALTH_RETRIES, HEALTH_DELAY = 60, 2
"""The wait for a node: 60 polls 2 s apart (2 minutes: a first start with self-initialisation takes seconds)."""


@dataclass(frozen=True)
class HostFile:
    """One file of a host's bundle: its path on the host, its bytes, mode and owner."""

    path: str
    data: bytes
    mode: int
    owner: str = "root"
    group: str = "root"

    @property
    def secret(self) -> bool:
        return not self.mode & 0o004


@dataclass(frozen=True)
class HostBundle:
    """What one host gets: how Ansible reaches it, the node it runs (laid out on its host: ``node.remote``), its
    files and folders."""

    host: str
    zone: str
    node: NodeLayout
    files: tuple[HostFile, ...]
    dirs: tuple[HostFile, ...]
    """Folders to make (``data`` empty): the mesh's, the node's, its data and audit dirs."""
    first_start_env: HostFile | None = None
    """Node 1's environment for its first start (the admin password self-initialisation reads): copied only
    while the node has no Raft data, removed once it is healthy."""
    ssh: dict[str, Any] = field(default_factory=dict)
    """Ansible connection variables (``ansible_host``, ``ansible_user``, ...); empty: this machine."""

    @property
    def remote(self) -> Remote:
        assert self.node.remote is not None
        return self.node.remote

    @property
    def service(self) -> NodeService:
        return service.node_service(self.node)

    @property
    def address(self) -> str:
        return self.node.host

    @property
    def api_port(self) -> int:
        return self.node.api_port

    @property
    def manager(self) -> str:
        """``auto`` (systemd where it runs the host, else supervisord), ``systemd`` or ``supervisor``."""
        return self.remote.service

    @property
    def root(self) -> str:
        return str(self.remote.root)


def loopback_remotes(spec: MeshSpec) -> tuple[Remote, ...]:
    """Without ``hosts:``: each node a host of its own on this machine's loopback (root ``/``, its own ports),
    run as ``openbao`` on ``/usr/bin/bao`` by the service manager that runs the machine."""
    mesh_dir = Path("/", REMOTE_BASE, spec.name)
    return tuple(Remote(name, HOST, Path("/"), "auto", "/usr/bin/bao", "openbao", "root", 22, Path(), Path(),
                        mesh_dir) for name, _ in zone_layout(spec))


def _owned(f: service.BundleFile, node: NodeLayout) -> HostFile:
    """A bundle file with the owner ``hosts.service.owner_commands`` gives it: the node's folder and the seal key
    are the service user's, the rest root's."""
    user = node.remote.run_as if node.remote else "root"
    mine = f.path.startswith(service.node_dir(node) + "/") or f.path == str(service.host_paths(node).static_key)
    return HostFile(f.path, f.data, f.mode, *((user, user) if mine else ("root", "root")))


def host_bundles(spec: MeshSpec, *, ca: pki.CertPair, now: dt.datetime, static_key: bytes | None,
                 admin_password: str, certs: dict[str, pki.CertPair] | None = None,
                 spec_dir: Path | None = None) -> list[HostBundle]:
    """Each node's bundle, the one the SSH runtime pushes (``runtime: ssh``): its config rendered for its host
    (``render_hosted_config``), the files and modes of ``hosts.service.node_bundle``, its service of
    ``hosts.service.node_service``, node i on ``hosts[i]`` (ports ``base`` and ``base + 1`` on each; relative key
    paths are ``spec_dir``'s); without hosts, loopback hosts (``loopback_remotes``, ports ``base + 2i``).
    ``certs``: node certificates to keep (by node name); the others are issued by ``ca`` for the node's name,
    its address and localhost."""
    if spec.seal.type != "static" and spec.seal.type not in KMS_SEALS:
        raise VaultmeshError(f"seal: {spec.seal.type} has no Ansible export: a rollout waits for every node to be "
                             "unsealed, which a "
                             + ("Shamir mesh needs a human for" if spec.seal.type == "shamir" else
                                "transit seal node on this machine's loopback cannot do for other hosts"),
                             hint="use the static or a KMS seal")
    remotes = remotes_of(spec, {"ssh": {"dir": spec.name}, "spec_dir": str(spec_dir) if spec_dir else None})
    hosted = bool(remotes)
    remotes = remotes or loopback_remotes(spec)
    base = spec.ports.base or API_PORT
    zones = zone_layout(spec)
    ports: list[int] = []
    for i in range(len(zones)):
        ports += [base, base + 1] if hosted else [base + 2 * i, base + 2 * i + 1]
    layout = build_layout(spec.name, remotes[0].mesh_dir, zones, [*ports, base + 2 * len(zones)],
                          transit_seal=False, remotes=remotes)
    seal_key = static_key if spec.seal.type == "static" else None
    out = []
    for i, node in enumerate(layout.nodes):
        remote = node.remote
        assert remote is not None
        user, paths = remote.run_as, service.host_paths(node)
        cert = (certs or {}).get(node.name)
        if cert is None:
            dns, ips = pki.node_cert_names(node.name)
            cert = pki.issue_server_cert(ca, node.name, dns_names=dns, ip_addresses=[*ips, node.host], now=now,
                                         days=spec.tls.cert_days)
        config = render_hosted_config(spec, layout, node, self_init=i == 0)
        files = service.node_bundle(node, ca=ca.cert_pem, config=config.encode(), cert=cert.cert_pem,
                                    key=cert.key_pem, static_key=seal_key)
        svc = service.node_service(node)
        folder = service.node_dir(node)
        dirs = [HostFile(str(d), b"", 0o755) for d in (paths.root, paths.ca_cert.parent, paths.nodes_dir)]
        dirs += [HostFile(d, b"", 0o700, owner=user, group=user)
                 for d in (folder, f"{folder}/tls", svc.data_dir, svc.audit_dir)]
        if seal_key is not None:
            dirs.append(HostFile(str(paths.static_key.parent), b"", 0o750, group=user))
        env = _owned(service.BundleFile(service.env_file(node),
                                        service.env_text({ADMIN_PASSWORD_ENV: admin_password}), 0o600),
                     node) if i == 0 else None
        ssh: dict[str, Any] = {"ansible_connection": "local"}
        if hosted:
            ssh = {"ansible_host": remote.address, "ansible_user": remote.user, "ansible_port": remote.port,
                   "ansible_ssh_private_key_file": str(remote.key_file),
                   "ansible_ssh_common_args": f"-o UserKnownHostsFile={remote.known_hosts} "
                                              "-o StrictHostKeyChecking=yes",
                   **({"ansible_become": True} if remote.user != "root" else {})}
        out.append(HostBundle(host=remote.host, zone=node.zone, node=node,
                              files=tuple(_owned(f, node) for f in files), dirs=tuple(dirs),
                              first_start_env=env, ssh=ssh))
    return out


@dataclass(frozen=True)
class ExportFile:
    """One file of the export: its path below the export dir, its bytes and mode (0600 when it holds a secret)."""

    path: str
    data: bytes
    mode: int


def _source(bundle: HostBundle, host_path: str) -> str:
    """Where the export keeps a host's file: ``files/<host>/<its path on the host>``."""
    return posixpath.join("files", bundle.host, host_path.lstrip("/"))


def _copy_item(bundle: HostBundle, f: HostFile) -> dict[str, str]:
    return {"src": _source(bundle, f.path), "dest": f.path, "mode": f"{f.mode:04o}", "owner": f.owner,
            "group": f.group}


def unit_path(bundle: HostBundle) -> str:
    return service.program_file(bundle.node, "systemd")


def program_path(bundle: HostBundle) -> str:
    return service.program_file(bundle.node, "supervisor")


def supervisor_config(bundle: HostBundle) -> str:
    return posixpath.join(bundle.root, service.SUPERVISOR_CONFIG)


def host_vars(bundle: HostBundle) -> dict[str, Any]:
    s = bundle.service
    env = bundle.first_start_env
    return {
        **bundle.ssh,
        "vaultmesh_node": s.node,
        "vaultmesh_zone": bundle.zone,
        "vaultmesh_address": bundle.address,
        "vaultmesh_api_port": bundle.api_port,
        "vaultmesh_manager": bundle.manager,
        "vaultmesh_engine": s.engine,
        "vaultmesh_user": s.user,
        "vaultmesh_service": s.name,
        "vaultmesh_unit": {"src": _source(bundle, unit_path(bundle)), "dest": unit_path(bundle)},
        "vaultmesh_program": {"src": _source(bundle, program_path(bundle)), "dest": program_path(bundle)},
        "vaultmesh_supervisor_config": supervisor_config(bundle),
        "vaultmesh_ca": next(f.path for f in bundle.files if f.path.endswith("/pki/ca.pem")),
        "vaultmesh_raft_db": posixpath.join(s.data_dir, "raft", "raft.db"),
        "vaultmesh_dirs": [{"path": d.path, "mode": f"{d.mode:04o}", "owner": d.owner, "group": d.group}
                           for d in bundle.dirs],
        "vaultmesh_files": [_copy_item(bundle, f) for f in bundle.files],
        **({"vaultmesh_first_start_env": _copy_item(bundle, env)} if env else {}),
    }


def inventory(spec: MeshSpec, bundles: Sequence[HostBundle]) -> dict[str, Any]:
    """``inventory.yaml``: one group, ``vaultmesh_<mesh>``, its hosts in node order."""
    return {"all": {"children": {group_name(spec): {
        "hosts": {b.host: host_vars(b) for b in bundles},
        "vars": {"vaultmesh_mesh": spec.name, "vaultmesh_healthy": HEALTHY},
    }}}}


def group_name(spec: MeshSpec) -> str:
    return f"vaultmesh_{spec.name.replace('-', '_')}"


def _task(name: str, module: str, args: dict[str, Any] | str, **extra: Any) -> dict[str, Any]:
    return {"name": name, module: args, **extra}


SYSTEMD = "vaultmesh_manager_is == 'systemd'"
SUPERVISOR = "vaultmesh_manager_is == 'supervisor'"
CHANGED = "bundle is changed or service_file is changed"


def playbook(spec: MeshSpec) -> list[dict[str, Any]]:
    """``site.yaml``: a first play asks every node whether it is active (none is on a first run); the second
    goes over the others in inventory order (node 1 first: it initialises the mesh), then the active one, so a
    change that restarts every node moves leadership once; one host at a time, each gated on its health."""
    tasks = [
        _task("the engine is installed", "ansible.builtin.stat", {"path": "{{ vaultmesh_engine }}"},
              register="engine"),
        _task("stop when it is not", "ansible.builtin.fail",
              {"msg": "{{ vaultmesh_engine }} is missing on {{ inventory_hostname }}: install OpenBao there "
                      "(the bao binary) or set the host's engine in the mesh file"},
              when="not engine.stat.exists or not engine.stat.executable"),
        _task("the service manager", "ansible.builtin.set_fact",
              {"vaultmesh_manager_is": "{{ vaultmesh_manager if vaultmesh_manager != 'auto' else ('systemd' if "
                                       "ansible_facts.service_mgr == 'systemd' else 'supervisor') }}"}),
        _task("the service user's group", "ansible.builtin.group",
              {"name": "{{ vaultmesh_user }}", "system": True}, when="vaultmesh_user != 'root'"),
        _task("the service user", "ansible.builtin.user",
              {"name": "{{ vaultmesh_user }}", "group": "{{ vaultmesh_user }}", "system": True,
               "create_home": False, "home": "/nonexistent", "shell": "/usr/sbin/nologin"},
              when="vaultmesh_user != 'root'"),
        _task("the node's folders", "ansible.builtin.file",
              {"path": "{{ item.path }}", "state": "directory", "mode": "{{ item.mode }}",
               "owner": "{{ item.owner }}", "group": "{{ item.group }}"}, loop="{{ vaultmesh_dirs }}"),
        _task("the bundle: CA, seal key, config, certificate and key", "ansible.builtin.copy",
              {"src": "{{ item.src }}", "dest": "{{ item.dest }}", "mode": "{{ item.mode }}",
               "owner": "{{ item.owner }}", "group": "{{ item.group }}"},
              loop="{{ vaultmesh_files }}", register="bundle", no_log=True),
        _task("has the node started before", "ansible.builtin.stat", {"path": "{{ vaultmesh_raft_db }}"},
              register="raft_db"),
        _task("node 1's first start: the admin password self-initialisation reads", "ansible.builtin.copy",
              {"src": "{{ vaultmesh_first_start_env.src }}", "dest": "{{ vaultmesh_first_start_env.dest }}",
               "mode": "{{ vaultmesh_first_start_env.mode }}", "owner": "{{ vaultmesh_first_start_env.owner }}",
               "group": "{{ vaultmesh_first_start_env.group }}"},
              when="vaultmesh_first_start_env is defined and not raft_db.stat.exists", no_log=True),
        _task("the systemd unit", "ansible.builtin.copy",
              {"src": "{{ vaultmesh_unit.src }}", "dest": "{{ vaultmesh_unit.dest }}", "mode": "0644",
               "owner": "root", "group": "root"}, register="service_file", when=SYSTEMD),
        _task("start it, or restart it when its bundle changed", "ansible.builtin.systemd",
              {"name": "{{ vaultmesh_service }}", "enabled": True, "daemon_reload": True,
               "state": f"{{{{ 'restarted' if ({CHANGED}) else 'started' }}}}"}, when=SYSTEMD),
        _task("the supervisord program", "ansible.builtin.copy",
              {"src": "{{ vaultmesh_program.src }}", "dest": "{{ vaultmesh_program.dest }}", "mode": "0600",
               "owner": "root", "group": "root"}, register="service_file", when=SUPERVISOR),
        _task("supervisord reads it (and starts it)", "ansible.builtin.command",
              {"argv": ["supervisorctl", "-c", "{{ vaultmesh_supervisor_config }}", "update",
                        "{{ vaultmesh_service }}"]},
              when=SUPERVISOR, changed_when="service_file is changed"),
        _task("restart it when its bundle changed", "ansible.builtin.command",
              {"argv": ["supervisorctl", "-c", "{{ vaultmesh_supervisor_config }}", "restart",
                        "{{ vaultmesh_service }}"]},
              when=f"({SUPERVISOR}) and bundle is changed and service_file is not changed"),
        _task("start it when it is stopped", "ansible.builtin.command",
              {"argv": ["supervisorctl", "-c", "{{ vaultmesh_supervisor_config }}", "start",
                        "{{ vaultmesh_service }}"]},
              when=SUPERVISOR, register="started",
              changed_when="'started' in started.stdout and 'already' not in started.stdout",
              failed_when="started.rc != 0 and 'already started' not in started.stdout"),
        _task("wait until the node serves (sys/health over TLS, verified with the mesh CA)", "ansible.builtin.uri",
              {"url": "https://{{ vaultmesh_address }}:{{ vaultmesh_api_port }}/v1/sys/health",
               "ca_path": "{{ vaultmesh_ca }}", "validate_certs": True, "status_code": "{{ vaultmesh_healthy }}"},
              register="health", until="health.status in vaultmesh_healthy", retries=HEALTH_RETRIES,
              delay=HEALTH_DELAY),
        _task("the admin password leaves the host once the node is initialised", "ansible.builtin.file",
              {"path": "{{ vaultmesh_first_start_env.dest }}", "state": "absent"},
              when="vaultmesh_first_start_env is defined"),
    ]
    group = group_name(spec)
    health: dict[str, Any] = {"url": "https://{{ vaultmesh_address }}:{{ vaultmesh_api_port }}/v1/sys/health",
              "ca_path": "{{ vaultmesh_ca }}", "validate_certs": True}
    leaders = ("ansible_play_hosts_all | map('extract', hostvars) | selectattr('vaultmesh_leads') "
               "| map(attribute='inventory_hostname') | list")
    order = [
        _task("is the node active now", "ansible.builtin.uri", {**health, "status_code": [200]},
              register="leading", failed_when=False),
        _task("remember it", "ansible.builtin.set_fact",
              {"vaultmesh_leads": "{{ leading.status | default(-1) == 200 }}"}),
        _task("the rollout's order: the others in inventory order, then the active node", "ansible.builtin.add_host",
              {"name": "{{ item }}", "groups": f"{group}_rollout"},
              loop="{{ (ansible_play_hosts_all | reject('in', leaders) | list) + leaders }}",
              vars={"leaders": f"{{{{ {leaders} }}}}"}, run_once=True, changed_when=False),
    ]
    return [
        {"name": f"OpenBao mesh {spec.name}: which node leads now (it is restarted last)", "hosts": group,
         "gather_facts": False, "tasks": order},
        {"name": f"OpenBao mesh {spec.name}, one node at a time, each healthy before the next",
         "hosts": f"{group}_rollout", "serial": 1, "any_errors_fatal": True,
         "gather_facts": True, "tasks": tasks},
    ]


def _yaml(value: object, header: str) -> bytes:
    return (header + yaml.safe_dump(value, sort_keys=False, width=120, allow_unicode=True)).encode()


def ansible_files(spec: MeshSpec, bundles: Sequence[HostBundle]) -> list[ExportFile]:
    """Every file of the export: ``inventory.yaml``, ``site.yaml``, and below ``files/<host>/`` each host's
    bundle, unit and program at their paths on the host (secret ones 0600)."""
    head = f"# {{}} of mesh {spec.name}, rendered by `vaultmesh export ansible`; do not edit.\n"
    out = [ExportFile("inventory.yaml", _yaml(inventory(spec, bundles), head.format("Ansible inventory")), 0o644),
           ExportFile("site.yaml", _yaml(playbook(spec), head.format("Playbook") +
                                         "# ansible-playbook -i inventory.yaml site.yaml\n"), 0o644)]
    for b in bundles:
        for f in (*b.files, *([b.first_start_env] if b.first_start_env else [])):
            out.append(ExportFile(_source(b, f.path), f.data, 0o600 if f.secret else 0o644))
        out.append(ExportFile(_source(b, unit_path(b)), service.render_service(b.node, "systemd").encode(), 0o644))
        out.append(ExportFile(_source(b, program_path(b)), service.render_service(b.node, "supervisor").encode(),
                              0o644))
    return out
