"""`vaultmesh run`: a clean child environment and shutdown that signals cannot cut short (issue 8, 6 and 7).

The supervisor runs here with a stand-in session (the session's own behaviour is tested against a real mesh);
the signals are real ones sent to this process."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from vaultmesh.workload.deliver import child_env
from vaultmesh.workload.spec import parse_flags
from vaultmesh.workload.supervisor import Supervisor

OPERATOR = {"PATH": "/usr/bin:/bin", "HOME": "/home/op", "LANG": "C.UTF-8", "LC_ALL": "C", "TERM": "xterm",
            "PLAYDREAM_NIGHTLY_API_TOKEN": "seed", "VAULTMESH_PG_PASSWORD": "pg", "VAULTMESH_DIR": "/state",
            "BAO_ADDR": "https://a", "BAO_TOKEN": "s.op", "AWS_SECRET_ACCESS_KEY": "aws", "APP_MODE": "x",
            "APP_LEVEL": "y"}


def test_the_child_gets_only_the_allowlist_and_its_secrets() -> None:
    env = child_env(OPERATOR, {"API_TOKEN": "t"}, None)
    assert env == {"PATH": "/usr/bin:/bin", "HOME": "/home/op", "LANG": "C.UTF-8", "LC_ALL": "C",
                   "TERM": "xterm", "API_TOKEN": "t"}


def test_pass_env_adds_names_and_prefixes_but_never_an_inherited_token() -> None:
    env = child_env(OPERATOR, {}, None, pass_env=["BAO_ADDR", "APP_*", "BAO_TOKEN", "MISSING"])
    assert env["BAO_ADDR"] == "https://a" and env["APP_MODE"] == "x" and env["APP_LEVEL"] == "y"
    assert "BAO_TOKEN" not in env and "MISSING" not in env and "VAULTMESH_PG_PASSWORD" not in env


class StandIn:
    """What the supervisor uses of a Session: start, values, step, close, lock, on_change, clock."""

    def __init__(self, *, on_start: object = None, on_close: object = None) -> None:
        self.lock = threading.RLock()
        self.on_change = None
        self.values: dict[str, object] = {}
        self.events: list[str] = []
        self._on_start = on_start
        self._on_close = on_close

    def start(self) -> None:
        self.events.append("start")
        if callable(self._on_start):
            self._on_start()

    def step(self) -> float | None:
        return None

    def clock(self) -> float:
        return 0.0

    def close(self) -> None:
        self.events.append("close-begun")
        if callable(self._on_close):
            self._on_close()
        self.events.append("close-done")


def _supervisor(session: StandIn, marker: Path) -> Supervisor:
    return Supervisor(session, parse_flags([]), [sys.executable, "-c", f"open({str(marker)!r}, 'w')"],  # type: ignore[arg-type]
                      environ={"PATH": os.environ.get("PATH", "")}, warn=lambda line: None)


def test_a_sigterm_while_logging_in_means_no_child_and_everything_revoked(tmp_path: Path) -> None:
    session = StandIn(on_start=lambda: os.kill(os.getpid(), signal.SIGTERM))
    marker = tmp_path / "ran"
    assert _supervisor(session, marker).run() == 128 + signal.SIGTERM
    assert not marker.exists()
    assert session.events == ["start", "close-begun", "close-done"]


def test_a_sigterm_after_setup_but_before_the_child_starts_is_not_dropped(tmp_path: Path) -> None:
    session = StandIn()
    marker = tmp_path / "ran"
    sv = _supervisor(session, marker)
    sv._no_raise = True  # the state _spawn is in once the secrets are delivered
    sv._on_signal(signal.SIGTERM, None)
    assert sv._spawn({}) == 128 + signal.SIGTERM
    assert sv.child is None and not marker.exists()


def test_a_sigterm_during_revocation_neither_interrupts_it_nor_raises(tmp_path: Path) -> None:
    session = StandIn(on_start=lambda: os.kill(os.getpid(), signal.SIGTERM),
                      on_close=lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert _supervisor(session, tmp_path / "ran").run() == 128 + signal.SIGTERM
    assert session.events[-1] == "close-done"


def test_a_sigterm_while_revoking_after_a_failed_login_does_not_cut_the_revocation(tmp_path: Path) -> None:
    def fail() -> None:
        raise RuntimeError("login refused")

    session = StandIn(on_start=fail, on_close=lambda: os.kill(os.getpid(), signal.SIGTERM))
    with contextlib.suppress(RuntimeError):
        _supervisor(session, tmp_path / "ran").run()
    assert session.events[-1] == "close-done"
