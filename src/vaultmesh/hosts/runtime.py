"""A node on its host (``runtime: ssh``), over the SSH transport: push its bundle (only files whose bytes
differ), start, stop and restart it through the host's service manager, find its pid, remove it.

Everything the controller knows stays in the state dir (the node's folder there is its staged bundle); the host
gets a copy at the same relative paths below ``<root>/var/lib/vaultmesh/<mesh>``."""

from __future__ import annotations

import shlex
import threading
from collections.abc import Mapping

from vaultmesh.errors import EngineBinaryError, RuntimeFailure
from vaultmesh.hosts import service
from vaultmesh.hosts.transport import Session, digest, session
from vaultmesh.layout import NodeLayout, Remote, StatePaths
from vaultmesh.render.unit import STOP_TIMEOUT
from vaultmesh.waiting import wait_until

_kinds: dict[str, str] = {}
_engines: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def _remote(node: NodeLayout) -> Remote:
    assert node.remote is not None, f"{node.name} is not on a host"
    return node.remote


def _session(node: NodeLayout) -> Session:
    return session(_remote(node))


def kind(node: NodeLayout) -> str:
    """The host's service manager for the node (probed once per host and process when ``auto``)."""
    return kind_of(_remote(node))


def kind_of(remote: Remote) -> str:
    """The host's service manager (probed once per host and process when ``auto``)."""
    with _lock:
        found = _kinds.get(remote.address)
    if found is None:
        runs = False
        if remote.service == "auto":
            res = session(remote).run(service.SYSTEMD_PROBE, check=False)
            runs = res.out.strip() in ("running", "degraded", "starting", "initializing")
        found = service.manager(remote, runs)
        with _lock:
            _kinds[remote.address] = found
    return found


def engine_of(node: NodeLayout, recorded: str | None = None) -> str:
    """The engine binary the node starts on, on its host: the one an upgrade recorded for it, else its host's."""
    return recorded or _remote(node).engine


def engine_version(node: NodeLayout, engine: str | None = None) -> tuple[str, str]:
    """(product, version) the engine binary on the node's host reports (``OpenBao v2.7.2`` -> ``("OpenBao",
    "2.7.2")``); asked once per host and binary."""
    remote = _remote(node)
    path = engine or remote.engine
    key = (remote.address, path)
    with _lock:
        found = _engines.get(key)
    if found is None:
        res = _session(node).run([path, "version"], check=False)
        words = res.out.split()
        if res.code != 0 or len(words) < 2 or words[0] not in ("OpenBao", "Vault"):
            raise EngineBinaryError(f"host {remote.where}: {path} is not an OpenBao or Vault binary "
                                    f"({(res.err or res.out).strip()[:120] or f'exit {res.code}'})",
                                    hint=f"install OpenBao on {remote.host}, or set hosts[].engine to its path")
        found = f"{words[0]} {words[1].lstrip('v')}"
        with _lock:
            _engines[key] = found
    product, _, version = found.partition(" ")
    return product, version


def local_bundle(node: NodeLayout, paths: StatePaths, *, static_seal: bool) -> list[service.BundleFile]:
    """The node's bundle as staged in the state dir ``paths``."""
    return service.node_bundle(node, ca=paths.ca_cert.read_bytes(), config=node.config_file.read_bytes(),
                               cert=node.cert_file.read_bytes(), key=node.key_file.read_bytes(),
                               static_key=paths.static_key.read_bytes() if static_seal else None)


def push(node: NodeLayout, files: list[service.BundleFile]) -> list[str]:
    """Write each file whose bytes differ from the host's (one checksum command for all); make the node's data
    folder. Returns the paths written (none: the host already had them all)."""
    s = _session(node)
    have = s.digests([f.path for f in files])
    changed = [f for f in files if have.get(f.path) != digest(f.data)]
    for f in changed:
        s.put(f.path, f.data, f.mode)
    folder = service.node_dir(node)
    s.run(["mkdir", "-p", "-m", "0700", f"{folder}/data", f"{folder}/audit"])
    return [f.path for f in changed]


