"""What a node of a ``runtime: ssh`` mesh is on its host: the files of its bundle and the service manager's
commands for it (systemd, or supervisord where systemd does not run the host). Pure: values in, paths, texts
and argv lists out; ``hosts.runtime`` runs them over SSH."""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from vaultmesh.layout import NodeLayout, Remote, StatePaths
from vaultmesh.render.unit import NodeService, render_supervisor_program, render_systemd_unit

SUPERVISOR_CONFIG = "etc/supervisor/supervisord.conf"
"""Below the host's root: supervisord's main config (Debian's place); programs go in its ``conf.d``."""
SUPERVISOR_PROGRAMS = "etc/supervisor/conf.d"
SYSTEMD_UNITS = "etc/systemd/system"



@dataclass(frozen=True)
class BundleFile:
    """One file of a node's bundle: its path on the host, its bytes and its mode."""

    path: str
    data: bytes
    mode: int


def service_name(node: NodeLayout) -> str:
    """The node's service on its host: ``vaultmesh-<mesh>-<node>`` (the mesh's folder name on the host)."""
    assert node.remote is not None
    return f"vaultmesh-{posixpath.basename(str(node.remote.mesh_dir))}-{node.name}"


def host_paths(node: NodeLayout) -> StatePaths:
    assert node.remote is not None
    return StatePaths(node.remote.mesh_dir)


def node_dir(node: NodeLayout) -> str:
    return str(host_paths(node).nodes_dir / node.name)


def env_file(node: NodeLayout) -> str:
    """The node's environment file on its host (0600): only node 1's first start has one (the admin password
    self-initialisation reads), removed at its next start."""
    return f"{node_dir(node)}/env"


def env_text(env: dict[str, str]) -> bytes:
    """An environment file's bytes: ``KEY=value`` lines, each value quoted for the shell that sources it (the
    supervisord command) and read as is by systemd's ``EnvironmentFile``."""
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()).encode()


def manager(remote: Remote, systemd_runs: bool) -> str:
    """``systemd`` or ``supervisor``: what the host spec asks, ``auto`` taking systemd where it runs the host."""
    if remote.service != "auto":
        return remote.service
    return "systemd" if systemd_runs else "supervisor"


SYSTEMD_PROBE = ["systemctl", "is-system-running"]
"""Prints running/degraded/starting... where systemd runs the host; fails where it does not."""


def program_file(node: NodeLayout, kind: str) -> str:
    assert node.remote is not None
    root = str(node.remote.root)
    if kind == "systemd":
        return posixpath.join(root, SYSTEMD_UNITS, f"{service_name(node)}.service")
    return posixpath.join(root, SUPERVISOR_PROGRAMS, f"{service_name(node)}.conf")


def node_service(node: NodeLayout, engine: str | None = None) -> NodeService:
    """The node's service as ``render.unit`` renders it (a systemd unit or a supervisord program), on
    ``engine`` (default: its host's)."""
    remote = node.remote
    assert remote is not None
    folder = node_dir(node)
    return NodeService(mesh=posixpath.basename(str(remote.mesh_dir)), node=node.name, engine=engine or remote.engine,
                       config=f"{folder}/config.hcl", data_dir=f"{folder}/data", audit_dir=f"{folder}/audit",
                       env_file=env_file(node), user=remote.run_as, group=remote.run_as)


def render_service(node: NodeLayout, kind: str, engine: str | None = None) -> str:
    """The text of the node's service file for the host's manager."""
    svc = node_service(node, engine)
    return render_systemd_unit(svc) if kind == "systemd" else render_supervisor_program(svc)


def owner_commands(node: NodeLayout) -> list[list[str]]:
    """Make the service user when the host lacks it, and give it the node's folder and the seal key (the node
    reads its config, key and seal key and writes its data and audit log as that user; root keeps the rest)."""
    remote = node.remote
    assert remote is not None
    if remote.run_as == "root":
        return []
    user = remote.run_as
    paths = host_paths(node)
    return [["sh", "-c", f"getent passwd {shlex.quote(user)} >/dev/null || useradd --system --no-create-home "
                         f"--home-dir /nonexistent --shell /usr/sbin/nologin {shlex.quote(user)}"],
            ["chown", "-R", f"{user}:{user}", node_dir(node)],
            ["sh", "-c", f"[ ! -f {shlex.quote(str(paths.static_key))} ] || chown {shlex.quote(user)} "
                         f"{shlex.quote(str(paths.static_key))}"],
            ["chmod", "0755", str(paths.root), str(paths.nodes_dir), str(paths.ca_cert.parent)]]


def ctl(node: NodeLayout, kind: str, verb: str) -> list[str]:
    """The service manager's command for ``verb`` (start, stop, restart, hup, add, enable, forget, log) on the node."""
    name = service_name(node)
    assert node.remote is not None
    if kind == "systemd":
        table = {"start": ["systemctl", "start", name], "stop": ["systemctl", "stop", name],
                 "restart": ["systemctl", "restart", name],
                 "hup": ["systemctl", "reload", name],
                 "add": ["systemctl", "daemon-reload"],
                 "enable": ["systemctl", "enable", name],
                 "forget": ["systemctl", "daemon-reload"],
                 "log": ["journalctl", "--no-pager", "-n", "15", "-u", name]}
        return table[verb]
    base = ["supervisorctl", "-c", posixpath.join(str(node.remote.root), SUPERVISOR_CONFIG)]
    table = {"start": [*base, "start", name], "stop": [*base, "stop", name], "restart": [*base, "restart", name],
             "hup": [*base, "signal", "HUP", name],
             "add": [*base, "update", name], "enable": [*base, "update", name], "forget": [*base, "update"],
             "log": [*base, "tail", "-2000", name]}
    return table[verb]


