"""`vaultmesh export ansible`: the inventory, the playbook (serial, health-gated) and each host's bundle; the
playbook passes ``ansible-playbook --syntax-check`` where Ansible is installed."""

from __future__ import annotations

import datetime as dt
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from vaultmesh import pki
from vaultmesh.cli.main import cli
from vaultmesh.errors import VaultmeshError
from vaultmesh.export.ansible import HEALTHY, ansible_files, host_bundles, inventory, playbook
from vaultmesh.render.node import ADMIN_PASSWORD_ENV
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.models import MeshSpec

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
CA = pki.create_ca("test CA", now=NOW, days=30)
KEY = bytes(range(32))


def spec(text: str = "name: prod\n") -> MeshSpec:
    return parse_spec(text)


def bundles(text: str = "name: prod\n") -> list[Any]:
    return host_bundles(spec(text), ca=CA, now=NOW, static_key=KEY, admin_password="pw-1")


def tasks() -> list[dict[str, Any]]:
    return playbook(spec())[1]["tasks"]


def task(word: str) -> dict[str, Any]:
    """The first task whose name starts with ``word``, else the first that holds it."""
    return next((t for t in tasks() if t["name"].startswith(word)), None) or next(
        t for t in tasks() if word in t["name"])


def test_one_host_at_a_time_in_node_order_and_a_failure_stops_the_rollout() -> None:
    play = playbook(spec())[1]
    assert play["serial"] == 1 and play["any_errors_fatal"] is True
    assert list(inventory(spec(), bundles())["all"]["children"]["vaultmesh_prod"]["hosts"]) == [
        "node-1", "node-2", "node-3"]


def test_the_active_node_is_rolled_last() -> None:
    first, rollout = playbook(spec())
    assert first["hosts"] == "vaultmesh_prod" and first["gather_facts"] is False
    ask, remember, order = first["tasks"]
    assert ask["ansible.builtin.uri"]["status_code"] == [200] and ask["failed_when"] is False
    assert ask["ansible.builtin.uri"]["validate_certs"] is True
    assert remember["ansible.builtin.set_fact"] == {"vaultmesh_leads": "{{ leading.status | default(-1) == 200 }}"}
    # add_host keeps the loop's order (group_by would take the order hosts answer in: measured, h3 went first)
    assert order["ansible.builtin.add_host"]["groups"] == "vaultmesh_prod_rollout"
    assert order["loop"] == "{{ (ansible_play_hosts_all | reject('in', leaders) | list) + leaders }}"
    assert order["run_once"] is True and order["changed_when"] is False
    assert rollout["hosts"] == "vaultmesh_prod_rollout"


def test_every_host_waits_for_sys_health_over_verified_tls_before_the_next() -> None:
    names = [t["name"] for t in tasks()]
    wait = task("sys/health")
    assert names.index(wait["name"]) > names.index(task("start it, or restart").get("name"))
    uri = wait["ansible.builtin.uri"]
    assert uri["url"] == "https://{{ vaultmesh_address }}:{{ vaultmesh_api_port }}/v1/sys/health"
    assert uri["validate_certs"] is True and uri["ca_path"] == "{{ vaultmesh_ca }}"
    assert wait["until"] == "health.status in vaultmesh_healthy" and wait["retries"] * wait["delay"] >= 60
    assert HEALTHY == [200, 429, 473]


def test_a_node_restarts_only_when_its_bundle_or_service_changed() -> None:
    state = task("start it, or restart")["ansible.builtin.systemd"]["state"]
    assert state == "{{ 'restarted' if (bundle is changed or service_file is changed) else 'started' }}"
    assert "bundle is changed" in task("restart it when its bundle changed")["when"]


def test_secrets_are_never_logged() -> None:
    assert task("the bundle")["no_log"] is True and task("first start")["no_log"] is True


def test_the_bundle_is_the_ca_seal_key_config_certificate_and_key_at_the_hosts_paths() -> None:
    b = bundles()[1]
    files = {f.path: f for f in b.files}
    node = "/var/lib/vaultmesh/prod/nodes/node-2"
    assert set(files) == {"/var/lib/vaultmesh/prod/pki/ca.pem", "/var/lib/vaultmesh/prod/seal/static.key",
                          f"{node}/config.hcl", f"{node}/tls/cert.pem", f"{node}/tls/key.pem"}
    # the SSH runtime's choices (hosts.service): key, config and seal key 0600, the node's own (owner_commands)
    for path in (f"{node}/tls/key.pem", f"{node}/config.hcl", "/var/lib/vaultmesh/prod/seal/static.key"):
        assert (files[path].mode, files[path].owner, files[path].group) == (0o600, "openbao", "openbao"), path
    assert (files["/var/lib/vaultmesh/prod/pki/ca.pem"].owner, files["/var/lib/vaultmesh/prod/pki/ca.pem"].mode) == (
        "root", 0o644)
    assert files["/var/lib/vaultmesh/prod/seal/static.key"].data == KEY
    assert b.service.data_dir == f"{node}/data" and b.service.audit_dir == f"{node}/audit"
    env = bundles()[0].first_start_env
    assert env is not None and (env.path, env.mode) == ("/var/lib/vaultmesh/prod/nodes/node-1/env", 0o600)


