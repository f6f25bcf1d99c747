"""prometheus.yml for a mesh: every node over verified TLS, the keeper, the entry for `up` only; and
`promtool check config` accepts it with the rendered rule file."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vaultmesh import pki
from vaultmesh.errors import StateError
from vaultmesh.layout import MeshLayout, build_layout
from vaultmesh.monitoring.config import keeper_target, render_prometheus_config
from vaultmesh.monitoring.names import JOB_ENTRY, JOB_KEEPER, JOB_NODE
from vaultmesh.monitoring.rules import render_rules
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.models import MeshSpec, zone_layout

KEEPER = "https://127.0.0.1:18938/metrics"


def layout_of(spec: MeshSpec, root: Path, *, netns: tuple[str, int] | None = None) -> MeshLayout:
    ports = list(range(20000, 20000 + 2 * spec.nodes + 1))
    return build_layout(spec.name, root, zone_layout(spec), ports, transit_seal=False, netns=netns)


def doc(layout: MeshLayout, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"rules_file": Path("/r/rules.yml"), "keeper": KEEPER, "entry": True, **kw}
    return yaml.safe_load(render_prometheus_config(layout, **args))


def job(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(j for j in config["scrape_configs"] if j["job_name"] == name)


def test_every_node_is_scraped_over_tls_verified_with_the_mesh_ca(tmp_path: Path) -> None:
    layout = layout_of(MeshSpec(), tmp_path)
    nodes = job(doc(layout), JOB_NODE)
    assert nodes["scheme"] == "https"
    assert nodes["metrics_path"] == "/v1/sys/metrics" and nodes["params"] == {"format": ["prometheus"]}
    assert nodes["tls_config"]["ca_file"] == str(layout.paths.ca_cert)
    assert nodes["tls_config"]["server_name"] == "localhost"
    assert "insecure_skip_verify" not in nodes["tls_config"]
    assert [(c["targets"], c["labels"]) for c in nodes["static_configs"]] == [
        ([f"127.0.0.1:{n.api_port}"], {"mesh": "vaultmesh", "node": n.name, "zone": n.zone}) for n in layout.nodes]


def test_a_netns_mesh_is_scraped_at_its_namespace_addresses_with_the_name_its_certificates_carry(
        tmp_path: Path) -> None:
    layout = layout_of(MeshSpec(), tmp_path, netns=("abc123", 7))
    nodes = job(doc(layout), JOB_NODE)
    assert [c["targets"][0] for c in nodes["static_configs"]] == [f"10.213.7.{11 + i}:{n.api_port}"
                                                                  for i, n in enumerate(layout.nodes)]
    assert nodes["tls_config"]["server_name"] in pki.node_cert_names("node-1")[0]


def test_the_keeper_is_scraped_at_its_recorded_address(tmp_path: Path) -> None:
    keeper = job(doc(layout_of(MeshSpec(), tmp_path)), JOB_KEEPER)
    assert keeper["scheme"] == "https" and keeper["metrics_path"] == "/metrics"
    assert keeper["static_configs"] == [{"targets": ["127.0.0.1:18938"], "labels": {"mesh": "vaultmesh"}}]


def test_no_keeper_no_keeper_job_and_no_entry_no_entry_job(tmp_path: Path) -> None:
    names = [j["job_name"] for j in doc(layout_of(MeshSpec(), tmp_path), keeper=None, entry=False)["scrape_configs"]]
    assert names == [JOB_NODE]


def test_the_entry_is_scraped_for_up_only(tmp_path: Path) -> None:
    layout = layout_of(MeshSpec(), tmp_path)
    entry = job(doc(layout), JOB_ENTRY)
    assert entry["static_configs"][0]["targets"] == [f"127.0.0.1:{layout.entry_port}"]
    assert entry["metric_relabel_configs"] == [{"source_labels": ["__name__"], "regex": ".+", "action": "drop"}]


def test_the_mesh_is_an_external_label_and_the_rule_file_is_named(tmp_path: Path) -> None:
    config = doc(layout_of(parse_spec("name: blue\n"), tmp_path))
    assert config["global"]["external_labels"] == {"mesh": "blue"}
    assert config["rule_files"] == ["/r/rules.yml"]
    assert "rule_files" not in doc(layout_of(MeshSpec(), tmp_path), rules_file=None)


def test_no_yaml_anchors_in_the_file(tmp_path: Path) -> None:
    text = render_prometheus_config(layout_of(MeshSpec(), tmp_path), rules_file=None, keeper=KEEPER, entry=True)
    assert "&id" not in text and "*id" not in text


@pytest.mark.parametrize("address", ["http://127.0.0.1:1/metrics", "https://127.0.0.1/metrics", "127.0.0.1:80",
                                     "https://127.0.0.1:notaport/metrics"])
def test_a_keeper_address_that_is_not_https_with_a_port_is_refused(address: str) -> None:
    with pytest.raises(StateError, match="not an HTTPS URL with a port"):
        keeper_target(address)


def test_keeper_target_splits_host_port_and_path() -> None:
    assert keeper_target(KEEPER) == ("127.0.0.1:18938", "/metrics")


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
@pytest.mark.parametrize("text", ["", "name: five\nnodes: 5\nzones: [a, b, c, d, e]\n"])
def test_promtool_accepts_the_config_with_its_rules(text: str, tmp_path: Path) -> None:
    spec = parse_spec(text) if text else MeshSpec()
    layout = layout_of(spec, tmp_path)
    layout.paths.ca_cert.parent.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    layout.paths.ca_cert.write_bytes(pki.create_ca("test", now=now, days=1).cert_pem)
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(spec))
    config = tmp_path / "prometheus.yml"
    config.write_text(render_prometheus_config(layout, rules_file=rules, keeper=KEEPER, entry=True))
    done = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout
