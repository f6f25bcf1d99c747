"""`vaultmesh export helm`: values for the OpenBao Helm chart, validated against the chart's own values schema
and values.yaml (copies in tests/unit/data/, source commit in openbao-helm-values.SOURCE.md)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from vaultmesh.cli.main import cli
from vaultmesh.errors import VaultmeshError
from vaultmesh.export.helm import (
    HelmOptions,
    alert_rules,
    cron_schedule,
    expire_days,
    helm_values,
    render_helm_values,
    secret_commands,
    server_config,
    tls_names,
)
from vaultmesh.monitoring.names import VAULTMESH_METRICS, metric_names
from vaultmesh.monitoring.rules import mesh_rules
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.models import MeshSpec

DATA = Path(__file__).parent / "data"
OPTS = HelmOptions(image_tag="2.7.2", namespace="vault")


def spec(text: str = "name: prod\n") -> MeshSpec:
    return parse_spec(text)


def values(text: str = "name: prod\n") -> dict[str, Any]:
    return helm_values(spec(text), OPTS)


# --- against the chart ---------------------------------------------------------------------------------------

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install -e '.[test]')")


def chart_schema() -> dict[str, Any]:
    return json.loads((DATA / "openbao-helm-values.schema.json").read_text())


@pytest.mark.parametrize("mesh", ["name: prod\n", "name: five\nnodes: 5\nzones: [a, b, c]\n",
                                  "name: dev\ndev: true\nnodes: 1\nzones: [a]\nseal: {type: shamir}\n",
                                  "name: kms\nseal: {type: awskms, options: {region: eu-west-1, kms_key_id: k}}\n"
                                  "snapshots: {every: null}\n"])
def test_the_values_validate_against_the_charts_schema(mesh: str) -> None:
    rendered = yaml.safe_load(render_helm_values(spec(mesh), OPTS))
    jsonschema.Draft7Validator(chart_schema()).validate(rendered)


def test_the_schema_check_can_fail() -> None:
    bad = values()
    bad["server"]["ha"]["replicas"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(chart_schema()).validate(bad)


CHART_READS_TOO = {("fullnameOverride",)}
"""Keys the chart's templates read that its values.yaml does not list (``openbao.fullname`` in _helpers.tpl)."""


FREE_FORM = {"extraEnvironmentVars"}
"""Maps whose keys are the user's (environment variable names), not the chart's."""