def pid_probe(node: NodeLayout) -> list[str]:
    """``pgrep`` for the node's server process: its command line ends with ``server -config=<its config>``."""
    config = re.sub(r"([.+^$()\[\]{}|*?\\])", r"\\\1", f"{node_dir(node)}/config.hcl")
    return ["pgrep", "-o", "-f", "--", f" server -config={config}$"]


def parse_pid(text: str) -> int | None:
    """The pid a service manager printed (0 or nothing or an error: not running)."""
    word = text.strip().split()[0] if text.strip() else ""
    return int(word) if word.isdigit() and int(word) > 0 else None


def node_bundle(node: NodeLayout, *, ca: bytes, config: bytes, cert: bytes, key: bytes,
                static_key: bytes | None) -> list[BundleFile]:
    """Every file a node needs on its host, at its path there: the CA, the seal key (static seal), its config,
    certificate and key (its service file goes with its start). Keys and config 0600."""
    paths = host_paths(node)
    folder = node_dir(node)
    files = [BundleFile(str(paths.ca_cert), ca, 0o644),
             BundleFile(f"{folder}/config.hcl", config, 0o600),
             BundleFile(f"{folder}/tls/cert.pem", cert, 0o644),
             BundleFile(f"{folder}/tls/key.pem", key, 0o600)]
    if static_key is not None:
        files.append(BundleFile(str(paths.static_key), static_key, 0o600))
    return files


# -- the entry on a host (entry.hosts) -------------------------------------------------------------------

def entry_name(remote: Remote) -> str:
    """The entry's program on a host: ``vaultmesh-<mesh>-entry``."""
    return f"vaultmesh-{posixpath.basename(str(remote.mesh_dir))}-entry"


def entry_config(remote: Remote) -> str:
    """The entry's HAProxy config on its host."""
    return str(StatePaths(remote.mesh_dir).entry_dir / "haproxy.cfg")


def entry_program_file(remote: Remote) -> str:
    return posixpath.join(str(remote.root), SUPERVISOR_PROGRAMS, f"{entry_name(remote)}.conf")


def render_entry_program(remote: Remote, haproxy: str = "/usr/sbin/haproxy") -> str:
    """supervisord's program for the entry: HAProxy in the foreground on its config, as the node's user,
    restarted when it exits unexpectedly. It holds no key (TLS passes through)."""
    return "\n".join([
        f"; {entry_name(remote)}: the entry of mesh {posixpath.basename(str(remote.mesh_dir))}, rendered by "
        "vaultmesh; do not edit.",
        f"[program:{entry_name(remote)}]",
        f"command={shlex.join([haproxy, '-db', '-f', entry_config(remote)])}",
        f"directory={posixpath.dirname(entry_config(remote))}",
        f"user={remote.run_as}",
        "autostart=true",
        "autorestart=unexpected",
        "startsecs=1",
        "stopsignal=TERM",
        "stopwaitsecs=10",
        "redirect_stderr=true",
        "stdout_logfile=AUTO",
        "",
    ])


def entry_ctl(remote: Remote, verb: str) -> list[str]:
    """supervisorctl for the entry's program (``add``, ``start``, ``stop``, ``restart``, ``forget``)."""
    base = ["supervisorctl", "-c", posixpath.join(str(remote.root), SUPERVISOR_CONFIG)]
    name = entry_name(remote)
    return {"add": [*base, "update", name], "start": [*base, "start", name], "stop": [*base, "stop", name],
            "restart": [*base, "restart", name], "forget": [*base, "update"]}[verb]


def entry_pid_probe(remote: Remote) -> list[str]:
    config = re.sub(r"([.+^$()\[\]{}|*?\\])", r"\\\1", entry_config(remote))
    return ["pgrep", "-o", "-f", "--", f"haproxy -db -f {config}$"]


def parse_disk_and_limits(text: str) -> tuple[int | None, float | None, str | None, int | None]:
    """What ``runtime.disk_and_limits`` printed: (core limit, free share, filesystem type, device); None where a
    line is missing."""
    core = free = fstype = device = None
    for line in text.splitlines():
        words = line.split()
        if line.startswith("Max core file size") and len(words) >= 5:
            core = 0 if words[4] == "0" else (-1 if words[4] == "unlimited" else int(words[4]))
        elif words[:1] == ["fs"] and len(words) >= 4 and words[1].isdigit() and words[2].isdigit():
            free = int(words[1]) / int(words[2]) if int(words[2]) else None
            fstype = words[3]
        elif words[:1] == ["dev"] and len(words) >= 2 and words[1].isdigit():
            device = int(words[1])
    return core, free, fstype, device
