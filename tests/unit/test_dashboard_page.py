"""The keeper's dashboard page: the document built from recorded Prometheus answers of a real mesh
(``data/dashboard/prometheus-answers.json``: OpenBao 2.7.2, 3 nodes, the keeper's Prometheus), what it says
without Prometheus, which request gets what, and the listener that serves it beside ``/metrics``."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from vaultmesh import pki
from vaultmesh.fsutil import write_atomic
from vaultmesh.keeper import page
from vaultmesh.keeper.metrics import serve_metrics
from vaultmesh.lifecycle.keeper_process import KeeperStatus
from vaultmesh.lifecycle.status import dashboard_url
from vaultmesh.lifecycle.view import MeshView, NodeView
from vaultmesh.monitoring.dashboard import mesh_panels
from vaultmesh.spec.load import parse_spec

RECORDED = json.loads((Path(__file__).parent / "data" / "dashboard" / "prometheus-answers.json").read_text())
NOW = float(RECORDED["now"])
SPEC = parse_spec("", source="test")  # the recording's mesh: the default one (name vaultmesh, 3 nodes)


def node(name: str, *, leader: bool = False, reachable: bool = True, sealed: bool = False,
         running: bool = True) -> NodeView:
    return NodeView(name, f"zone-{'abc'[int(name[-1]) - 1]}", f"https://127.0.0.1:1{name[-1]}000", 100,
                    running=running, reachable=reachable, initialized=True, sealed=sealed if reachable else None,
                    standby=not leader if reachable else None, voter=True if reachable else None,
                    autopilot_healthy=reachable, version="2.7.2" if reachable else None,
                    error=None if reachable else "connection refused")


VIEW = MeshView((node("node-1"), node("node-2", leader=True), node("node-3")), failure_tolerance=1,
                token_ok=True, autopilot_healthy=True)
RECORD = KeeperStatus(pid=1, started=NOW - 600, cycle_at=NOW - 2, healthy_since=NOW - 590, revoked=2, restarts=1,
                      snapshot={"time": NOW - 120, "path": "/state/snapshots/x.snap", "size": 34567, "index": 812,
                                "failures": 0, "error": None},
                      drill={"time": NOW - 3600, "ok": True, "rto_s": 4.2, "rpo_s": 61.0, "failed": []})
CERTS = {"node-1": NOW + 90 * 86400, "keeper": NOW + 30.5 * 86400, "ca": NOW + 3650 * 86400}


def answers(**kw: Any) -> page.PromAnswers:
    return page.PromAnswers("https://127.0.0.1:9090", None, None, RECORDED["ranges"],
                            kw.get("alerts", RECORDED["alerts"]))


def test_the_plots_are_grafana_panels_by_title_so_their_promql_is_written_once() -> None:
    panels = page.plot_panels(SPEC)
    assert [p.title for p in panels] == list(page.PLOTS)
    grafana = {p.title: p for p in mesh_panels(SPEC)}
    assert all(p == grafana[p.title] for p in panels)
    assert set(RECORDED["ranges"]) == {expr for p in panels for expr, _ in p.queries}  # the recording is current


def test_the_document_from_recorded_answers_has_nodes_leader_lag_and_plots() -> None:
    doc = page.document(SPEC, VIEW, RECORD, CERTS, answers(), now=NOW)
    assert doc["leader"] == "node-2" and doc["healthy"] is True and doc["failure_tolerance"] == 1
    rows = {n["name"]: n for n in doc["nodes"]}
    assert [n["name"] for n in doc["nodes"]] == ["node-1", "node-2", "node-3"]
    assert rows["node-2"]["role"] == "leader" and rows["node-2"]["lag"] == 0.0
    assert (rows["node-1"]["role"], rows["node-1"]["zone"], rows["node-1"]["voter"], rows["node-1"]["version"]) == (
        "standby", "zone-a", True, "2.7.2")
    lag = {r["metric"]["peer_id"]: float(r["values"][-1][1]) for r in RECORDED["ranges"][
        page.plot_panels(SPEC)[-1].queries[0][0]]}
    assert rows["node-1"]["lag"] == lag["node-1"] and rows["node-3"]["lag"] == lag["node-3"]
    plots = {p["title"]: p for p in doc["plots"]}
    assert list(plots) == list(page.PLOTS)
    latency = {s["name"] for s in plots["Request latency"]["series"]}
    assert {"node-1 p50", "node-1 p99", "node-2 p50", "node-2 p99"} == latency
    assert {s["name"] for s in plots["Tokens created by auth mount (5m)"]["series"]} == {"auth/userpass/ ttl 1h"}
    requests = next(s for s in plots["Requests and logins"]["series"] if s["name"] == "node-1 requests")
    assert len(requests["points"]) == 6 and all(isinstance(v, float) for _, v in requests["points"])
    assert doc["snapshot"]["age_s"] == pytest.approx(120) and doc["snapshot"]["index"] == 812
    assert "path" not in doc["snapshot"]  # names and numbers only
    assert doc["drill"] == {"time": NOW - 3600, "age_s": pytest.approx(3600), "ok": True, "rto_s": 4.2,
                            "rpo_s": 61.0, "error": None}
    assert [c["name"] for c in doc["certificates"]] == ["keeper", "node-1", "ca"]
    assert doc["certificates"][0]["days_left"] == 30.5
    assert doc["alerts"] == [{"name": "VaultmeshSnapshotMissing", "state": "pending", "severity": "warning",
                              "summary": "the keeper of mesh vaultmesh has made no snapshot for 30m", "where": "",
                              "since": RECORDED["alerts"][0]["activeAt"]}]
    json.loads(page.dumps(doc))  # strict JSON: no NaN


def test_without_prometheus_the_page_still_has_what_the_keeper_knows() -> None:
    off = page.PromAnswers(None, "monitoring: none in the mesh file")
    doc = page.document(SPEC, VIEW, RECORD, CERTS, off, now=NOW)
    assert doc["prometheus"] == {"url": None, "off": "monitoring: none in the mesh file", "error": None}
    assert [p["series"] for p in doc["plots"]] == [[]] * len(page.PLOTS) and doc["alerts"] == []
    assert doc["leader"] == "node-2" and len(doc["nodes"]) == 3 and doc["certificates"]
    assert [n["lag"] for n in doc["nodes"]] == [None, 0.0, None]  # unknown, not 0


def test_a_mesh_that_cannot_be_observed_says_why() -> None:
    doc = page.document(SPEC, None, None, {}, page.PromAnswers(None, "not started yet"), now=NOW,
                        view_error="node-1: connection refused")
    assert (doc["nodes"], doc["leader"], doc["healthy"], doc["keeper"]) == ([], None, False, None)
    assert doc["view_error"] == "node-1: connection refused"


def test_roles_of_nodes_that_do_not_lead() -> None:
    assert page.role(node("node-1", leader=True)) == "leader"
    assert page.role(node("node-1", sealed=True)) == "sealed"
    frozen = node("node-1", reachable=False)
    assert page.role(frozen) == "not answering" and page.role(node("node-1", reachable=False, running=False)) == "down"
    doc = page.document(SPEC, MeshView((frozen,)), None, {}, page.PromAnswers(None, "off"), now=NOW)
    assert (doc["nodes"][0]["role"], doc["nodes"][0]["error"]) == ("not answering", "connection refused")


def test_alerts_of_this_mesh_firing_first_and_nan_points_dropped() -> None:
    def alert(name: str, state: str, mesh: str = "vaultmesh", at: str = "2026-12-03T18:00:00Z") -> dict[str, Any]:
        return {"labels": {"alertname": name, "mesh": mesh, "severity": "critical", "node": "node-3"},
                "annotations": {"summary": f"{name} says so"}, "state": state, "activeAt": at}

    got = page.alerts(answers(alerts=[alert("Pending", "pending", at="2026-12-03T17:00:00Z"),
                                      alert("Other", "firing", mesh="another"), alert("Firing", "firing"),
                                      alert("Gone", "inactive")]), "vaultmesh")
    assert [(a["name"], a["state"], a["where"]) for a in got] == [("Firing", "firing", "node=node-3"),
                                                                  ("Pending", "pending", "node=node-3")]
    assert page._points([[1, "NaN"], [2, "1.5"], [3, "+Inf"], [4, None]]) == [[2.0, 1.5]]
    assert page.legend("{{mount_point}} ttl {{creation_ttl}}", {"mount_point": "auth/jwt/"}) == "auth/jwt/ ttl"
    assert page.legend("{{node}}", {}) == "value"


def data() -> bytes:
    return b'{"mesh":"m"}'


def test_which_request_gets_what() -> None:
    assert page.answer("GET", "/metrics", "127.0.0.1:5", 5, data) is None
    status, headers, body = page.answer("GET", "/dashboard", "127.0.0.1:5", 5, data) or ("", [], b"")
    assert status == "200 OK" and body.startswith(b"<!doctype html>")
    assert dict(headers)["Content-Type"] == "text/html; charset=utf-8" and "Content-Security-Policy" in dict(headers)
    assert page.answer("GET", "/dashboard/data.json", "localhost:5", 5, data) == (
        "200 OK", [("Content-Type", "application/json"), *page.security_headers()], data())
    assert (page.answer("GET", "/dashboard", "attacker.example:5", 5, data) or ("",))[0] == "421 Misdirected Request"
    assert (page.answer("POST", "/dashboard/data.json", "127.0.0.1:5", 5, data) or ("",))[0].startswith("405")


def test_the_inline_script_and_style_are_allowed_by_their_hash_and_nothing_is_fetched_elsewhere() -> None:
    html = page.page_html().decode()
    csp = dict(page.security_headers())["Content-Security-Policy"]

    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    script = re.search(r"<script>(.*)</script>", html, re.S)
    style = re.search(r"<style>(.*)</style>", html, re.S)
    assert script and style
    assert f"script-src {sha(script.group(1))};" in csp and f"style-src {sha(style.group(1))};" in csp
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # no CDN: the machine has no internet
    assert "innerHTML" not in html  # every value is set as text


def test_the_dashboard_url_is_beside_metrics() -> None:
    assert dashboard_url("https://127.0.0.1:16097/metrics") == "https://127.0.0.1:16097/dashboard"
    assert dashboard_url(None) is None and dashboard_url("https://127.0.0.1:1/other") is None


def test_the_metrics_listener_serves_the_page_and_still_metrics(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca = pki.create_ca("test CA", now=now, days=2)
    pair = pki.issue_server_cert(ca, "keeper", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now, days=1)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_atomic(key, pair.key_pem)
    write_atomic(cert, pair.cert_pem, mode=0o644)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    addr, server = serve_metrics(lambda: KeeperStatus(pid=1, started=0), cert, key, 0, page=page.route(data))
    try:
        base = addr.removesuffix("/metrics")
        with urllib.request.urlopen(f"{base}/dashboard/data.json", context=context, timeout=5) as resp:
            assert resp.read() == data() and resp.headers["Cache-Control"] == "no-store"
        with urllib.request.urlopen(f"{base}/dashboard", context=context, timeout=5) as resp:
            assert b"/dashboard/data.json" in resp.read() and resp.headers["Content-Type"].startswith("text/html")
        with urllib.request.urlopen(addr, context=context, timeout=5) as resp:
            assert b"vaultmesh_keeper_up 1.0" in resp.read()
        head = urllib.request.Request(f"{base}/dashboard", method="HEAD")
        with urllib.request.urlopen(head, context=context, timeout=5) as resp:
            assert resp.read() == b"" and int(resp.headers["Content-Length"]) > 1000
    finally:
        server.shutdown()
        server.server_close()