def key_paths(value: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every mapping key path of ``value``, not descending into lists or free-form maps."""
    out = set()
    if isinstance(value, dict):
        for key, sub in value.items():
            path = (*prefix, key)
            out.add(path)
            if key not in FREE_FORM:
                out |= key_paths(sub, path)
    return out


def test_every_key_set_is_one_the_chart_declares() -> None:
    declared = key_paths(yaml.safe_load((DATA / "openbao-helm-values.yaml").read_text()))
    assert sorted(key_paths(values()) - declared - CHART_READS_TOO) == []


def test_a_misspelt_key_would_be_found() -> None:
    declared = key_paths(yaml.safe_load((DATA / "openbao-helm-values.yaml").read_text()))
    assert ("server", "auditStorge") not in declared and ("server", "auditStorage") in declared


# --- what the values say ------------------------------------------------------------------------------------


def test_ha_on_raft_with_one_replica_per_node() -> None:
    server = values("name: prod\nnodes: 5\n")["server"]
    assert server["ha"]["enabled"] and server["ha"]["raft"]["enabled"] and server["ha"]["raft"]["setNodeId"]
    assert server["ha"]["replicas"] == 5
    assert server["standalone"]["enabled"] is False
    assert server["ha"]["disruptionBudget"] == {"enabled": True, "maxUnavailable": 1}


def test_tls_is_on_and_every_pod_joins_every_pod_over_tls() -> None:
    v = values()
    assert v["global"]["tlsDisable"] is False
    hcl = v["server"]["ha"]["raft"]["config"]
    joins = re.findall(r'leader_api_addr = "([^"]+)"\n\s+leader_ca_cert_file = "([^"]+)"', hcl)
    assert joins == [(f"https://prod-{i}.prod-internal:8200", "/openbao/tls/ca.crt") for i in range(3)]
    assert 'tls_cert_file = "/openbao/tls/tls.crt"' in hcl and "tls_disable" not in hcl
    assert {"name": "tls", "secret": {"secretName": "prod-tls", "defaultMode": 0o440}} in v["server"]["volumes"]
    assert v["server"]["ha"]["apiAddr"] == "https://$(BAO_K8S_POD_NAME).prod-internal:8200"


def test_the_certificate_names_cover_the_addresses_the_values_use() -> None:
    names = tls_names(spec(), "vault")
    assert "*.prod-internal" in names  # retry_join, BAO_API_ADDR, BAO_CLUSTER_ADDR: <pod>.prod-internal
    assert "prod-active.vault.svc" in names  # the snapshot CronJob's BAO_ADDR
    assert "prod-internal" in names  # the ServiceMonitor's serverName
    v = values()
    assert v["extraObjects"][0]["spec"]["endpoints"][0]["tlsConfig"]["serverName"] in names


def test_the_static_seal_reads_its_key_from_a_secret() -> None:
    v = values()
    assert 'seal "static"' in v["server"]["ha"]["raft"]["config"]
    assert 'current_key = "file:///openbao/seal/static.key"' in v["server"]["ha"]["raft"]["config"]
    assert {"name": "seal", "mountPath": "/openbao/seal", "readOnly": True} in v["server"]["volumeMounts"]
    assert any("prod-seal --from-file=static.key=" in line for line in secret_commands(spec(), OPTS))


def test_a_kms_seal_passes_its_options_and_shamir_has_no_stanza() -> None:
    kms = server_config(spec("seal: {type: awskms, options: {region: eu-west-1}}\n"))
    assert 'seal "awskms" {\n  region = "eu-west-1"\n}' in kms
    assert "seal " not in server_config(spec("seal: {type: shamir}\n"))
    assert all(vol["name"] != "seal" for vol in values("seal: {type: shamir}\n")["server"]["volumes"])


def test_the_transit_seal_is_refused_in_one_line() -> None:
    with pytest.raises(VaultmeshError, match="seal: transit has no Helm export"):
        helm_values(spec("seal: {type: transit}\n"), OPTS)


def test_the_audit_device_writes_to_the_audit_volume() -> None:
    v = values()
    assert v["server"]["auditStorage"] == {"enabled": True, "mountPath": "/openbao/audit"}
    assert 'file_path = "/openbao/audit/audit.log"' in v["server"]["ha"]["raft"]["config"]


def test_the_rules_are_the_meshs_over_openbao_metrics_only() -> None:
    v = values()
    rules = v["serverTelemetry"]["prometheusRules"]
    assert rules["enabled"] is True
    names = [r["alert"] for r in rules["rules"]]
    assert "VaultmeshNodeSealed" in names and "VaultmeshNoFailureTolerance" in names
    assert not any(metric_names(r["expr"]) & VAULTMESH_METRICS for r in rules["rules"])
    everything = {r.alert for r in mesh_rules(spec())}
    assert {"VaultmeshKeeperRestarted", "VaultmeshCertificateExpiring"} <= everything - set(names)


def test_the_service_monitor_scrapes_every_pod_verified_and_labels_as_the_rules_select() -> None:
    v = values()
    assert v["serverTelemetry"]["serviceMonitor"]["enabled"] is False  # the chart's scrapes the active pod only
    monitor = v["extraObjects"][0]
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"]["openbao-internal"] == "true"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["tlsConfig"]["ca"] == {"secret": {"name": "prod-tls", "key": "ca.crt"}}
    assert "insecureSkipVerify" not in endpoint["tlsConfig"]
    labels = {r["targetLabel"]: r.get("replacement") for r in endpoint["relabelings"]}
    rule = alert_rules(spec())[0]
    assert f'mesh="{labels["mesh"]}"' in str(rule["expr"]) and f'job="{labels["job"]}"' in str(rule["expr"])
    assert "node" in labels


def test_the_snapshot_cronjob_follows_snapshots_every_and_keep() -> None:
    agent = values("name: prod\nsnapshots: {every: 30m, keep: {count: null, age: 7d}}\n")["snapshotAgent"]
    assert agent["enabled"] and agent["schedule"] == "*/30 * * * *"
    assert agent["config"]["s3ExpireDays"] == "7"
    assert agent["config"]["s3Uri"] == "s3://prod-snapshots" and agent["config"]["s3Bucket"] == "prod-snapshots"
    assert agent["extraEnvironmentVars"] == {"BAO_CACERT": "/openbao/tls/ca.crt"}
    assert values("snapshots: {every: null}\n")["snapshotAgent"] == {"enabled": False}


@pytest.mark.parametrize("every, cron", [(60, "* * * * *"), (900, "*/15 * * * *"), (3600, "0 * * * *"),
                                         (6 * 3600, "0 */6 * * *"), (86400, "0 0 * * *")])
def test_cron_schedules(every: int, cron: str) -> None:
    assert cron_schedule(every) == cron


@pytest.mark.parametrize("every", [420, 90, 5 * 3600, 2 * 86400])
def test_an_interval_cron_cannot_say_evenly_is_refused(every: int) -> None:
    with pytest.raises(VaultmeshError, match="is not a cron schedule"):
        cron_schedule(every)


def test_expire_days_from_count_when_no_age() -> None:
    assert expire_days(spec("snapshots: {every: 15m, keep: 96}\n")) == 1
    assert expire_days(spec("snapshots: {every: 1h, keep: 100}\n")) == 5


def test_pods_spread_over_zones() -> None:
    assert "topology.kubernetes.io/zone" in values()["server"]["topologySpreadConstraints"]
    assert values("name: one\nzones: [a]\n")["server"]["topologySpreadConstraints"] is None


def test_the_config_stays_a_literal_block_in_the_file() -> None:
    text = render_helm_values(spec(), OPTS)
    assert "      config: |\n        ui = false\n" in text
    assert text.startswith("# Values for the OpenBao Helm chart")


# --- the command --------------------------------------------------------------------------------------------


def test_export_helm_writes_values_0644_and_says_which_secrets_to_make(tmp_path: Path) -> None:
    meshfile = tmp_path / "mesh.yaml"
    meshfile.write_text("name: blue\n")
    out = tmp_path / "values.yaml"
    result = CliRunner().invoke(cli, ["export", "helm", "-f", str(meshfile), "--out", str(out),
                                      "--namespace", "sec", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert yaml.safe_load(out.read_text())["fullnameOverride"] == "blue"
    assert "kubectl -n sec create secret generic blue-tls --from-file=ca.crt=ca.pem" in result.stderr


def test_export_helm_of_a_transit_mesh_fails_in_one_line(tmp_path: Path) -> None:
    meshfile = tmp_path / "mesh.yaml"
    meshfile.write_text("seal: {type: transit}\n")
    result = CliRunner().invoke(cli, ["export", "helm", "-f", str(meshfile), "--dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "seal: transit has no Helm export" in result.stderr


def test_export_helm_certs_makes_the_files_the_kubectl_lines_read(tmp_path: Path) -> None:
    import ssl

    from cryptography import x509

    from vaultmesh import pki

    meshfile = tmp_path / "mesh.yaml"
    meshfile.write_text("name: blue\n")
    certs = tmp_path / "k8s"
    args = ["export", "helm", "-f", str(meshfile), "--certs", str(certs), "--namespace", "sec",
            "--dir", str(tmp_path / "none")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "--from-file=tls.key=key.pem" in result.stderr
    for name, mode in [("ca.pem", 0o644), ("cert.pem", 0o644), ("key.pem", 0o600), ("static.key", 0o600)]:
        assert stat.S_IMODE((certs / name).stat().st_mode) == mode, name
    assert len((certs / "static.key").read_bytes()) == 32
    cert = pki.CertPair((certs / "cert.pem").read_bytes(), b"").cert
    sans = cert.extensions.get_extension_for_class(pki.x509.SubjectAlternativeName).value
    assert set(tls_names(spec("name: blue\n"), "sec")) <= set(sans.get_values_for_type(pki.x509.DNSName))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes()))
    ssl.create_default_context().load_cert_chain(certs / "cert.pem", certs / "key.pem")  # the key is the cert's
    before = {p.name: p.read_bytes() for p in certs.iterdir() if p.is_file()}
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert {p.name: p.read_bytes() for p in certs.iterdir() if p.is_file()} == before  # kept, not re-issued
