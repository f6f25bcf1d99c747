"""The keeper as a managed process of the mesh (like the entry and the issuer), and its status record.

``up`` starts it once the mesh is healthy (``keeper.enabled``, on by default); ``down`` stops it first. The
keeper rewrites ``keeper/status.json`` every cycle (``KeeperStatus``); ``status`` reads it with ``read_status``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vaultmesh.fsutil import read_json, write_json
from vaultmesh.layout import StatePaths
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import start_process

MODULE = "vaultmesh.keeper"


@dataclass(frozen=True)
class KeeperStatus:
    """What the keeper last did. Times are Unix seconds; sentences carry no secret."""

    pid: int
    started: float
    cycle_at: float = 0.0
    """When the last cycle ended."""
    healthy_since: float | None = None
    """Since when every cycle saw the mesh answer (None: the last one did not)."""
    last_error: str | None = None
    revoked: int = 0
    """Tokens revoked since the keeper started."""
    recent: list[str] = field(default_factory=list)
    """The last things done, newest last (at most 20 sentences)."""
    over_budget: list[str] = field(default_factory=list)
    """One sentence per lease budget (``lease_budget`` in the mesh file) exceeded at the last cycle."""
    restarts: int = 0
    """Processes (nodes, entry, issuer) the keeper (re)started since it started."""
    backing_off: str | None = None
    """Why the keeper is not restarting something right now (a restart keeps failing); None: it is not."""
    healed: str | None = None
    """The last thing healing did, one sentence with its time."""
    metrics: str | None = None
    """The address of its ``/metrics`` endpoint (HTTPS, the mesh CA)."""
    snapshot: dict[str, Any] | None = None
    """The last scheduled snapshot: time, path, size, index; failures and error when the last one failed."""
    drill: dict[str, Any] | None = None
    """The last scheduled drill: time, ok, rto_s, rpo_s, and the failed checks' reasons."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> KeeperStatus:
        known = set(KeeperStatus.__dataclass_fields__)
        return KeeperStatus(**{k: v for k, v in data.items() if k in known})


def write_status(paths: StatePaths, status: KeeperStatus) -> None:
    write_json(paths.keeper_status, status.to_json())


def read_status(paths: StatePaths) -> KeeperStatus | None:
    """The keeper's last record; None when it never ran or the file is unreadable."""
    try:
        return KeeperStatus.from_json(read_json(paths.keeper_status))
    except (OSError, ValueError, TypeError):
        return None


def marker(paths: StatePaths) -> str:
    """The keeper's last argument: how its process is told apart from every other one naming the state dir."""
    return processes.keeper_marker(paths)


def keeper_pid(paths: StatePaths, *, adopt: bool = False) -> int | None:
    """The running keeper's pid; ``adopt`` writes a lost pid file back (``up``), else nothing is written."""
    return processes.keeper_process(paths).pid(adopt=adopt)


def start_keeper(paths: StatePaths) -> int:
    root: Path = paths.root
    paths.keeper_dir.mkdir(mode=0o700, exist_ok=True)
    return start_process([sys.executable, "-m", MODULE, "--dir", str(root), "--status-file", marker(paths)],
                         cwd=paths.keeper_dir, log_file=paths.keeper_log, pid_file=paths.keeper_pid)


def describe(status: KeeperStatus | None, running: bool, *, now: float | None = None) -> str:
    """One line for ``status``: whether it runs and what it last did."""
    if not running:
        return "not running" + (" (keeper: false)" if status is None else "")
    if status is None:
        return "starting"
    ago = (now if now is not None else time.time()) - status.cycle_at
    health = f"error: {status.last_error}" if status.last_error else "mesh answering"
    last = status.recent[-1] if status.recent else "nothing to do yet"
    over = f"; OVER BUDGET: {'; '.join(status.over_budget)}" if status.over_budget else ""
    heal = f"; BACKING OFF: {status.backing_off}" if status.backing_off else ""
    return (f"running (pid {status.pid}), last cycle {ago:.0f} s ago, {health}; restarted {status.restarts}, "
            f"revoked {status.revoked}; {last}{over}{heal}")