def pid(node: NodeLayout) -> int | None:
    """The node's pid on its host (None: it does not run): the oldest process running the engine on its config
    (``pgrep``, a C tool: the observe loop asks twice a second, and supervisorctl is a Python start each time)."""
    res = _session(node).run(service.pid_probe(node), check=False)
    return service.parse_pid(res.out)


def start(node: NodeLayout, env: Mapping[str, str] | None = None, *, engine: str | None = None,
          timeout: float = 20.0) -> int:
    """Install the node's service (its program file, written when it differs: another ``engine`` on the host is
    a new program, which the manager starts anew) and start it; ``env`` goes to its environment file (0600) for
    this start only. Returns its pid on the host."""
    engine = engine_of(node, engine)
    engine_version(node, engine)
    s = _session(node)
    how = kind(node)
    text = service.render_service(node, how, engine)
    path = service.program_file(node, how)
    env_path = service.env_file(node)
    if env:  # the unit and the program read it at each start: only a first start finds something in it
        s.put(env_path, service.env_text(dict(env)), 0o600)
    else:
        s.run(["sh", "-c", f"[ -f {shlex.quote(env_path)} ] || (umask 077 && : > {shlex.quote(env_path)})"])
    for argv in service.owner_commands(node):
        s.run(argv)
    if s.digests([path]).get(path) != digest(text.encode()):
        s.put(path, text.encode(), 0o644 if how == "systemd" else 0o600)
        s.run(service.ctl(node, how, "add"), check=False)
        if how == "systemd":
            s.run(service.ctl(node, how, "enable"))
    res = s.run(service.ctl(node, how, "start"), check=False)
    if res.code != 0 and "already started" not in res.out:
        raise RuntimeFailure(f"host {_remote(node).where}: starting {service.service_name(node)} failed: "
                             f"{(res.out + res.err).strip()[-300:]}",
                             hint=log_hint(node))
    found = wait_until(lambda: pid(node), timeout=timeout, interval=0.2)
    if not found:
        raise RuntimeFailure(f"host {_remote(node).where}: {service.service_name(node)} does not run after its "
                             "start", hint=log_hint(node))
    return int(found)


def forget_env(node: NodeLayout) -> None:
    """Empty the node's environment file on its host (the self-initialisation's password, once used)."""
    _session(node).put(service.env_file(node), b"", 0o600)
    for argv in service.owner_commands(node):
        _session(node).run(argv)


def log_hint(node: NodeLayout) -> str:
    return f"its log on {_remote(node).host}: `{shlex.join(service.ctl(node, kind(node), 'log'))}`"


def stop(node: NodeLayout) -> bool:
    """Stop the node's service (the manager waits for it to exit). False: it was not running."""
    if pid(node) is None:
        return False
    _session(node).run(service.ctl(node, kind(node), "stop"), check=False,
                       timeout=STOP_TIMEOUT + 30)
    return True


def hup(node: NodeLayout) -> None:
    """SIGHUP to the node through its manager (reload its certificate)."""
    _session(node).run(service.ctl(node, kind(node), "hup"))


def kill(node: NodeLayout, signal_name: str = "KILL") -> int | None:
    """Send a signal to the node's process on its host (chaos, tests); returns the pid it went to."""
    found = pid(node)
    if found is not None:
        _session(node).run(["kill", f"-{signal_name}", str(found)], check=False)
    return found


def remove(node: NodeLayout) -> None:
    """Stop the node, remove its service and its folder on the host (destroy)."""
    how = kind(node)
    s = _session(node)
    stop(node)
    s.run(["rm", "-f", service.program_file(node, how)])
    s.run(service.ctl(node, how, "forget"), check=False)
    s.run(["rm", "-rf", "--", service.node_dir(node)])


