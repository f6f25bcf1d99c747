"""The lab's pure parts: the address plan, each host's rendered sshd_config and supervisord.conf, the record's
round trip, the mesh file and known_hosts, and the one-line reason when something is missing."""

from __future__ import annotations

import configparser
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from vaultmesh.errors import VaultmeshError
from vaultmesh.lab.plan import (
    LabRecord,
    missing_requirement,
    plan_lab,
    render_known_hosts,
    render_mesh_file,
    render_sshd_config,
    render_supervisord_conf,
)

DIR = Path("/labs/one")


def lab(count: int = 4) -> LabRecord:
    return plan_lab(DIR, "a1b2c3", 77, count)


def test_hosts_are_numbered_from_eleven_with_zones_round_robin_and_the_root_namespace_at_one() -> None:
    record = lab(4)
    assert [(h.name, h.address, h.zone) for h in record.hosts] == [
        ("h1", "10.214.77.11", "zone-a"), ("h2", "10.214.77.12", "zone-b"), ("h3", "10.214.77.13", "zone-c"),
        ("h4", "10.214.77.14", "zone-a")]
    assert record.gateway == "10.214.77.1"


def test_names_are_the_labs_own_and_fit_the_kernels_fifteen_characters() -> None:
    record = plan_lab(DIR, "a1b2c3", 77, 7)
    assert record.bridge == "vmlba1b2c3"
    assert [h.netns for h in record.hosts][:2] == ["vmlaba1b2c3-1", "vmlaba1b2c3-2"]
    assert record.links == ["vmlba1b2c3", *(f"vmlha1b2c3{i}" for i in range(1, 8))]
    names = [*record.links, *(h.peer for h in record.hosts)]
    assert all(len(n) <= 15 for n in names)
    assert len(set(names)) == len(names)
    assert not any(n.startswith(("vmb", "vmh", "vmp")) for n in names)  # the netns runtime's names


def test_each_host_has_its_root_folder_under_the_lab_dir() -> None:
    host = lab().hosts[1]
    assert host.root == "/labs/one/hosts/h2"
    assert host.files.engine == Path("/labs/one/hosts/h2/usr/local/bin/bao")
    assert all(str(p).startswith(host.root + "/") for p in host.files.dirs)


@pytest.mark.parametrize("count", [0, 8])
def test_a_lab_has_one_to_seven_hosts(count: int) -> None:
    with pytest.raises(VaultmeshError, match="1 to 7 hosts"):
        plan_lab(DIR, "a1b2c3", 77, count)


def test_sshd_takes_keys_only_for_root_on_the_hosts_address_with_files_under_its_root() -> None:
    host = lab().hosts[0]
    lines = dict(line.split(" ", 1) for line in render_sshd_config(host).splitlines() if line and line[0] != "#")
    assert lines["ListenAddress"] == "10.214.77.11"
    assert lines["Port"] == "22"
    assert lines["HostKey"] == "/labs/one/hosts/h1/etc/ssh/ssh_host_ed25519_key"
    assert lines["AuthorizedKeysFile"] == "/labs/one/hosts/h1/etc/ssh/authorized_keys"
    assert lines["PidFile"] == "/labs/one/hosts/h1/run/sshd.pid"
    assert lines["AllowUsers"] == "root"
    assert lines["PermitRootLogin"] == "prohibit-password"
    for off in ("PasswordAuthentication", "KbdInteractiveAuthentication", "UsePAM", "AllowTcpForwarding"):
        assert lines[off] == "no", off
    assert lines["Subsystem"] == "sftp internal-sftp"


