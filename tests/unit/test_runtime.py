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


def test_a_lookup_finds_a_process_whose_pid_file_was_lost_and_writes_nothing(tmp_path: Path) -> None:
    """`status` is a query: it finds the process by its config but leaves the pid file missing."""
    from vaultmesh.runtime.local import find_pid

    marker = str(tmp_path / "config.hcl")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", f"-config={marker}"], cwd=tmp_path)
    try:
        assert find_pid(tmp_path / "bao.pid", marker) == proc.pid
        assert not (tmp_path / "bao.pid").exists()
    finally:
        proc.kill()
        proc.wait()


def test_stopping_processes_stops_each_and_reaps_our_own(tmp_path: Path) -> None:
    """Each process gets its SIGTERM; a zombie counts as stopped (init may reap only seconds later)."""
    from vaultmesh.runtime.local import pid_alive, stop_processes

    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(3)]
    assert sorted(stop_processes([p.pid for p in procs], timeout=5)) == sorted(p.pid for p in procs)
    assert not any(pid_alive(p.pid) for p in procs)
    for p in procs:
        p.wait(1)


def test_stopping_nothing_does_nothing() -> None:
    from vaultmesh.runtime.local import stop_processes

    assert stop_processes([None]) == []


def test_kept_ports_are_picked_below_the_ephemeral_range_so_no_outgoing_connection_takes_them() -> None:
    import random

    from vaultmesh.runtime.local import LOWEST_PORT, free_ports, listening_range

    assert listening_range((32768, 60999)) == range(LOWEST_PORT, 32768)
    assert len(listening_range((1024, 60999))) == 0  # no room: the OS picks (below)
    ports = free_ports(9, rng=random.Random(7))
    assert len(set(ports)) == 9
    assert all(p in listening_range() for p in ports) or len(listening_range()) < 72
