"""Make and remove the lab's hosts: namespaces and links (``runtime.netns``), keys, files, sshd and supervisord.

``lab_up`` writes ``lab.json`` (the whole plan) before it makes anything and again after each host, so
``lab_down`` removes everything a half-made ``lab_up`` left. Both need root, iproute2, openssh-server and
supervisor (``unavailable`` says which is missing).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import xmlrpc.client
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vaultmesh.errors import RuntimeFailure, VaultmeshError
from vaultmesh.fsutil import ensure_dir, read_json, write_atomic, write_json
from vaultmesh.lab.plan import (
    LAB_PREFIX,
    LabHost,
    LabRecord,
    check_host_count,
    missing_requirement,
    plan_lab,
    render_known_hosts,
    render_mesh_file,
    render_sshd_config,
    render_supervisord_conf,
)
from vaultmesh.runtime import netns
from vaultmesh.runtime.local import pid_alive, resolve_engine, start_process, stop_processes, wait_until

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
"""sshd's privilege-separation folder (Debian's openssh-server makes it at boot through systemd, which is not
always there)."""
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
"""supervisord stops its programs (up to their own stop wait, 10 s by default) before it exits."""

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def record_file(dir: Path) -> Path:
    return dir / "lab.json"


def unavailable() -> str | None:
    """Why the lab cannot be made here (one sentence naming the Debian package), or None when it can."""
    found = {"ip": shutil.which("ip"), "sshd": SSHD if os.access(SSHD, os.X_OK) else None,
             "supervisord": shutil.which("supervisord"), "supervisorctl": shutil.which("supervisorctl")}
    why = missing_requirement(is_root=os.geteuid() == 0, found=found)
    if why:
        return why
    why = netns.unavailable()
    return f"vaultmesh lab: {why}" if why else None


def load(dir: Path) -> LabRecord:
    path = record_file(dir.absolute())
    try:
        return LabRecord.from_json(read_json(path))
    except FileNotFoundError:
        raise VaultmeshError(f"no lab in {dir.absolute()} (no lab.json); nothing was done",
                             hint="make one with `vaultmesh lab up --hosts N --dir DIR`") from None
    except (ValueError, KeyError, TypeError) as err:
        raise VaultmeshError(f"{path} is not a lab record: {err}") from None


def _save(record: LabRecord) -> None:
    write_json(record_file(Path(record.dir)), record.to_json())


def _new_key() -> tuple[bytes, str]:
    """A new ed25519 key: (private key in OpenSSH format, public key line ``ssh-ed25519 AAAA...``)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def _write_key(path: Path, comment: str) -> str:
    private, public = _new_key()
    write_atomic(path, private, mode=0o600)
    write_atomic(path.with_name(path.name + ".pub"), f"{public} {comment}\n".encode(), mode=0o644)
    return public


def _install_engine(engine: str, target: Path) -> None:
    """The engine at ``target`` as a VM image would have it: a hard link (same file system), else a copy."""
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    try:
        os.link(engine, target)
    except OSError:
        shutil.copy2(engine, target)


def _prepare_host(host: LabHost, user_key: str, engine: str) -> str:
    """The host's root folder: configs, its host key, the authorised key, the engine. Returns its host key."""
    files = host.files
    ensure_dir(files.supervisor_socket.parent)  # 0700: only root reaches the supervisors
    for folder in (files.root, *files.dirs):  # open like a host's own folders; the secrets in them are 0600
        ensure_dir(folder, 0o755)
    host_key = _write_key(files.host_key, f"root@{host.name}")
    write_atomic(files.authorized_keys, f"{user_key} vaultmesh-lab\n".encode(), mode=0o600)
    write_atomic(files.sshd_config, render_sshd_config(host).encode(), mode=0o600)
    write_atomic(files.supervisord_conf, render_supervisord_conf(host).encode(), mode=0o600)
    _install_engine(engine, files.engine)
    return host_key


