"""The child's process tree dies with ``run``, and what a dead ``run`` left is swept by the next one (Linux).

- **The child dies with its parent.** ``die_with_parent`` runs between fork and exec: ``PR_SET_PDEATHSIG``
  (``prctl``) asks the kernel to SIGKILL the child the moment ``run`` dies, even of SIGKILL; a ``run`` that
  died during the fork is caught by the ``getppid`` check right after.
- **The whole tree.** Without a terminal (jobs, containers, functions: stdin is not a TTY) the child leads a
  process group of its own, so a stopping signal reaches every process of it, what is left of the group is
  stopped when the child exits, and a dead ``run``'s group can be found. On a terminal the child stays in the
  terminal's group (job control, Ctrl-C) and only the direct child is covered by ``PR_SET_PDEATHSIG``.
- **The sweep.** Every run keeps a record (``.run.json``: its pid and start time, the child's group) in its
  private run directory. At the next start, a record whose ``run`` is gone (no such pid, or a pid reused by a
  younger process) has its group's survivors killed (only processes of this user born after that ``run``) and
  its directory, secrets included, removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vaultmesh.waiting import process_exists

PR_SET_PDEATHSIG = 1
RECORD = ".run.json"
DIR_PREFIX = "vaultmesh-run-"
UNRECORDED_GRACE = 60.0
"""A run directory without a record is left alone this long (seconds): its ``run`` may be writing it now."""


def _stat(pid: int, field: int) -> int | None:
    """Field ``field`` (1-based, as ``proc(5)`` numbers them) of ``/proc/<pid>/stat``; None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[field - 3])  # fields 1-2 are the pid and (comm)


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, field 22); None when gone."""
    return _stat(pid, 22)


def process_group(pid: int) -> int | None:
    return _stat(pid, 5)


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel SIGKILLs this process when ``parent`` dies (no-op where prctl is missing)."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        prctl = None

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # run died between fork and prctl
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def own_group_wanted(stdin_fd: int = 0) -> bool:
    """The child leads its own process group unless ``run`` works for a terminal (job control)."""
    try:
        return not os.isatty(stdin_fd)
    except OSError:  # pragma: no cover
        return True


def group_alive(pgid: int) -> bool:
    return process_exists(pgid, group=True)


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(pgid: int, timeout: float, *, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> None:
    """SIGTERM what is left of a process group, SIGKILL it after ``timeout`` seconds."""
    if not group_alive(pgid):
        return
    signal_group(pgid, signal.SIGTERM)
    deadline = clock() + timeout
    while group_alive(pgid) and clock() < deadline:
        sleep(0.02)
    signal_group(pgid, signal.SIGKILL)


@dataclass(frozen=True)
class RunRecord:
    pid: int
    start: int
    pgid: int | None = None

    def alive(self) -> bool:
        """The recorded ``run`` still runs (same pid, same start time)."""
        return start_time(self.pid) == self.start

    @staticmethod
    def of_self(pgid: int | None = None) -> RunRecord:
        pid = os.getpid()
        return RunRecord(pid, start_time(pid) or 0, pgid)

    def write(self, run_dir: Path) -> None:
        tmp = run_dir / f".{RECORD}.tmp"
        tmp.write_text(json.dumps({"pid": self.pid, "start": self.start, "pgid": self.pgid}))
        os.replace(tmp, run_dir / RECORD)

    @staticmethod
    def read(run_dir: Path) -> RunRecord | None:
        try:
            data = json.loads((run_dir / RECORD).read_text())
            return RunRecord(int(data["pid"]), int(data["start"]), data.get("pgid"))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def survivors(pgid: int, born_after: int) -> Iterator[int]:
    """Processes of this user in group ``pgid`` started after ``born_after`` (clock ticks since boot)."""
    uid = os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError):
            if entry.stat().st_uid != uid or process_group(pid) != pgid:
                continue
            started = start_time(pid)
            if started is not None and started >= born_after:
                yield pid


def sweep(parent: Path, *, own: Path | None = None, now: Callable[[], float] = time.time) -> list[Path]:
    """Kill the orphans and remove the run directories of ``run``s that are gone; return what was removed."""
    removed = []
    uid = os.getuid()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(DIR_PREFIX) or (own is not None and entry.path == str(own)):
            continue
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            if st.st_uid != uid or not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            record = RunRecord.read(path)
            if record is None:
                if now() - st.st_mtime < UNRECORDED_GRACE:
                    continue
            elif record.alive():
                continue
            elif record.pgid:
                for pid in survivors(record.pgid, record.start):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