def test_supervisord_keeps_its_socket_private_short_and_everything_else_under_the_hosts_root() -> None:
    host = lab().hosts[2]
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(render_supervisord_conf(host))
    root = "/labs/one/hosts/h3"
    socket = conf["unix_http_server"]["file"]
    assert socket.startswith("/run/vaultmesh-lab/") and socket.endswith(".sock")
    assert len(socket) + 1 + 7 <= 107  # supervisord binds <socket>.<pid> first; a socket path has 107 bytes
    assert socket != lab().hosts[1].files.supervisor_socket.as_posix()  # one per host
    assert conf["unix_http_server"]["chmod"] == "0700"
    assert conf["supervisorctl"]["serverurl"] == f"unix://{socket}"
    assert conf["include"]["files"] == f"{root}/etc/supervisor/conf.d/*.conf"
    assert conf["supervisord"]["pidfile"] == f"{root}/run/supervisord.pid"
    assert conf["supervisord"]["logfile"] == f"{root}/var/log/supervisord.log"
    assert "rpcinterface:supervisor" in conf


def test_the_mesh_file_names_every_host_for_the_ssh_runtime() -> None:
    record = lab(2)
    doc = yaml.safe_load(render_mesh_file(record))
    assert {k: doc[k] for k in ("name", "nodes", "runtime")} == {"name": "lab", "nodes": 2, "runtime": "ssh"}
    assert doc["hosts"][1] == {
        "name": "h2", "address": "10.214.77.12", "zone": "zone-b", "root": "/labs/one/hosts/h2",
        "service": "supervisor", "engine": "/labs/one/hosts/h2/usr/local/bin/bao", "run_as": "root",
        "ssh": {"user": "root", "port": 22, "key_file": "/labs/one/id_ed25519",
                "known_hosts": "/labs/one/known_hosts"}}


def test_known_hosts_has_one_plain_address_line_per_host() -> None:
    text = render_known_hosts({"10.214.77.11": "ssh-ed25519 AAAA1\n", "10.214.77.12": "ssh-ed25519 AAAA2"})
    assert text == "10.214.77.11 ssh-ed25519 AAAA1\n10.214.77.12 ssh-ed25519 AAAA2\n"


def test_the_record_round_trips_with_pids_and_lists_its_links() -> None:
    record = lab(3)
    started = record.with_host(replace(record.hosts[1], sshd_pid=41, supervisord_pid=42))
    doc = started.to_json()
    assert doc["hosts"][1]["pids"] == {"sshd": 41, "supervisord": 42}
    assert doc["hosts"][0]["pids"] == {"sshd": None, "supervisord": None}
    assert doc["links"] == started.links
    assert LabRecord.from_json(doc) == started


def test_lab_up_prints_the_hosts_and_the_mesh_file() -> None:
    assert lab(1).summary() == {"hosts": [{"name": "h1", "address": "10.214.77.11", "zone": "zone-a"}],
                                "mesh_file": "/labs/one/mesh.yaml"}


def test_an_unknown_host_is_named_with_the_ones_there_are() -> None:
    with pytest.raises(VaultmeshError, match=r"no host 'h9'.*h1, h2"):
        lab(2).host("h9")


ALL = {"ip": "/usr/sbin/ip", "sshd": "/usr/sbin/sshd", "supervisord": "/usr/bin/supervisord",
       "supervisorctl": "/usr/bin/supervisorctl"}


def test_nothing_is_missing_when_root_has_every_command() -> None:
    assert missing_requirement(is_root=True, found=ALL) is None


def test_not_root_is_said_first() -> None:
    assert "needs root" in (missing_requirement(is_root=False, found={}) or "")


@pytest.mark.parametrize(("command", "package"), [("ip", "iproute2"), ("sshd", "openssh-server"),
                                                  ("supervisord", "supervisor"), ("supervisorctl", "supervisor")])
def test_a_missing_command_is_named_with_its_debian_package(command: str, package: str) -> None:
    why = missing_requirement(is_root=True, found={**ALL, command: None}) or ""
    assert f"needs {command}" in why
    assert why.endswith(f"apt-get install {package}")
    assert "\n" not in why



def test_the_mesh_file_is_a_valid_mesh_file() -> None:
    from vaultmesh.spec.load import parse_spec

    record = lab(3)
    spec = parse_spec(render_mesh_file(record))
    assert spec.runtime == "ssh"
    assert [(h.name, h.address, h.zone, h.root) for h in spec.hosts] == [
        (h.name, h.address, h.zone, h.root) for h in record.hosts]
