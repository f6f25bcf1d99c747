"""The fixtures' teardown: a mesh is owned from before `up`, so a failed `up` leaves no process behind.

No OpenBao here: `up` is replaced by one that starts stand-in daemons the way the real one does (own session,
working directory and pid file in the state dir) and then fails.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vaultmesh.errors import NotReady

from .conftest import owned_mesh, stop_state_dir

pytestmark = pytest.mark.integration

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:  # the test's own safety net, so a failing test does not leak either
        if p.poll() is None:
            p.kill()
            p.wait()


def daemon(procs: list[subprocess.Popen[bytes]], cwd: Path, pid_file: Path | None = None,
           argv: list[str] = SLEEPER) -> subprocess.Popen[bytes]:
    cwd.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen(argv, cwd=cwd, start_new_session=True)
    procs.append(p)
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{p.pid}\n")
    return p


def stopped(p: subprocess.Popen[bytes]) -> bool:
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_failed_up_leaves_no_process_under_its_state_dir(tmp_path: Path, procs: list[Any]) -> None:
    root = tmp_path / "state"
    node = root / "nodes" / "node-1"
    started: list[subprocess.Popen[bytes]] = []

    def failing_up(root_: Path, spec: object, spec_text: str, *, timeout: float) -> object:
        started.append(daemon(procs, node, node / "bao.pid"))
        started.append(daemon(procs, root / "seal" / "node", root / "seal" / "node" / "bao.pid"))
        started.append(daemon(procs, root / "keeper", root / "keeper" / "keeper.pid"))
        started.append(daemon(procs, root / "entry"))  # its pid file was never written
        raise NotReady("node-2 did not unseal within 120 s")

    with pytest.raises(NotReady), owned_mesh(root, bring_up=failing_up):
        pytest.fail("a failed up yields no mesh")
    assert [stopped(p) for p in started] == [True] * 4


def test_a_pid_file_naming_someone_else_s_process_does_not_stop_it(tmp_path: Path, procs: list[Any]) -> None:
    """Pid reuse: a stale pid file may name a process that is not the mesh's; it is left alone."""
    root = tmp_path / "state"
    outsider = daemon(procs, tmp_path / "elsewhere")
    (root / "nodes" / "node-1").mkdir(parents=True)
    (root / "nodes" / "node-1" / "bao.pid").write_text(f"{outsider.pid}\n")
    stop_state_dir(root, [outsider.pid])
    assert outsider.poll() is None


def test_a_process_that_names_the_state_dir_is_stopped_wherever_it_works(tmp_path: Path, procs: list[Any]) -> None:
    """A node whose pid file is gone (e.g. the test deleted it) is still found by the pid seen at bring-up."""
    root = (tmp_path / "state").resolve()
    root.mkdir()
    node = daemon(procs, tmp_path / "elsewhere", argv=[*SLEEPER, f"-config={root}/nodes/node-1/config.hcl"])
    stop_state_dir(root, [node.pid])
    assert stopped(node)