def _start_host(host: LabHost) -> LabHost:
    """sshd and supervisord in the host's namespace, in the foreground of their own sessions (``ip netns exec``
    execs them, so the pids are theirs)."""
    files = host.files
    ensure_dir(PRIVSEP_DIR, 0o755)
    inside = ["ip", "netns", "exec", host.netns]
    sshd = start_process([*inside, SSHD, "-D", "-f", str(files.sshd_config), "-E", str(files.sshd_log)],
                         cwd=files.root, log_file=files.root / "var/log/sshd.out", pid_file=files.sshd_pid)
    supervisord = start_process([*inside, shutil.which("supervisord") or "supervisord", "-n", "-c",
                                 str(files.supervisord_conf)],
                                cwd=files.root, log_file=files.root / "var/log/supervisord.out",
                                pid_file=files.supervisord_pid)
    return replace(host, sshd_pid=sshd, supervisord_pid=supervisord)


class _UnixHTTP(http.client.HTTPConnection):
    """HTTP over a unix socket: how supervisorctl reaches supervisord."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.path))
        self.sock = sock


def supervisor_pid(host: LabHost, timeout: float = 5.0) -> int | None:
    """supervisord's own pid as it answers on the host's socket (``supervisorctl pid``, without starting a Python
    process per question); None when it does not answer."""
    conn = _UnixHTTP(host.files.supervisor_socket, timeout)
    try:
        conn.request("POST", "/RPC2", xmlrpc.client.dumps((), "supervisor.getPID"), {"Content-Type": "text/xml"})
        answer = conn.getresponse()
        return int(xmlrpc.client.loads(answer.read())[0][0]) if answer.status == 200 else None
    except (OSError, http.client.HTTPException, xmlrpc.client.Error, ValueError, IndexError):
        return None
    finally:
        conn.close()


def ssh_banner(address: str, port: int = 22, timeout: float = 1.0) -> str | None:
    """The SSH banner at ``address``, or None when nothing answers with one."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(256)
    except OSError:
        return None
    return data.decode(errors="replace").strip() if data.startswith(b"SSH-") else None


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "no log"


def _ready(host: LabHost) -> bool:
    """sshd answers with its banner and supervisord on its socket; a daemon that exited is a failure now."""
    files = host.files
    for what, pid, log in (("sshd", host.sshd_pid, files.sshd_log),
                           ("supervisord", host.supervisord_pid, files.supervisord_log)):
        if not pid_alive(pid):
            raise RuntimeFailure(f"lab host {host.name}: {what} exited at start: {_tail(log)}",
                                 hint=f"see {log}; `vaultmesh lab down --dir {Path(host.root).parent.parent}` "
                                      "removes what was made")
    if ssh_banner(host.address) is None:
        return False
    return supervisor_pid(host) == host.supervisord_pid


def _existing(record: LabRecord) -> list[str]:
    """The lab's namespaces and links that exist on this machine."""
    names = [*(("netns", h.netns) for h in record.hosts), *(("link", n) for n in record.links)]
    return [name for kind, name in names if netns.exists(kind, name)]


