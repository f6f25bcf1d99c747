"""``run`` sends its login and reads ahead: which requests, when it does not, the check of --on-change it makes
without the supervisor, and the signal guard of that window."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from vaultmesh.api.client import Ahead
from vaultmesh.errors import VaultmeshError
from vaultmesh.workload import cli
from vaultmesh.workload.spec import parse_flags
from vaultmesh.workload.supervisor import OnChange


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Ahead, list[Ahead]]] = []

    def prefetch(self, login: Ahead, reads: Any = ()) -> None:
        self.calls.append((login, list(reads)))


def identity(tmp_path: Path, text: str = "eyJhbGciOi.x.y\n") -> str:
    path = tmp_path / "id.jwt"
    path.write_text(text)
    return str(path)


def test_the_login_and_one_read_per_source_are_sent_ahead(tmp_path: Path) -> None:
    plan = parse_flags(["API=kv:secret/jobs/nightly#api_token", "U=db:database/creds/ro#username",
                        "P=db:database/creds/ro#password"], ["old.json=kv:secret/jobs/old"])
    rec = Recorder()
    assert cli.send_ahead(rec, plan, role="batch", auth_mount="/jwt/", identity_path=identity(tmp_path))  # type: ignore[arg-type]
    login, reads = rec.calls[0]
    assert login == Ahead("POST", "auth/jwt/login", {"role": "batch", "jwt": "eyJhbGciOi.x.y"})
    assert [r.path for r in reads] == ["secret/data/jobs/nightly", "database/creds/ro", "secret/data/jobs/old"]
    assert all(r.method == "GET" and r.consistent and r.params is None for r in reads)


def test_a_plan_with_a_wrapped_secret_is_not_sent_ahead(tmp_path: Path) -> None:
    plan = parse_flags(["K=kv:secret/a#b", "W=unwrap:env:WRAPPED#password"])
    rec = Recorder()
    assert not cli.send_ahead(rec, plan, role="batch", auth_mount="jwt", identity_path=identity(tmp_path))  # type: ignore[arg-type]
    assert rec.calls == []


@pytest.mark.parametrize("text", [None, ""])
def test_no_identity_token_no_login_ahead(tmp_path: Path, text: str | None) -> None:
    path = identity(tmp_path, text) if text is not None else str(tmp_path / "absent.jwt")
    rec = Recorder()
    assert not cli.send_ahead(rec, parse_flags(["K=kv:secret/a#b"]), role="r", auth_mount="jwt",  # type: ignore[arg-type]
                              identity_path=path)
    assert rec.calls == []


@pytest.mark.parametrize("text", ["none", "restart", "signal:HUP", "signal:sigusr1", "signal:TERM", "signal:KILL",
                                  "signal:STOP", "signal:NOPE", "signal:", "hup", "restart:now", ""])
def test_the_light_on_change_check_agrees_with_the_supervisor(text: str) -> None:
    try:
        OnChange.parse(text)
        valid = True
    except VaultmeshError:
        valid = False
    assert cli._on_change_valid(text) == valid


def test_a_stopping_signal_in_the_window_stops_run_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    guard = cli._SignalGuard()
    try:
        with pytest.raises(cli._Stopped) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this thread before the next bytecode
        assert stopped.value.signum == signal.SIGTERM
    finally:
        guard.restore()
    assert signal.getsignal(signal.SIGTERM) == before


RUN_ARGVS = [
    [],
    ["--role", "batch", "--identity-file", "/run/id.jwt", "--", "python", "job.py", "--role", "x"],
    ["--role=batch", "--auth-mount=jwt-ci", "--secret", "A=kv:secret/a#b", "--secret=B=db:db/creds/r#u",
     "--secret-file", "pg.json=db:db/creds/r", "--pass-env", "PG*", "--pass-env=MARK", "-v", "--", "true"],
    ["--addr", "https://a:1,https://b:2", "--addr=https://c:3", "--ca-cert", "ca.pem", "--namespace", "team",
     "--deadline", "2s", "--stop-timeout=500ms", "--on-change", "signal:HUP", "--verbose", "./job", "-x"],
    ["--secrets", "secrets.yaml", "job"],
    ["--role", "batch", "--", "--"],
    ["--role", ""],
]


@pytest.mark.parametrize("argv", RUN_ARGVS)
def test_the_fast_parser_reads_run_arguments_as_argparse_does(argv: list[str]) -> None:
    fast = cli.fast_run_args(argv)
    assert fast is not None
    assert vars(fast) == vars(cli.build_parser().parse_args(["run", *argv]))


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--rol", "batch"], ["--role"], ["--role", "-v"],
                                  ["--deadline", "soon"], ["--verbose=yes"], ["-vv"], ["--unknown", "x"]])
def test_the_fast_parser_leaves_anything_else_to_argparse(argv: list[str]) -> None:
    assert cli.fast_run_args(argv) is None
