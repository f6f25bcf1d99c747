"""Whether the keeper runs Prometheus, and its web config."""

from __future__ import annotations

import yaml

from vaultmesh.keeper.monitoring import wanted, web_config
from vaultmesh.spec.load import parse_spec


def test_auto_runs_it_where_it_is_installed_and_says_why_not_elsewhere() -> None:
    assert wanted("auto", "/usr/bin/prometheus") == (True, None)
    run, why = wanted("auto", None)
    assert not run and why and "not installed" in why and "monitoring: auto runs it once it is" in why
    run, why = wanted("prometheus", None)
    assert not run and why and "Debian package prometheus" in why
    assert wanted("none", "/usr/bin/prometheus") == (False, "monitoring: none in the mesh file")


def test_the_web_config_serves_https_with_the_given_pair() -> None:
    doc = yaml.safe_load(web_config("/s/monitoring/tls/cert.pem", "/s/monitoring/tls/key.pem"))
    assert doc == {"tls_server_config": {"cert_file": "/s/monitoring/tls/cert.pem",
                                         "key_file": "/s/monitoring/tls/key.pem"}}


def test_the_mesh_file_takes_a_mode_word_or_a_mapping() -> None:
    assert parse_spec("monitoring: none\n", source="t").monitoring.mode == "none"
    spec = parse_spec("monitoring:\n  mode: prometheus\n  retention: 2d\n", source="t")
    assert spec.monitoring.mode == "prometheus" and spec.monitoring.retention == 2 * 86400
    assert parse_spec("nodes: 3\n", source="t").monitoring.mode == "auto"