def lab_up(dir: Path, hosts: int, *, engine: str | None = None, timeout: float = READY_TIMEOUT,
           progress: Progress = _quiet) -> LabRecord:
    """Make ``hosts`` local hosts in ``dir`` and wait until each one's sshd and supervisord answer.

    Refuses a ``dir`` that already holds a lab (live or half-made: ``lab_down`` it first) or other files."""
    check_host_count(hosts)
    why = unavailable()
    if why:
        raise VaultmeshError(why)
    dir = dir.absolute()
    if record_file(dir).exists():
        raise VaultmeshError(f"{dir} holds a lab already (lab.json); nothing was done",
                             hint=f"remove it with `vaultmesh lab down --dir {dir}`, or pick another --dir")
    if dir.exists() and any(dir.iterdir()):
        raise VaultmeshError(f"{dir} is not empty and holds no lab; nothing was done",
                             hint="pick a new or empty --dir")
    engine_path = resolve_engine(engine).path
    lab_id = netns.mesh_net_id(dir)
    record = plan_lab(dir, lab_id, netns.choose_octet(lab_id, netns.used_octets(LAB_PREFIX)), hosts)
    stale = _existing(record)
    if stale:
        verb = "exist" if len(stale) > 1 else "exists"
        raise VaultmeshError(f"{', '.join(stale)} {verb} already: left from a lab in {dir} whose folder was "
                             "removed without `lab down`; nothing was done",
                             hint="stop what runs in them (ip netns pids NAME), then ip netns del / ip link del each")
    ensure_dir(dir, 0o755)
    _save(record)
    user_key = _write_key(record.key_file, "vaultmesh-lab")
    netns.ensure_bridge(record.bridge, record.gateway)
    host_keys: dict[str, str] = {}
    for host in record.hosts:
        progress(f"host {host.name}: {host.address} ({host.zone}) in namespace {host.netns}")
        netns.ensure_host(host.netns, host.veth, host.peer, record.bridge, host.address)
        host_keys[host.address] = _prepare_host(host, user_key, engine_path)
        record = record.with_host(_start_host(host))
        _save(record)
    write_atomic(record.known_hosts, render_known_hosts(host_keys).encode(), mode=0o600)
    write_atomic(record.mesh_file, render_mesh_file(record).encode(), mode=0o600)
    late = list(record.hosts)

    def all_ready() -> bool:
        late[:] = [h for h in late if not _ready(h)]
        return not late

    wait_until(all_ready, timeout=timeout, interval=0.05)
    if late:
        raise RuntimeFailure(f"lab host {late[0].name} ({late[0].address}): sshd or supervisord did not answer "
                             f"within {timeout:.0f} s",
                             hint=f"see {late[0].files.sshd_log}; `vaultmesh lab down --dir {dir}` removes what "
                                  "was made")
    return record


def lab_down(dir: Path, *, progress: Progress = _quiet) -> list[str]:
    """Remove the lab in ``dir``: each supervisord shut down (stopping what it runs), then every process left in each
    namespace, the namespaces, the links, and ``dir``. Returns what was removed. No lab there: nothing to do."""
    dir = dir.absolute()
    if not dir.exists():
        return []
    record = load(dir)
    gone: list[str] = []
    # SIGTERM is supervisord's `shutdown`: it stops what it runs (each program's stopsignal, stopwaitsecs), then
    # exits. Every host's supervisord and sshd at once. (supervisorctl shutdown does the same but costs a Python
    # start per host.)
    stop_processes([pid for h in record.hosts for pid in (h.supervisord_pid, h.sshd_pid)
                    if pid_alive(pid, cmd_contains=h.root)], timeout=STOP_TIMEOUT)
    for host in record.hosts:
        left = netns.namespace_pids(host.netns)
        if left:
            progress(f"host {host.name}: stopping {len(left)} process(es) left in {host.netns}")
            stop_processes(left, timeout=STOP_TIMEOUT)
        gone += [name for kind, name in (("link", host.veth), ("netns", host.netns)) if netns.delete(kind, name)]
        host.files.supervisor_socket.unlink(missing_ok=True)
    if netns.delete("link", record.bridge):
        gone.append(record.bridge)
    left = _existing(record)
    if left:
        raise RuntimeFailure(f"lab down: {', '.join(left)} could not be deleted; {dir} is kept",
                             hint=f"see `ip netns pids` and `ip link`, then run `vaultmesh lab down --dir {dir}` again")
    shutil.rmtree(dir)
    gone.append(str(dir))
    return gone


def cut(dir: Path, host: str) -> None:
    """Cut ``host`` off: its link down in the root namespace (nothing reaches it, it reaches nothing)."""
    netns.set_link(load(dir).host(host).veth, up=False)


def mend(dir: Path, host: str) -> None:
    """Undo ``cut``: the host's link up again."""
    netns.set_link(load(dir).host(host).veth, up=True)