def remove_mesh_dir(node: NodeLayout) -> None:
    """The mesh's folder on the node's host, once its nodes there are removed."""
    _session(node).run(["rm", "-rf", "--", str(_remote(node).mesh_dir)])


def log_tail(node: NodeLayout, lines: int = 15) -> str:
    """The node's last log lines, from its service manager."""
    try:
        res = _session(node).run(service.ctl(node, kind(node), "log"), check=False)
    except RuntimeFailure as err:
        return f"(no log: {err})"
    return "\n".join(res.out.rstrip().splitlines()[-lines:]) or f"(no log on {_remote(node).host})"


# -- the entry on a host (entry.hosts) -------------------------------------------------------------------

def entry_pid(remote: Remote) -> int | None:
    return service.parse_pid(session(remote).run(service.entry_pid_probe(remote), check=False).out)


def push_entry(remote: Remote, config: bytes) -> bool:
    """The entry's config on its host, written when its bytes differ. True: it was written."""
    s = session(remote)
    path = service.entry_config(remote)
    if s.digests([path]).get(path) == digest(config):
        return False
    s.put(path, config, 0o644)
    return True


def start_entry(remote: Remote, *, timeout: float = 20.0) -> int:
    """Install the entry's program on its host (supervisord only) and start it; returns its pid there."""
    if kind_of(remote) == "systemd":
        raise RuntimeFailure(f"host {remote.where}: an entry on a systemd host is not built yet",
                             hint="leave entry.hosts empty (the entry runs on this machine), or use supervisord")
    s = session(remote)
    found = s.run(["sh", "-c", "command -v haproxy"], check=False).out.strip()
    if not found:
        raise RuntimeFailure(f"host {remote.where} has no haproxy for the entry",
                             hint=f"apt-get install haproxy on {remote.host}, or drop it from entry.hosts")
    text = service.render_entry_program(remote, found).encode()
    path = service.entry_program_file(remote)
    if s.digests([path]).get(path) != digest(text):
        s.put(path, text, 0o600)
        s.run(service.entry_ctl(remote, "add"), check=False)
    res = s.run(service.entry_ctl(remote, "start"), check=False)
    if res.code != 0 and "already started" not in res.out:
        raise RuntimeFailure(f"host {remote.where}: starting the entry failed: {(res.out + res.err).strip()[-300:]}")
    pid = wait_until(lambda: entry_pid(remote), timeout=timeout, interval=0.2)
    if not pid:
        raise RuntimeFailure(f"host {remote.where}: the entry does not run after its start",
                             hint=f"`supervisorctl tail {service.entry_name(remote)}` on {remote.host}")
    return int(pid)


def restart_entry(remote: Remote) -> None:
    session(remote).run(service.entry_ctl(remote, "restart"), check=False)


def stop_entry(remote: Remote) -> bool:
    if entry_pid(remote) is None:
        return False
    session(remote).run(service.entry_ctl(remote, "stop"), check=False, timeout=40)
    return True


def remove_entry(remote: Remote) -> None:
    stop_entry(remote)
    s = session(remote)
    s.run(["rm", "-f", service.entry_program_file(remote)])
    s.run(service.entry_ctl(remote, "forget"), check=False)


def disk_and_limits(node: NodeLayout, pid: int | None) -> tuple[int | None, float | None, str | None, int | None]:
    """For ``doctor``, read on the node's host in one command: the core-dump limit of its process (0: off),
    the free share of its data folder's filesystem, that filesystem's type, and its device number."""
    data = f"{service.node_dir(node)}/data"
    script = (f"grep '^Max core file size' /proc/{int(pid)}/limits 2>/dev/null; " if pid else "") + \
        f"stat -f -c 'fs %a %b %T' {shlex.quote(data)} 2>/dev/null; stat -c 'dev %d' {shlex.quote(data)} 2>/dev/null"
    out = _session(node).shell(script, check=False).out
    return service.parse_disk_and_limits(out)