def test_a_hosts_bundle_is_the_one_the_ssh_runtime_pushes() -> None:
    """One bundle definition: the export's files, service and config are what ``vaultmesh up`` stages for the
    same host (hosts.service and render_hosted_config on the mesh laid out on its hosts)."""
    from vaultmesh.hosts import service
    from vaultmesh.layout import build_layout
    from vaultmesh.lifecycle.mesh import remotes_of
    from vaultmesh.render.node import render_hosted_config
    from vaultmesh.spec.models import zone_layout

    s = spec(HOSTS)
    layout = build_layout("lab", Path("/state"), zone_layout(s), [8200, 8201] * 3 + [8202], transit_seal=False,
                          remotes=remotes_of(s, {"ssh": {"dir": "lab"}}))
    for i, (b, node) in enumerate(zip(bundles(HOSTS), layout.nodes, strict=True)):
        config = render_hosted_config(s, layout, node, self_init=i == 0)
        assert "/state" not in config
        files = {f.path: f.mode for f in service.node_bundle(node, ca=b"", config=b"", cert=b"", key=b"",
                                                            static_key=b"")}
        assert {f.path: f.mode for f in b.files} == files
        assert next(f.data for f in b.files if f.path.endswith("config.hcl")).decode() == config
        assert b.service == service.node_service(node)
    out = {f.path: f.data for f in ansible_files(s, bundles(HOSTS))}
    node = layout.nodes[1]
    assert out[f"files/h2{service.program_file(node, 'supervisor')}"] == service.render_service(
        node, "supervisor").encode()
    assert out[f"files/h2{service.program_file(node, 'systemd')}"] == service.render_service(node, "systemd").encode()


def test_only_node_1_initialises_and_only_it_gets_the_admin_password() -> None:
    first, second, _ = bundles()
    assert b'initialize "vaultmesh"' in next(f.data for f in first.files if f.path.endswith("config.hcl"))
    assert b"initialize" not in next(f.data for f in second.files if f.path.endswith("config.hcl"))
    assert first.first_start_env is not None and first.first_start_env.data == f"{ADMIN_PASSWORD_ENV}=pw-1\n".encode()
    assert second.first_start_env is None
    copy = task("first start")
    assert "not raft_db.stat.exists" in copy["when"]  # a second run does not bring the password back
    assert task("admin password leaves")["ansible.builtin.file"]["state"] == "absent"


def test_the_node_certificate_names_its_address_and_verifies_with_the_ca() -> None:
    b = bundles()[0]
    cert = next(f.data for f in b.files if f.path.endswith("tls/cert.pem"))
    names = pki.CertPair(cert, b"").cert.extensions.get_extension_for_class(
        pki.x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(pki.x509.IPAddress)]
    assert "localhost" in names.get_values_for_type(pki.x509.DNSName)


def test_certificates_given_are_kept() -> None:
    kept = pki.issue_server_cert(CA, "node-1", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=NOW,
                                 days=1)
    b = host_bundles(spec(), ca=CA, now=NOW, static_key=KEY, admin_password="pw", certs={"node-1": kept})[0]
    assert next(f.data for f in b.files if f.path.endswith("tls/cert.pem")) == kept.cert_pem


def test_loopback_nodes_get_ports_of_their_own() -> None:
    ports = [b.api_port for b in bundles("name: prod\nports: {base: 18300}\n")]
    assert ports == [18300, 18302, 18304]


@pytest.mark.parametrize("seal, words", [("shamir", "needs a human"), ("transit", "loopback")])
def test_a_seal_a_rollout_cannot_wait_for_is_refused(seal: str, words: str) -> None:
    with pytest.raises(VaultmeshError, match=f"seal: {seal} has no Ansible export.*{words}"):
        bundles(f"seal: {{type: {seal}}}\n")


def test_secret_files_of_the_export_are_0600() -> None:
    out = {f.path: f.mode for f in ansible_files(spec(), bundles())}
    assert out["files/node-1/var/lib/vaultmesh/prod/nodes/node-1/tls/key.pem"] == 0o600
    assert out["files/node-1/var/lib/vaultmesh/prod/seal/static.key"] == 0o600
    assert out["files/node-1/var/lib/vaultmesh/prod/nodes/node-1/env"] == 0o600
    assert out["files/node-1/var/lib/vaultmesh/prod/pki/ca.pem"] == 0o644
    assert out["files/node-1/etc/systemd/system/vaultmesh-prod-node-1.service"] == 0o644
    assert out["inventory.yaml"] == 0o644 and out["site.yaml"] == 0o644


