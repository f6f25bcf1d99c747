"""The command receiver of ``monitoring.alerts`` (the edge). Alertmanager only sends webhooks, so the keeper
listens for them itself, on 127.0.0.1 over HTTPS (its mesh-CA certificate), and takes only a POST to ``PATH``
carrying the bearer token of ``alerts_token`` (0600, made once): any other local process is refused (401). Each
notification runs the user's command once (no shell, its own process group, killed after ``COMMAND_TIMEOUT``),
with Alertmanager's webhook JSON on stdin. Exit 0 answers 200; anything else answers 502, so Alertmanager sends
the notification again, and the keeper's log says why.

It lives in the keeper because the keeper already runs for the mesh's whole life and runs Alertmanager; one
thread per request (``ThreadingHTTPServer``), a daemon thread that ends with the keeper.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import signal
import ssl
import subprocess
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from vaultmesh.errors import RuntimeFailure
from vaultmesh.fsutil import write_atomic

PATH = "/alerts"
COMMAND_TIMEOUT = 10.0
"""Seconds the command may run before it (and everything it started) is killed: a notifier sends a mail or a
page. Alertmanager's own deadline for a notification is its ``group_interval`` but never under 10 s, so a command
that finishes in time is never sent twice."""
MAX_BODY = 1 << 20
"""Bytes of JSON taken per notification; Alertmanager's for twenty alerts is ~20 KiB."""
STDERR_LINES = 5


def ensure_token(path: Path) -> str:
    """The bridge's bearer token: read from ``path``, or made (32 random bytes, 0600) when there is none."""
    with contextlib.suppress(OSError):
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    write_atomic(path, token.encode(), mode=0o600)
    return token


def summary(payload: dict[str, object]) -> str:
    """``VaultmeshKeeperRestarted (firing, 1 alert)``: what one notification is about, for the log."""
    labels = payload.get("groupLabels")
    name = labels.get("alertname") if isinstance(labels, dict) else None
    alerts = payload.get("alerts")
    count = len(alerts) if isinstance(alerts, list) else 0
    return f"{name or 'alerts'} ({payload.get('status', '?')}, {count} alert{'s' if count != 1 else ''})"


def notify(command: Sequence[str], payload: bytes, *, cwd: Path, timeout: float = COMMAND_TIMEOUT) -> None:
    """Run ``command`` with ``payload`` on stdin. A missing program, a timeout or a non-zero exit is a
    ``RuntimeFailure`` naming the program (and the last lines of its stderr)."""
    program = command[0]
    try:
        proc = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True, cwd=cwd)
    except OSError as err:
        raise RuntimeFailure(f"alert command {program!r} could not be started ({err.strerror or err})",
                             hint="fix monitoring.alerts.command in the mesh file: a list of words, the program "
                                  "first") from None
    try:
        _, err = proc.communicate(payload, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeFailure(f"alert command {program!r} did not finish within {timeout:g} s and was killed") from None
    if proc.returncode != 0:
        tail = " | ".join(line[:200] for line in err.decode(errors="replace").splitlines()[-STDERR_LINES:])
        code = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited {proc.returncode}"
        raise RuntimeFailure(f"alert command {program!r} {code}: {tail or '(nothing on stderr)'}")


class _Handler(BaseHTTPRequestHandler):
    server: AlertBridge

    def log_message(self, format: str, *args: object) -> None:
        pass  # the keeper's log says what ran; no access log

    def _answer(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(405, "POST Alertmanager's webhook JSON to /alerts")

    def do_POST(self) -> None:
        bridge = self.server
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {bridge.token}".encode()):
            self._answer(401, "a bearer token is required")
            return
        if self.path.split("?", 1)[0] != PATH:
            self._answer(404, f"POST to {PATH}")
            return
        try:
            length = int(self.headers.get("Content-Length") or -1)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._answer(413 if length > MAX_BODY else 411, f"a JSON body of at most {MAX_BODY} bytes is required")
            return
        body = self.rfile.read(length)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            self._answer(400, "not Alertmanager's webhook JSON (an object with an alerts list)")
            return
        what = summary(payload)
        try:
            notify(bridge.command, body, cwd=bridge.cwd, timeout=bridge.timeout)
        except RuntimeFailure as err:
            bridge.log(f"alerts: {what}: {err}; Alertmanager sends it again")
            self._answer(502, str(err))
            return
        bridge.log(f"alerts: ran {bridge.command[0]} for {what}")
        self._answer(200, "ok")


class AlertBridge(ThreadingHTTPServer):
    """The listening bridge; ``url`` is what Alertmanager's config names."""

    daemon_threads = True

    def __init__(self, port: int, *, command: Sequence[str], token: str, cert: Path, key: Path, cwd: Path,
                 log: Callable[[str], None], timeout: float = COMMAND_TIMEOUT) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(certfile=str(cert), keyfile=str(key))
        except (OSError, ssl.SSLError):
            self.server_close()
            raise
        # the handshake happens in the request's own thread, so a slow client holds up no other
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.command, self.token, self.cwd, self.log, self.timeout = list(command), token, cwd, log, timeout

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{PATH}"


def serve_bridge(ports: Sequence[int], **kw: object) -> AlertBridge:
    """Listen on the first of ``ports`` that can be bound (0: any free one), serving from a daemon thread.
    ``kw``: ``AlertBridge``'s. Raises OSError when none can."""
    last: OSError | None = None
    for port in ports:
        try:
            bridge = AlertBridge(port, **kw)  # type: ignore[arg-type]
        except OSError as err:
            last = err
            continue
        threading.Thread(target=bridge.serve_forever, name="alert-bridge", daemon=True).start()
        return bridge
    raise last or OSError("no port to listen on")
