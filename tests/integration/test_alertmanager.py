"""Alertmanager run by the keeper (``monitoring.alerts``), end to end on a real mesh: the keeper starts Prometheus
and Alertmanager, ``status --json`` names Alertmanager's URL (HTTPS, the mesh CA), Prometheus sends to it, and a
SIGKILLed node (healed by the keeper: ``VaultmeshKeeperRestarted``) reaches the test's own webhook receiver (an
``http.server`` on a free loopback port) as a POST naming that alert. ``down`` stops Alertmanager.

The command receiver without a mesh (cheap): a real Alertmanager on the rendered config reaches the keeper's
command bridge (bearer token, TLS verified with a test CA) and the command gets the alert's JSON on stdin.

Everything is stopped by pid, also on failure (``make_mesh``; the receiver, bridge and Alertmanager in ``with``
or ``finally``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import ssl
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.polling import eventually
from vaultmesh import pki
from vaultmesh.keeper.alerts import ensure_token, serve_bridge
from vaultmesh.keeper.monitoring import web_config
from vaultmesh.layout import StatePaths
from vaultmesh.lifecycle import status as st
from vaultmesh.lifecycle import teardown
from vaultmesh.monitoring.alertmanager import BINARY, Bridge, render_alertmanager_config
from vaultmesh.runtime.local import free_ports, read_pid, stop_processes
from vaultmesh.runtime.processes import alertmanager_process, start_alertmanager
from vaultmesh.spec.models import AlertsSpec
from vaultmesh.waiting import wait_until

from .conftest import MeshHandle

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which(BINARY) is None,
                                 reason=f"prometheus and {BINARY} are not installed (Debian packages; .ci/run "
                                        "installs them)")]


class Receiver(ThreadingHTTPServer):
    """A webhook receiver: every POST's JSON body, in order."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Record)
        self.posts: list[dict[str, Any]] = []


class _Record(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.posts.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    server = Receiver(free_ports(1)[0])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def get(url: str, ca: str) -> Any:
    with urllib.request.urlopen(url, timeout=5, context=ssl.create_default_context(cafile=ca)) as resp:
        return json.load(resp) if resp.headers.get_content_type() == "application/json" else resp.read()


def ready(url: str, ca: str) -> bool:
    try:
        return bool(get(f"{url}/-/ready", ca))
    except OSError:
        return False


def monitoring(handle: MeshHandle) -> dict[str, Any]:
    mesh, view, addr = st.status(handle.dir)
    return st.status_json(mesh, view, addr)["monitoring"]


def fired(hook: Receiver, alert: str) -> dict[str, Any] | None:
    for post in list(hook.posts):
        for one in post.get("alerts", []):
            if one.get("labels", {}).get("alertname") == alert and one.get("status") == "firing":
                return one
    return None


def test_a_killed_node_reaches_the_named_webhook(make_mesh: Any) -> None:
    with receiver() as hook:
        handle = make_mesh("nodes: 1\ndev: true\nmonitoring:\n  alerts:\n"
                           f"    webhook: http://127.0.0.1:{hook.server_address[1]}/hook\n"
                           "    group_wait: 1s\n    group_interval: 1s\n    repeat_interval: 1m\n")
        paths = handle.mesh.paths
        shown = eventually(lambda: (mon := monitoring(handle))["alertmanager_url"] and mon["prometheus_url"] and mon,
                           timeout=30, interval=0.5)
        assert shown["alertmanager_reason"] is None
        am, prom = shown["alertmanager_url"], shown["prometheus_url"]
        assert am.startswith("https://127.0.0.1:")
        assert wait_until(lambda: ready(am, handle.ca), timeout=30, interval=0.2), \
            paths.alertmanager_log.read_text()[-2000:]  # HTTPS verified with the mesh CA
        assert paths.alertmanager_config.stat().st_mode & 0o777 == 0o600

        def sent_to() -> list[str]:
            return [a["url"] for a in get(f"{prom}/api/v1/alertmanagers", handle.ca)["data"]["activeAlertmanagers"]]

        assert eventually(sent_to, timeout=30, interval=0.5) == [f"{am}/api/v2/alerts"]
        # the counter's first sample, before the kill: an increase needs two
        query = f"{prom}/api/v1/query?query=vaultmesh_keeper_restarts_total"
        eventually(lambda: get(query, handle.ca)["data"]["result"], timeout=30, interval=0.5)

        node = handle.mesh.layout.nodes[0]
        killed = read_pid(node.pid_file)
        assert killed
        assert fired(hook, "VaultmeshKeeperRestarted") is None
        os.kill(killed, signal.SIGKILL)
        alert = eventually(lambda: fired(hook, "VaultmeshKeeperRestarted"), timeout=90, interval=0.5)
        assert alert["labels"]["mesh"] == handle.mesh.spec.name and alert["labels"]["severity"] == "warning"
        assert read_pid(node.pid_file) != killed  # the keeper healed it

        pid = alertmanager_process(paths).pid()
        assert pid is not None
        assert "alertmanager" in teardown.down(handle.dir)
        assert alertmanager_process(paths).pid() is None
        assert monitoring(handle)["alertmanager_url"] is None


def test_the_command_receiver_gets_the_alert_json_through_the_keepers_bridge(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    paths.monitoring_dir.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    ca = pki.create_ca("test", now=now, days=1)
    leaf = pki.issue_server_cert(ca, "local", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now, days=1)
    ca_file, cert, key = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.cert_pem)
    cert.write_bytes(leaf.cert_pem)
    key.write_bytes(leaf.key_pem)
    paths.prometheus_web.write_text(web_config(str(cert), str(key)))
    out, lines = tmp_path / "notified.json", []
    copy = f"import sys, pathlib; pathlib.Path({str(out)!r}).write_bytes(sys.stdin.buffer.read())"
    alerts = AlertsSpec(command=[sys.executable, "-c", copy], group_wait=1, group_interval=1)
    assert alerts.command is not None
    bridge = serve_bridge([0], command=alerts.command, token=ensure_token(paths.alerts_token), cert=cert, key=key,
                          cwd=paths.monitoring_dir, log=lines.append)
    pid = None
    try:
        paths.alertmanager_config.write_text(render_alertmanager_config(
            alerts, mesh="m1", bridge=Bridge(bridge.url, paths.alerts_token, ca_file)))
        port = free_ports(1)[0]
        pid = start_alertmanager(paths, shutil.which(BINARY) or BINARY, port)
        am = f"https://127.0.0.1:{port}"
        assert wait_until(lambda: ready(am, str(ca_file)), timeout=30, interval=0.2), \
            paths.alertmanager_log.read_text()[-2000:]
        body = json.dumps([{"labels": {"alertname": "VaultmeshTest", "mesh": "m1", "severity": "warning"}}]).encode()
        request = urllib.request.Request(f"{am}/api/v2/alerts", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5, context=ssl.create_default_context(cafile=str(ca_file))):
            pass
        eventually(out.exists, timeout=30, interval=0.2)
        got = json.loads(out.read_bytes())
        assert got["status"] == "firing" and got["groupLabels"] == {"alertname": "VaultmeshTest", "mesh": "m1"}
        assert [a["labels"]["alertname"] for a in got["alerts"]] == ["VaultmeshTest"]
        eventually(lambda: lines, timeout=10)  # logged once the command has exited
        assert lines[0] == f"alerts: ran {sys.executable} for VaultmeshTest (firing, 1 alert)"
    finally:
        bridge.shutdown()
        bridge.server_close()
        if pid is not None:
            stop_processes([pid])
