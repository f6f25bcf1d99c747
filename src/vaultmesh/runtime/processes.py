"""The processes of a mesh on this host: what each one is (its pid file and the marker that tells it apart),
how each is started, and stopping them all (``down``).

A mesh runs: the keeper, the entry (HAProxy), the workload identity issuer, its nodes, and with a transit seal
the seal node. Each is a detached process tracked by its pid file; ``TrackedProcess.marker`` is the argument its
command line ends with, which guards against pid reuse.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vaultmesh.layout import MeshLayout, NodeLayout, Remote, StatePaths
from vaultmesh.runtime.local import (
    KMS_ENV,
    check_ports_free,
    find_pid,
    port_holder,
    start_process,
    stop_processes,
    tracked_pid,
    wait_until,
)

Progress = Callable[[str], None]

STOP_TIMEOUT = 15.0
"""Seconds a process gets to exit after SIGTERM before it is killed. OpenBao, HAProxy, the issuer and the keeper
all exit in well under a second; the margin is for a node flushing Raft on a loaded machine."""


@dataclass(frozen=True)
class TrackedProcess:
    """One process of the mesh, as its state dir knows it."""

    name: str
    pid_file: Path
    marker: str
    """A path one argument of its command line ends with (its config or certificate)."""

    def pid(self, *, adopt: bool = False) -> int | None:
        """Its pid when it runs. ``adopt`` writes a lost pid file back (for commands that change the mesh);
        without it this is a pure lookup."""
        return (tracked_pid if adopt else find_pid)(self.pid_file, self.marker)


def _quiet(_: str) -> None:
    pass


# -- what each process is ------------------------------------------------------------------------------------

def entry_config(layout: MeshLayout) -> Path:
    return layout.paths.entry_dir / "haproxy.cfg"


def entry_pid_file(layout: MeshLayout) -> Path:
    return layout.paths.entry_dir / "haproxy.pid"


def entry_log(layout: MeshLayout) -> Path:
    return layout.paths.entry_dir / "haproxy.log"


def entry_process(layout: MeshLayout) -> TrackedProcess:
    if layout.entry_hosts:
        return HostedEntry("entry", entry_pid_file(layout), str(entry_config(layout)), layout.entry_hosts)
    return TrackedProcess("entry", entry_pid_file(layout), str(entry_config(layout)))


@dataclass(frozen=True)
class HostedEntry(TrackedProcess):
    """The entry of a ``runtime: ssh`` mesh with ``entry.hosts``: one HAProxy per entry host, under its
    supervisor. Its pid is the first host's, and only while every entry host runs one."""

    remotes: tuple[Remote, ...] = ()

    def pid(self, *, adopt: bool = False) -> int | None:
        from vaultmesh.hosts import runtime as hosts

        pids = [hosts.entry_pid(r) for r in self.remotes]
        return pids[0] if pids and all(pids) else None

    def stop(self) -> None:
        from vaultmesh.hosts import runtime as hosts

        for remote in self.remotes:
            hosts.stop_entry(remote)


def issuer_process(paths: StatePaths) -> TrackedProcess:
    return TrackedProcess("identity issuer", paths.issuer_pid, str(paths.identity_cert))


def keeper_marker(paths: StatePaths) -> str:
    """The keeper's marker: how its process is told apart from every other one naming the state dir."""
    return str(paths.keeper_status)


def keeper_process(paths: StatePaths) -> TrackedProcess:
    return TrackedProcess("keeper", paths.keeper_pid, keeper_marker(paths))


def prometheus_process(paths: StatePaths) -> TrackedProcess:
    return TrackedProcess("prometheus", paths.prometheus_pid, str(paths.prometheus_config))


def alertmanager_process(paths: StatePaths) -> TrackedProcess:
    return TrackedProcess("alertmanager", paths.alertmanager_pid, str(paths.alertmanager_config))


@dataclass(frozen=True)
class HostedProcess(TrackedProcess):
    """A node of a ``runtime: ssh`` mesh: its pid is on its host, asked of the host's service manager."""

    node: NodeLayout | None = None

    def pid(self, *, adopt: bool = False) -> int | None:
        from vaultmesh.hosts import runtime as hosts

        assert self.node is not None
        return hosts.pid(self.node)

    def stop(self) -> None:
        from vaultmesh.hosts import runtime as hosts

        assert self.node is not None
        hosts.stop(self.node)


def node_process(node: NodeLayout, name: str | None = None) -> TrackedProcess:
    if node.remote is not None:
        return HostedProcess(name or node.name, node.pid_file, str(node.config_file), node)
    return TrackedProcess(name or node.name, node.pid_file, str(node.config_file))


def stop_order(layout: MeshLayout) -> list[list[TrackedProcess]]:
    """The mesh's processes in the waves ``down`` stops them in: the keeper first (it starts Prometheus and
    Alertmanager again when they die, so it must be gone before they stop), then what uses the nodes (Prometheus,
    Alertmanager, entry, issuer), then every node, then the seal node they unseal with. The processes of a wave
    stop together."""
    waves = [[keeper_process(layout.paths)],
             [prometheus_process(layout.paths), alertmanager_process(layout.paths), entry_process(layout),
              issuer_process(layout.paths)],
             [node_process(n) for n in reversed(layout.nodes)]]
    if layout.seal_node:
        waves.append([node_process(layout.seal_node, "seal")])
    return waves


# -- starting ------------------------------------------------------------------------------------------------

