"""Local runtime: processes tracked by pid file, checked against their command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vaultmesh.runtime.local import tracked_pid


def test_a_lost_pid_file_is_adopted_from_the_running_process(tmp_path: Path) -> None:
    """`up` must not start a second copy of a node whose pid file was lost: it finds the process by its config."""
    marker = str(tmp_path / "config.hcl")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", f"-config={marker}"], cwd=tmp_path)
    try:
        pid_file = tmp_path / "bao.pid"
        assert tracked_pid(pid_file, marker) == proc.pid
        assert pid_file.read_text().strip() == str(proc.pid)
        pid_file.write_text("1\n")  # a stale pid of another process
        assert tracked_pid(pid_file, marker) == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert tracked_pid(pid_file, marker) is None


def test_a_process_left_from_a_deleted_state_dir_is_not_adopted(tmp_path: Path) -> None:
    """`rm -rf` of a state dir without `destroy`, then a new mesh at the same path: the old process has the same
    config path in its arguments, but its working directory is gone, so it is not taken for the new node."""
    home = tmp_path / "node-1"
    home.mkdir()
    marker = str(home / "config.hcl")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", f"-config={marker}"], cwd=home)
    try:
        home.rmdir()
        home.mkdir()
        assert tracked_pid(home / "bao.pid", marker) is None
    finally:
        proc.kill()
        proc.wait()


def test_a_daemon_gets_the_allowlist_and_what_it_is_given_only() -> None:
    from vaultmesh.runtime.local import KMS_ENV, daemon_env

    operator = {"PATH": "/bin", "LANG": "C", "LC_ALL": "C", "BAO_TOKEN": "s.x", "VAULTMESH_PG_PASSWORD": "pw",
                "PLAYDREAM_NIGHTLY_API_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "k", "HOME": "/root"}
    assert daemon_env(operator, {"X": "1"}) == {"PATH": "/bin", "LANG": "C", "LC_ALL": "C", "X": "1"}
    assert daemon_env(operator, inherit=KMS_ENV)["AWS_SECRET_ACCESS_KEY"] == "k"