def test_every_file_the_inventory_copies_is_in_the_export() -> None:
    out = {f.path for f in ansible_files(spec(), bundles())}
    hosts = inventory(spec(), bundles())["all"]["children"]["vaultmesh_prod"]["hosts"]
    for vars_ in hosts.values():
        sources = [i["src"] for i in vars_["vaultmesh_files"]]
        sources += [vars_["vaultmesh_unit"]["src"], vars_["vaultmesh_program"]["src"]]
        sources += [vars_["vaultmesh_first_start_env"]["src"]] if "vaultmesh_first_start_env" in vars_ else []
        assert set(sources) <= out


# --- the command, and Ansible's own check ----------------------------------------------------------------------


def export(tmp_path: Path, text: str = "name: prod\n") -> tuple[Path, Any]:
    meshfile = tmp_path / "mesh.yaml"
    meshfile.write_text(text)
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", "ansible", "-f", str(meshfile), "--out", str(out),
                                      "--dir", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    return out, result


def test_export_ansible_writes_the_dir_with_secrets_0600(tmp_path: Path) -> None:
    out, result = export(tmp_path)
    assert "ansible-playbook -i" in result.stderr
    assert stat.S_IMODE((out / "secrets" / "ca-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "secrets" / "admin-password").stat().st_mode) == 0o600
    key = out / "files/node-2/var/lib/vaultmesh/prod/nodes/node-2/tls/key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert yaml.safe_load((out / "site.yaml").read_text())[1]["serial"] == 1


def test_a_second_export_into_the_same_dir_changes_no_file(tmp_path: Path) -> None:
    out, _ = export(tmp_path)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    export(tmp_path)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


ANSIBLE = shutil.which("ansible-playbook")


@pytest.mark.skipif(ANSIBLE is None, reason="ansible-playbook is not installed (Debian package ansible)")
def test_the_playbook_passes_ansible_syntax_check(tmp_path: Path) -> None:
    out, _ = export(tmp_path)
    assert ANSIBLE is not None
    done = subprocess.run([ANSIBLE, "--syntax-check", "-i", "inventory.yaml", "site.yaml"], cwd=out,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(ANSIBLE is None, reason="ansible-playbook is not installed (Debian package ansible)")
def test_the_syntax_check_can_fail(tmp_path: Path) -> None:
    out, _ = export(tmp_path)
    site = out / "site.yaml"
    site.write_text(site.read_text().replace("ansible.builtin.uri:", "ansible.builtin.uri_no_such_module:"))
    assert ANSIBLE is not None
    done = subprocess.run([ANSIBLE, "--syntax-check", "-i", "inventory.yaml", "site.yaml"], cwd=out,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0


HOSTS = """\
name: lab
runtime: ssh
hosts:
  - {name: h1, address: 10.214.1.11, zone: zone-a, ssh: {user: root, key_file: /k/id, known_hosts: /k/kh}}
  - {name: h2, address: 10.214.1.12, zone: zone-b, service: supervisor, ssh: {user: ops, port: 2222}}
  - {name: h3, address: 10.214.1.13, zone: zone-c, root: /srv/lab/h3, run_as: bao}
"""


def test_hosts_of_the_mesh_file_become_the_inventory_reached_over_ssh_with_checked_host_keys() -> None:
    hosts = inventory(spec(HOSTS), bundles(HOSTS))["all"]["children"]["vaultmesh_lab"]["hosts"]
    assert list(hosts) == ["h1", "h2", "h3"]
    h1, h2, h3 = hosts.values()
    assert h1["ansible_host"] == "10.214.1.11" and h1["ansible_user"] == "root"
    assert h1["ansible_ssh_private_key_file"] == "/k/id"
    assert h1["ansible_ssh_common_args"] == "-o UserKnownHostsFile=/k/kh -o StrictHostKeyChecking=yes"
    assert "ansible_become" not in h1 and h2["ansible_become"] is True and h2["ansible_port"] == 2222
    assert h2["vaultmesh_manager"] == "supervisor" and h1["vaultmesh_manager"] == "auto"
    assert [h["vaultmesh_zone"] for h in hosts.values()] == ["zone-a", "zone-b", "zone-c"]
    assert h3["vaultmesh_user"] == "bao" and h3["vaultmesh_ca"] == "/srv/lab/h3/var/lib/vaultmesh/lab/pki/ca.pem"
    assert h3["vaultmesh_program"]["dest"] == "/srv/lab/h3/etc/supervisor/conf.d/vaultmesh-lab-node-3.conf"


def test_on_hosts_every_node_listens_on_its_address_and_joins_the_others_there() -> None:
    b = bundles(HOSTS)[1]
    config = next(f.data for f in b.files if f.path.endswith("config.hcl")).decode()
    assert 'address = "10.214.1.12:8200"' in config and 'api_addr = "https://10.214.1.12:8200"' in config
    assert 'leader_api_addr = "https://10.214.1.11:8200"' in config
    assert 'leader_api_addr = "https://10.214.1.13:8200"' in config
    assert b.api_port == 8200
