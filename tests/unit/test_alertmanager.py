"""monitoring.alerts: the mesh file's receiver and its checks, whether the keeper runs Alertmanager, the
alertmanager.yml it renders (accepted by `amtool check-config`), Prometheus's `alerting` pointing at it
(accepted by `promtool check config`), and `down` stopping it."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vaultmesh import pki
from vaultmesh.errors import SpecError
from vaultmesh.layout import build_layout
from vaultmesh.monitoring.alertmanager import BINARY, RECEIVER, Bridge, render_alertmanager_config, wanted
from vaultmesh.monitoring.config import render_prometheus_config
from vaultmesh.runtime.processes import alertmanager_process, stop_order
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.models import AlertsSpec, MeshSpec, zone_layout

HOOK = "https://hooks.example.com/T000/B000/secret"


def alerts(text: str) -> AlertsSpec:
    spec = parse_spec(f"monitoring:\n  alerts:\n{text}", source="t")
    assert spec.monitoring.alerts is not None
    return spec.monitoring.alerts


def spec_error(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        alerts(text)
    return str(caught.value)


def test_a_receiver_is_a_webhook_or_a_command_with_sane_default_timings() -> None:
    hook = alerts(f"    webhook: {HOOK}\n")
    assert (hook.webhook, hook.command) == (HOOK, None)
    assert (hook.group_wait, hook.group_interval, hook.repeat_interval) == (30, 300, 4 * 3600)
    cmd = alerts("    command: [notify, --to, ops]\n    group_wait: 1s\n    group_interval: 2s\n")
    assert (cmd.webhook, cmd.command, cmd.group_wait, cmd.group_interval) == (None, ["notify", "--to", "ops"], 1, 2)
    assert parse_spec("nodes: 3\n", source="t").monitoring.alerts is None
    for loopback in ("http://127.0.0.1:9099/hook", "http://[::1]:9099/", "http://localhost:9099/"):
        assert alerts(f"    webhook: '{loopback}'\n").webhook == loopback


def test_plain_http_is_refused_unless_loopback_and_says_so() -> None:
    why = spec_error("    webhook: http://hooks.example.com/x\n")
    assert "must be https://" in why and "loopback" in why and "127.0.0.1" in why
    assert "must be https://" in spec_error("    webhook: http://10.0.0.1/x\n")
    assert "not an http(s) URL" in spec_error("    webhook: ftp://hooks.example.com/x\n")
    assert "not an http(s) URL" in spec_error("    webhook: hooks.example.com\n")


def test_exactly_one_receiver_and_a_command_of_words() -> None:
    assert "exactly one receiver" in spec_error("    group_wait: 1s\n")
    assert "exactly one receiver" in spec_error(f"    webhook: {HOOK}\n    command: [x]\n")
    assert "list of non-empty words" in spec_error("    command: []\n")
    assert "list of non-empty words" in spec_error("    command: [notify, '']\n")
    assert "at least 1s" in spec_error("    command: [x]\n    group_wait: 0\n")
    why = spec_error("    command: [x]\n    group_interval: 1h\n    repeat_interval: 5m\n")
    assert "at least group_interval" in why


def test_it_runs_with_a_receiver_prometheus_and_the_binary_and_says_why_not_otherwise() -> None:
    hook = alerts(f"    webhook: {HOOK}\n")
    assert wanted(hook, "/usr/bin/prometheus-alertmanager", prometheus=True) == (True, None)
    run, why = wanted(None, "/usr/bin/prometheus-alertmanager", prometheus=True)
    assert not run and why and "monitoring.alerts" in why
    run, why = wanted(hook, "/usr/bin/prometheus-alertmanager", prometheus=False)
    assert not run and why and "Prometheus does not run" in why
    run, why = wanted(hook, None, prometheus=True)
    assert not run and why and f"Debian package {BINARY}" in why


def config(spec: AlertsSpec, bridge: Bridge | None = None) -> dict[str, Any]:
    return yaml.safe_load(render_alertmanager_config(spec, mesh="m1", bridge=bridge))


def test_a_webhook_receiver_gets_every_alert_grouped_by_name_with_the_file_timings() -> None:
    doc = config(alerts(f"    webhook: {HOOK}\n"))
    assert doc["route"] == {"receiver": RECEIVER, "group_by": ["alertname", "mesh"], "group_wait": "30s",
                            "group_interval": "5m", "repeat_interval": "4h"}
    assert doc["receivers"] == [{"name": RECEIVER, "webhook_configs": [{"url": HOOK, "send_resolved": True}]}]
    fast = config(alerts("    webhook: http://127.0.0.1:9/h\n    group_wait: 1s\n    group_interval: 1s\n"))
    assert (fast["route"]["group_wait"], fast["route"]["group_interval"]) == ("1s", "1s")


def test_a_command_receiver_goes_to_the_keepers_bridge_with_a_token_and_the_mesh_ca() -> None:
    bridge = Bridge("https://127.0.0.1:18001/alerts", Path("/s/monitoring/alerts-token"), Path("/s/pki/ca.pem"))
    doc = config(alerts("    command: [notify]\n"), bridge)
    (hook,) = doc["receivers"][0]["webhook_configs"]
    assert hook == {"url": "https://127.0.0.1:18001/alerts", "send_resolved": True, "http_config": {
        "authorization": {"type": "Bearer", "credentials_file": "/s/monitoring/alerts-token"},
        "tls_config": {"ca_file": "/s/pki/ca.pem", "server_name": "localhost", "min_version": "TLS12"}}}
    assert "notify" not in render_alertmanager_config(alerts("    command: [notify]\n"), mesh="m1", bridge=bridge)
    with pytest.raises(ValueError, match="bridge"):
        render_alertmanager_config(alerts("    command: [notify]\n"), mesh="m1")


@pytest.mark.skipif(shutil.which("amtool") is None,
                    reason="amtool is not installed (Debian package `prometheus-alertmanager`; .ci/run installs it)")
@pytest.mark.parametrize("receiver", [f"    webhook: {HOOK}\n", "    command: [notify]\n    group_wait: 1s\n"])
def test_amtool_accepts_the_rendered_config(receiver: str, tmp_path: Path) -> None:
    token, ca = tmp_path / "alerts-token", tmp_path / "ca.pem"
    token.write_text("t0k3n")
    ca.write_bytes(pki.create_ca("test", now=dt.datetime.now(dt.UTC), days=1).cert_pem)
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager_config(alerts(receiver), mesh="m1",
                                               bridge=Bridge("https://127.0.0.1:18001/alerts", token, ca)))
    done = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "1 receivers" in done.stdout


def test_prometheus_sends_alerts_to_the_alertmanager_over_verified_tls(tmp_path: Path) -> None:
    spec = MeshSpec()
    layout = build_layout(spec.name, tmp_path, zone_layout(spec), list(range(20000, 20007)), transit_seal=False)
    doc = yaml.safe_load(render_prometheus_config(layout, rules_file=None, keeper=None, entry=False,
                                                  alertmanager="127.0.0.1:19093"))
    assert doc["alerting"] == {"alertmanagers": [{
        "scheme": "https", "tls_config": {"ca_file": str(layout.paths.ca_cert), "server_name": "localhost",
                                          "min_version": "TLS12"},
        "static_configs": [{"targets": ["127.0.0.1:19093"]}]}]}
    without = yaml.safe_load(render_prometheus_config(layout, rules_file=None, keeper=None, entry=False))
    assert "alerting" not in without
    if shutil.which("promtool"):
        layout.paths.ca_cert.parent.mkdir(parents=True)
        layout.paths.ca_cert.write_bytes(pki.create_ca("test", now=dt.datetime.now(dt.UTC), days=1).cert_pem)
        path = tmp_path / "prometheus.yml"
        path.write_text(render_prometheus_config(layout, rules_file=None, keeper=None, entry=False,
                                                 alertmanager="127.0.0.1:19093"))
        done = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_down_stops_the_keeper_then_alertmanager_and_prometheus_then_the_nodes(tmp_path: Path) -> None:
    from vaultmesh.runtime.processes import keeper_process, prometheus_process

    spec = MeshSpec()
    layout = build_layout(spec.name, tmp_path, zone_layout(spec), list(range(20000, 20007)), transit_seal=False)
    keeper, users, nodes = stop_order(layout)[:3]
    assert keeper == [keeper_process(layout.paths)]  # alone: it starts the other two again when they die
    assert alertmanager_process(layout.paths) in users and prometheus_process(layout.paths) in users
    assert alertmanager_process(layout.paths) not in nodes
    assert alertmanager_process(layout.paths).marker == str(layout.paths.alertmanager_config)
