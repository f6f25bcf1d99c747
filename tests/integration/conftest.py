"""Fixtures that own real OpenBao processes: free ports, own state dirs, stopped by pid in teardown."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from vaultmesh.engine.client import EngineClient
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import entry_pid_file, issuer_pid_file, up
from vaultmesh.runtime.local import read_pid
from vaultmesh.spec.load import parse_spec

pytestmark = pytest.mark.integration


@dataclass
class MeshHandle:
    """A running mesh made for a test."""

    dir: Path
    mesh: m.Mesh

    @property
    def ca(self) -> str:
        return str(self.mesh.paths.ca_cert)

    @property
    def addrs(self) -> list[str]:
        return self.mesh.node_addrs

    @property
    def entry(self) -> str:
        return self.mesh.layout.entry_addr

    def token(self) -> str:
        return m.admin_token(self.mesh)

    def client(self, **kw: object) -> EngineClient:
        return self.mesh.client(token=self.token(), **kw)  # type: ignore[arg-type]

    def pids(self) -> dict[str, int]:
        out = {}
        for node in self.mesh.layout.nodes:
            pid = read_pid(node.pid_file)
            if pid:
                out[node.name] = pid
        if self.mesh.layout.seal_node:
            pid = read_pid(self.mesh.layout.seal_node.pid_file)
            if pid:
                out["seal"] = pid
        pid = read_pid(entry_pid_file(self.mesh.layout))
        if pid:
            out["entry"] = pid
        pid = read_pid(issuer_pid_file(self.mesh.layout))
        if pid:
            out["identity"] = pid
        pid = read_pid(self.mesh.paths.keeper_pid)
        if pid:
            out["keeper"] = pid
        return out

    def reopen(self) -> None:
        self.mesh = m.open_mesh(self.dir)


def stop_all(handle: MeshHandle, started: set[int]) -> None:
    """Stop every process the test's mesh ever had, by pid, SIGKILL after a grace period."""
    pids = started | set(handle.pids().values())
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(pid)
            # guard against pid reuse: only our engine, entry, issuer and keeper processes
            ours = any(w in " ".join(p.cmdline()) for w in ("server", "haproxy", "identity", "vaultmesh.keeper"))
            if p.status() != psutil.STATUS_ZOMBIE and ours:
                p.send_signal(signal.SIGTERM)
                procs.append(p)
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def make_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MeshHandle]]:
    """Factory: ``make_mesh("nodes: 5")`` brings up a mesh of its own; all are stopped at teardown."""
    handles: list[tuple[MeshHandle, set[int]]] = []

    def make(spec_text: str = "", *, timeout: float = 120.0) -> MeshHandle:
        root = tmp_path_factory.mktemp("mesh") / "state"
        spec = parse_spec(spec_text, source="test") if spec_text else None
        result = up(root, spec, spec_text, timeout=timeout)
        handle = MeshHandle(root, result.mesh)
        handles.append((handle, set(handle.pids().values())))
        return handle

    yield make
    for handle, pids in handles:
        stop_all(handle, pids | set(handle.pids().values()))


@pytest.fixture(scope="session")
def shared_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHandle]:
    """One 3-node mesh for tests that do not break it (read-mostly; namespaced paths per test)."""
    root = tmp_path_factory.mktemp("shared-mesh") / "state"
    result = up(root, None, "")
    handle = MeshHandle(root, result.mesh)
    pids = set(handle.pids().values())
    yield handle
    stop_all(handle, pids)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The machine's PostgreSQL (trust auth on 127.0.0.1:5432); skipped with the reason when absent."""
    import psycopg

    dsn = os.environ.get("VAULTMESH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.Error as err:
        pytest.skip(f"PostgreSQL not reachable at {dsn}: {err}")
    return dsn
