"""The keeper's command receiver (``keeper.alerts``), for real: a bridge on a free loopback port over TLS from a
test CA, a real command run per POST with the JSON on its stdin; a POST without the token runs nothing; a failing
or hung command answers 502 (so Alertmanager sends again) and the log says why."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultmesh import pki
from vaultmesh.errors import RuntimeFailure
from vaultmesh.keeper.alerts import PATH, AlertBridge, ensure_token, notify, serve_bridge, summary

PAYLOAD = {"version": "4", "status": "firing", "receiver": "vaultmesh", "groupLabels": {"alertname": "VaultmeshX"},
           "alerts": [{"status": "firing", "labels": {"alertname": "VaultmeshX", "mesh": "m1"}}]}


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca = pki.create_ca("test", now=now, days=1)
    leaf = pki.issue_server_cert(ca, "bridge", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now, days=1)
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    for path, data in zip(paths, (ca.cert_pem, leaf.cert_pem, leaf.key_pem), strict=True):
        path.write_bytes(data)
    return paths


@contextlib.contextmanager
def bridge_for(command: list[str], tls: tuple[Path, Path, Path], tmp_path: Path, lines: list[str],
               timeout: float = 10.0) -> Iterator[AlertBridge]:
    _, cert, key = tls
    bridge = serve_bridge([0], command=command, token="s3cret", cert=cert, key=key, cwd=tmp_path, log=lines.append,
                          timeout=timeout)
    try:
        yield bridge
    finally:
        bridge.shutdown()
        bridge.server_close()


def post(bridge: AlertBridge, ca: Path, body: bytes, token: str | None = "s3cret", path: str = PATH) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("localhost", bridge.port, context=context, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def copy_to(out: Path) -> list[str]:
    """A command that writes its stdin to ``out``."""
    code = f"import sys, pathlib; pathlib.Path({str(out)!r}).write_bytes(sys.stdin.buffer.read())"
    return [sys.executable, "-c", code]


def test_each_notification_runs_the_command_with_the_json_on_stdin(tls: tuple[Path, Path, Path],
                                                                    tmp_path: Path) -> None:
    out, lines = tmp_path / "got.json", []
    with bridge_for(copy_to(out), tls, tmp_path, lines) as bridge:
        assert bridge.url == f"https://127.0.0.1:{bridge.port}/alerts"
        body = json.dumps(PAYLOAD).encode()
        assert post(bridge, tls[0], body) == (200, "ok\n")
        assert out.read_bytes() == body
        assert lines == [f"alerts: ran {sys.executable} for VaultmeshX (firing, 1 alert)"]


def test_without_the_token_or_json_nothing_runs(tls: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out, lines = tmp_path / "got.json", []
    with bridge_for(copy_to(out), tls, tmp_path, lines) as bridge:
        body = json.dumps(PAYLOAD).encode()
        assert post(bridge, tls[0], body, token=None)[0] == 401
        assert post(bridge, tls[0], body, token="s3cre")[0] == 401
        assert post(bridge, tls[0], body, path="/other")[0] == 404
        assert post(bridge, tls[0], b"not json")[0] == 400
        assert post(bridge, tls[0], b'{"no": "alerts"}')[0] == 400
        assert not out.exists() and lines == []


def test_a_failing_or_hung_command_answers_502_and_the_log_says_why(tls: tuple[Path, Path, Path],
                                                                     tmp_path: Path) -> None:
    lines: list[str] = []
    failing = [sys.executable, "-c", "import sys; print('no route to pager', file=sys.stderr); sys.exit(3)"]
    with bridge_for(failing, tls, tmp_path, lines) as bridge:
        status, text = post(bridge, tls[0], json.dumps(PAYLOAD).encode())
        assert status == 502 and "exited 3" in text and "no route to pager" in text
        assert len(lines) == 1 and "Alertmanager sends it again" in lines[0] and "exited 3" in lines[0]
    hung = [sys.executable, "-c", "import time; time.sleep(60)"]
    with bridge_for(hung, tls, tmp_path, lines, timeout=0.5) as bridge:
        status, text = post(bridge, tls[0], json.dumps(PAYLOAD).encode())
        assert status == 502 and "did not finish within 0.5 s and was killed" in text


def test_a_missing_program_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="could not be started") as caught:
        notify(["/nonexistent/notify"], b"{}", cwd=tmp_path)
    assert "monitoring.alerts.command" in (caught.value.hint or "")


def test_the_token_is_made_once_0600(tmp_path: Path) -> None:
    path = tmp_path / "alerts-token"
    token = ensure_token(path)
    assert len(token) >= 40 and path.stat().st_mode & 0o777 == 0o600
    assert ensure_token(path) == token


def test_the_summary_names_the_group() -> None:
    assert summary(PAYLOAD) == "VaultmeshX (firing, 1 alert)"
    assert summary({"status": "resolved", "alerts": [{}, {}]}) == "alerts (resolved, 2 alerts)"
