"""The SSH transport to a mesh's hosts (paramiko): one kept-open connection per host, the host's key checked
against the mesh file's ``known_hosts`` (an unknown or changed key is refused, never learnt), login with the
given key only (no agent, no password). Commands are argv lists, quoted here; files are written atomically
(a temporary name, its mode set, then renamed) so a host never holds half a file."""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import paramiko

from vaultmesh.errors import RuntimeFailure
from vaultmesh.layout import Remote

CONNECT_TIMEOUT = 5.0
"""Seconds to reach a host's sshd and finish the handshake."""

COMMAND_TIMEOUT = 60.0

CHANNEL_TIMEOUT = 15.0
"""Seconds a fresh channel may take to open before the connection is made again."""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class Session:
    """One SSH connection to one host."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def _connect(self) -> paramiko.SSHClient:
        r = self.remote
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        if not r.known_hosts.is_file():
            raise RuntimeFailure(f"host {r.where}: its known_hosts file {r.known_hosts} does not exist",
                                 hint="add the host's key to it (ssh-keyscan, checked out of band); vaultmesh "
                                      "never trusts a host key on first use")
        client = paramiko.SSHClient()
        client.load_host_keys(str(r.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(r.address, port=r.port, username=r.user, key_filename=str(r.key_file),
                           allow_agent=False, look_for_keys=False, timeout=CONNECT_TIMEOUT,
                           banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT)
        except paramiko.BadHostKeyException:
            client.close()
            raise RuntimeFailure(f"host {r.where} presented a host key that differs from {r.known_hosts}; "
                                 "refused", hint="if the host was reinstalled, check its new key out of band and "
                                                 "replace its line in known_hosts") from None
        except paramiko.SSHException as err:
            client.close()
            if "not found in known_hosts" in str(err):
                raise RuntimeFailure(f"host {r.where} is not in {r.known_hosts}; refused (no trust on first use)",
                                     hint="add its key to known_hosts, checked out of band") from None
            raise RuntimeFailure(f"host {r.where}: SSH failed: {err}",
                                 hint=f"check that {r.user} may log in with {r.key_file}") from None
        except (TimeoutError, OSError) as err:
            client.close()
            raise RuntimeFailure(f"host {r.where} is not reachable over SSH: {err}",
                                 hint="check that the host is up and its sshd listens") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
        self._client = client
        return client

    def _channel_ready(self) -> paramiko.SSHClient:
        """The connection, once it has opened a channel within ``CHANNEL_TIMEOUT``: a connection that cannot (seen
        on a loaded machine: the first channel of a fresh connection never answered) is dropped and made again,
        once. Every command and file write of this module is idempotent, so the retry is safe."""
        for attempt in (1, 2):
            client = self._connect()
            transport = client.get_transport()
            try:
                assert transport is not None
                transport.open_session(timeout=CHANNEL_TIMEOUT).close()
                return client
            except (paramiko.SSHException, OSError, EOFError, AssertionError) as err:
                self.close()
                if attempt == 2:
                    raise RuntimeFailure(f"host {self.remote.where}: no SSH channel opened within "
                                         f"{CHANNEL_TIMEOUT:g} s, twice: {err or type(err).__name__}",
                                         hint="check the host's load and its sshd (MaxSessions)") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT,
            stdin: bytes | None = None) -> Result:
        """Run ``argv`` on the host (quoted: no word is ever split or expanded by its shell)."""
        return self.shell(shlex.join(argv), check=check, timeout=timeout, stdin=stdin)

    def shell(self, command: str, *, check: bool = True, timeout: float = COMMAND_TIMEOUT,
              stdin: bytes | None = None) -> Result:
        """Run a command line the caller quoted (``run`` for argv)."""
        with self._lock:
            client = self._channel_ready()
            try:
                chan_in, chan_out, chan_err = client.exec_command(command, timeout=timeout)
                if stdin is not None:
                    chan_in.write(stdin)
                chan_in.channel.shutdown_write()
                out = chan_out.read().decode(errors="replace")
                err = chan_err.read().decode(errors="replace")
                code = chan_out.channel.recv_exit_status()
            except (TimeoutError, paramiko.SSHException, OSError, EOFError) as err_:
                self.close()
                raise RuntimeFailure(f"host {self.remote.where}: the connection broke during "
                                     f"`{_short(command)}`: {err_ or type(err_).__name__}",
                                     hint="check that the host is reachable, then run the command again") from None
        if check and code != 0:
            raise RuntimeFailure(f"host {self.remote.where}: `{_short(command)}` exited {code}: "
                                 f"{(err or out).strip()[-300:]}")
        return Result(code, out, err)

    def put(self, path: str, data: bytes, mode: int) -> None:
        """Write ``data`` to ``path`` on the host atomically with ``mode`` (folders made 0700 as needed)."""
        folder = posixpath.dirname(path)
        tmp = f"{path}.vaultmesh-tmp"
        with self._lock:
            client = self._channel_ready()
            try:
                sftp = client.open_sftp()
                try:
                    _makedirs(sftp, folder)
                    with sftp.open(tmp, "wb") as f:
                        f.set_pipelined(True)
                        f.write(data)
                    sftp.chmod(tmp, mode)
                    sftp.posix_rename(tmp, path)
                finally:
                    sftp.close()
            except (paramiko.SSHException, OSError, EOFError) as err:
                self.close()
                raise RuntimeFailure(f"host {self.remote.where}: writing {path} failed: {err}") from None

    def digests(self, paths: Sequence[str]) -> dict[str, str]:
        """sha256 of each file that exists on the host (one command for all)."""
        if not paths:
            return {}
        res = self.shell("sha256sum -- " + " ".join(shlex.quote(p) for p in paths) + " 2>/dev/null", check=False)
        found = {}
        for line in res.out.splitlines():
            digest, _, name = line.partition("  ")
            if name:
                found[name] = digest
        return found


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _short(command: str) -> str:
    return command if len(command) <= 120 else command[:117] + "..."


def _makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
    missing = []
    while folder and folder != "/":
        try:
            sftp.stat(folder)
            break
        except OSError:
            missing.append(folder)
            folder = posixpath.dirname(folder)
    for path in reversed(missing):
        sftp.mkdir(path, mode=0o700)


_sessions: dict[tuple[str, int, str], Session] = {}
_sessions_lock = threading.Lock()


def session(remote: Remote) -> Session:
    """The kept-open session to ``remote``'s host (one per address, port and user in this process)."""
    key = (remote.address, remote.port, remote.user)
    with _sessions_lock:
        found = _sessions.get(key)
        if found is None or found.remote != remote:
            found = _sessions[key] = Session(remote)
        return found


def close_all() -> None:
    with _sessions_lock:
        for s in _sessions.values():
            s.close()
        _sessions.clear()
