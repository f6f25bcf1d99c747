"""Daemons start with core dumps off: the limit is set on the starting process, so every child inherits it."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from vaultmesh.runtime.local import start_process, stop_processes
from vaultmesh.waiting import wait_until


def test_a_started_daemon_cannot_dump_core(tmp_path: Path) -> None:
    out = tmp_path / "limit"
    code = ("import resource, sys; open(sys.argv[1], 'w').write(repr(resource.getrlimit(resource.RLIMIT_CORE))); "
            "import time; time.sleep(30)")
    pid = start_process([sys.executable, "-c", code, str(out)], cwd=tmp_path, log_file=tmp_path / "log",
                        pid_file=tmp_path / "pid")
    try:
        assert wait_until(lambda: out.exists() and out.read_text(), timeout=10) == "(0, 0)"
        assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
    finally:
        stop_processes([pid], timeout=5)
