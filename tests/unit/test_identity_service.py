"""The issuer's serving lifecycle (identity/service.py) and its ``python -m vaultmesh.identity`` entry point."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from vaultmesh import pki
from vaultmesh.errors import RuntimeFailure
from vaultmesh.identity.__main__ import main
from vaultmesh.identity.server import read_issuer_record, write_issuer_record
from vaultmesh.identity.service import open_issuer
from vaultmesh.layout import StatePaths


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca = pki.create_ca("test CA", now=now, days=1)
    pair = pki.issue_server_cert(ca, "identity", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now,
                                 days=1)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    return cert, key


def test_a_bad_tls_pair_is_one_line_exit_1_and_writes_no_key_ring(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    code = main(["--dir", str(state), "--cert", str(tmp_path / "no.pem"), "--key", str(tmp_path / "no.pem")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot serve TLS") and err.count("\n") == 1
    assert not StatePaths(state).identity_keys.exists()


def test_the_issuer_keeps_the_port_of_its_last_run(tmp_path: Path, tls: tuple[Path, Path]) -> None:
    cert, key = tls
    server, record = open_issuer(tmp_path, certfile=cert, keyfile=key, port=0)
    server.stop()
    write_issuer_record(tmp_path, dataclasses.replace(record, pid=None))
    again, second = open_issuer(tmp_path, certfile=cert, keyfile=key)
    try:
        assert second.port == record.port and second.issuer == record.issuer
        assert read_issuer_record(tmp_path) == second
    finally:
        again.stop()


def test_a_second_issuer_for_the_same_state_dir_is_refused(tmp_path: Path, tls: tuple[Path, Path]) -> None:
    cert, key = tls
    server, record = open_issuer(tmp_path, certfile=cert, keyfile=key, port=0)
    server.stop()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_issuer_record(tmp_path, dataclasses.replace(record, pid=other.pid))
        with pytest.raises(RuntimeFailure, match="already running"):
            open_issuer(tmp_path, certfile=cert, keyfile=key)
    finally:
        other.kill()
        other.wait()