def start_node(node: NodeLayout, engine: str, env: Mapping[str, str] | None = None) -> int:
    """Start a node (or the seal node) from its rendered config; its ports must be free. A node on a host
    (``runtime: ssh``) is started by the host's service manager, on the host's engine, from its pushed bundle."""
    if node.remote is not None:
        from vaultmesh.hosts import runtime as hosts

        return hosts.start(node, env, engine=engine or None)
    prefix: list[str] = []
    if node.netns:  # runtime: netns: the node's own namespace, whose ports are its own
        from vaultmesh.runtime.netns import exec_prefix

        prefix = exec_prefix(node)
    else:
        check_ports_free({f"{node.name} api": node.api_port, f"{node.name} cluster": node.cluster_port})
    return start_process([*prefix, engine, "server", f"-config={node.config_file}"], cwd=node.dir,
                         log_file=node.log_file, pid_file=node.pid_file, env=env, inherit=KMS_ENV)


def stop_node(node: NodeLayout, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop a node (or the seal node) wherever it runs: by pid here, through its service manager on a host.
    False: it was not running."""
    if node.remote is not None:
        from vaultmesh.hosts import runtime as hosts

        return hosts.stop(node)
    pid = node_process(node).pid(adopt=True)
    if pid is None:
        return False
    stop_processes([pid], timeout=timeout)
    return True


def wait_ports_free(node: NodeLayout, timeout: float = 5.0) -> bool:
    """Wait until a just-stopped node's ports can be bound again (a netns node's are its own)."""
    if node.netns or node.remote:
        return True
    return bool(wait_until(lambda: port_holder(node.api_port) is None and port_holder(node.cluster_port) is None,
                           timeout=timeout, interval=0.05))


def start_entry(layout: MeshLayout) -> int:
    """Start HAProxy on the rendered entry config (on each entry host where it does not run: ``entry.hosts``)."""
    if layout.entry_hosts:
        from vaultmesh.hosts import runtime as hosts

        pids = [hosts.entry_pid(r) or hosts.start_entry(r) for r in layout.entry_hosts]
        return pids[0]
    check_ports_free({"entry": layout.entry_port})
    haproxy = shutil.which("haproxy") or "haproxy"
    return start_process([haproxy, "-db", "-f", str(entry_config(layout))], cwd=layout.paths.entry_dir,
                         log_file=entry_log(layout), pid_file=entry_pid_file(layout))


def start_issuer(paths: StatePaths, cert: Path, key: Path, host: str = "127.0.0.1") -> int:
    """Start the workload identity issuer (``python -m vaultmesh.identity``) over ``cert``/``key``, listening on
    ``host`` (the mesh file's ``issuer_address``)."""
    return start_process([sys.executable, "-m", "vaultmesh.identity", "--dir", str(paths.root),
                          "--key", str(key), "--cert", str(cert), "--host", host], cwd=paths.identity_dir,
                         log_file=paths.issuer_log, pid_file=paths.issuer_pid)


def start_prometheus(paths: StatePaths, binary: str, port: int, retention: float) -> int:
    """Start Prometheus on the rendered config, HTTPS on 127.0.0.1:``port`` (``prometheus_web``)."""
    check_ports_free({"prometheus": port})
    return start_process([binary, f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={paths.prometheus_web}",
                          f"--storage.tsdb.path={paths.prometheus_data}",
                          f"--storage.tsdb.retention.time={int(retention)}s",
                          f"--config.file={paths.prometheus_config}"],
                         cwd=paths.monitoring_dir, log_file=paths.prometheus_log, pid_file=paths.prometheus_pid)


def start_alertmanager(paths: StatePaths, binary: str, port: int) -> int:
    """Start Alertmanager on the rendered config, HTTPS on 127.0.0.1:``port`` (the same ``prometheus_web`` pair);
    no cluster listener (it would gossip on 0.0.0.0:9094)."""
    check_ports_free({"alertmanager": port})
    return start_process([binary, f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={paths.prometheus_web}",
                          f"--web.external-url=https://127.0.0.1:{port}", "--cluster.listen-address=",
                          f"--storage.path={paths.alertmanager_data}", f"--config.file={paths.alertmanager_config}"],
                         cwd=paths.monitoring_dir, log_file=paths.alertmanager_log, pid_file=paths.alertmanager_pid)


# -- stopping ------------------------------------------------------------------------------------------------

def down(layout: MeshLayout, *, progress: Progress = _quiet, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Stop every running process of the mesh by pid, wave by wave (``stop_order``), the processes of a wave
    in parallel; keep all data. Returns the names of what was stopped, in that order."""
    stopped: list[str] = []
    for wave in stop_order(layout):
        running = [(p, pid) for p in wave if (pid := p.pid()) is not None]
        if not running:
            continue
        progress("stopping " + ", ".join(f"{p.name} (pid {pid}{_on(p)})" for p, pid in running))
        hosted = [p for p, _ in running if isinstance(p, HostedProcess | HostedEntry)]
        with ThreadPoolExecutor(max_workers=max(1, len(hosted))) as pool:
            waiting = [pool.submit(p.stop) for p in hosted]
            stop_processes([pid for p, pid in running if not isinstance(p, HostedProcess | HostedEntry)],
                           timeout=timeout)
            for w in waiting:
                w.result()
        stopped += [p.name for p, _ in running]
    return stopped


def _on(p: TrackedProcess) -> str:
    return f" on {p.node.remote.host}" if isinstance(p, HostedProcess) and p.node and p.node.remote else ""
