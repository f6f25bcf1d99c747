"""`vaultmesh monitoring rules|config|dashboard`: through click, from the built-in defaults, a mesh file, or the
mesh in --dir; printed or written atomically (0644)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
import yaml
from click.testing import CliRunner

from vaultmesh.cli.main import cli
from vaultmesh.layout import StatePaths
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.keeper_process import KeeperStatus, write_status
from vaultmesh.spec.load import parse_spec


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_rules_print_the_defaults_without_a_mesh(tmp_path: Path) -> None:
    result = invoke("monitoring", "rules", "--dir", str(tmp_path / "none"))
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    assert doc["groups"][0]["name"] == "vaultmesh-vaultmesh-health"


def test_rules_from_a_mesh_file_to_a_file(tmp_path: Path) -> None:
    meshfile = tmp_path / "mesh.yaml"
    meshfile.write_text("name: blue\nnodes: 5\nzones: [a, b, c, d, e]\n")
    out = tmp_path / "out" / "rules.yml"
    result = invoke("monitoring", "rules", "-f", str(meshfile), "-o", str(out), "--dir", str(tmp_path / "none"))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "rules of mesh blue" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    text = out.read_text()
    assert 'mesh="blue"' in text and "VaultmeshFailureToleranceReduced" in text


def test_dashboard_is_json(tmp_path: Path) -> None:
    result = invoke("monitoring", "dashboard", "--dir", str(tmp_path / "none"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["uid"] == "vaultmesh-vaultmesh"


def test_a_missing_mesh_file_is_one_line(tmp_path: Path) -> None:
    result = invoke("monitoring", "dashboard", "-f", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def made_mesh(root: Path, text: str = "name: green\n") -> m.Mesh:
    return m.create_mesh(root, parse_spec(text), text, engine=None, spec_dir=None)


def test_rules_and_config_read_the_mesh_in_dir(tmp_path: Path) -> None:
    root = tmp_path / "state"
    mesh = made_mesh(root)
    write_status(StatePaths(root), KeeperStatus(pid=1, started=1.0, metrics="https://127.0.0.1:19999/metrics"))
    rules = invoke("monitoring", "rules", "--dir", str(root))
    assert 'mesh="green"' in rules.stdout
    out = tmp_path / "prom" / "prometheus.yml"
    result = invoke("monitoring", "config", "--dir", str(root), "-o", str(out))
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text())
    assert doc["rule_files"] == [str(out.parent / "rules.yml")]
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert [c["targets"][0] for c in jobs["vaultmesh-node"]["static_configs"]] == [
        f"127.0.0.1:{n.api_port}" for n in mesh.layout.nodes]
    assert jobs["vaultmesh-keeper"]["static_configs"][0]["targets"] == ["127.0.0.1:19999"]
    assert jobs["vaultmesh-node"]["tls_config"]["ca_file"] == str(mesh.paths.ca_cert)


def test_config_without_a_keeper_record_warns_and_leaves_the_keeper_out(tmp_path: Path) -> None:
    root = tmp_path / "state"
    made_mesh(root)
    result = invoke("monitoring", "config", "--dir", str(root), "--rules", "/etc/prometheus/vm.yml")
    assert result.exit_code == 0, result.output
    assert "no keeper job" in result.stderr
    doc = yaml.safe_load(result.stdout)
    assert doc["rule_files"] == ["/etc/prometheus/vm.yml"]
    assert "vaultmesh-keeper" not in {j["job_name"] for j in doc["scrape_configs"]}


def test_config_needs_a_mesh(tmp_path: Path) -> None:
    result = invoke("monitoring", "config", "--dir", str(tmp_path / "none"))
    assert result.exit_code == 1
    assert "no mesh in" in result.stderr
