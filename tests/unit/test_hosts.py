"""``runtime: ssh``, the pure parts: the mesh file's hosts, the layout as a host sees it, a node's bundle and its
service manager's commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from vaultmesh.hosts import service
from vaultmesh.layout import REMOTE_BASE, Remote, build_layout, host_view
from vaultmesh.render.node import render_node_config
from vaultmesh.spec.models import MeshSpec, zone_layout


def _hosts(n: int) -> list[dict[str, object]]:
    return [{"name": f"h{i + 1}", "address": f"10.9.0.{11 + i}", "zone": f"z{i % 3}",
             "ssh": {"key_file": "/k", "known_hosts": "/kh"}} for i in range(n)]


def _spec(**extra: object) -> MeshSpec:
    return MeshSpec.model_validate({"runtime": "ssh", "hosts": _hosts(3), **extra})


def test_a_mesh_on_hosts_takes_each_hosts_zone() -> None:
    spec = _spec()
    assert zone_layout(spec) == [("node-1", "z0"), ("node-2", "z1"), ("node-3", "z2")]


@pytest.mark.parametrize(("doc", "words"), [
    ({"runtime": "ssh", "hosts": _hosts(4)}, "nodes is 3 but hosts names 4"),
    ({"runtime": "ssh"}, "nodes is 3 but hosts names 0"),
    ({"hosts": _hosts(3)}, "only read with runtime: ssh"),
    ({"runtime": "ssh", "hosts": _hosts(3), "seal": {"type": "transit"}}, "transit seal node"),
    ({"runtime": "ssh", "hosts": [*_hosts(2), {**_hosts(1)[0], "name": "h9"}]}, "address 10.9.0.11 appears twice"),
    ({"runtime": "ssh", "hosts": [*_hosts(2), {**_hosts(3)[2], "address": "db.example"}]}, "not an IP address"),
    ({"runtime": "ssh", "hosts": [*_hosts(2), {**_hosts(3)[2], "run_as": "Bad User"}]}, "run_as"),
])
def test_a_wrong_hosts_list_is_refused_with_what_to_change(doc: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        MeshSpec.model_validate(doc)
    assert words in str(err.value)


def _remote(i: int, root: str = "/srv/h") -> Remote:
    return Remote(f"h{i}", f"10.9.0.{10 + i}", Path(f"{root}{i}"), "supervisor", "/usr/bin/bao", "openbao", "root",
                  22, Path("/k"), Path("/kh"), Path(f"{root}{i}") / REMOTE_BASE / "m")


def _layout(state: Path):
    remotes = tuple(_remote(i) for i in (1, 2, 3))
    zones = [("node-1", "a"), ("node-2", "b"), ("node-3", "c")]
    return build_layout("m", state, zones, [8200, 8201] * 3 + [9000], transit_seal=False, remotes=remotes)


def test_nodes_on_hosts_listen_on_their_hosts_address_and_keep_their_files_staged_here(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    node = layout.nodes[1]
    assert node.api_addr == "https://10.9.0.12:8200"
    assert node.dir == tmp_path / "nodes/node-2"
    assert node.remote is not None and node.remote.host == "h2"


def test_a_node_config_names_the_paths_on_its_host_not_the_state_dir(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    seen, node = host_view(layout, layout.nodes[0])
    assert seen.paths.root == Path("/srv/h1") / REMOTE_BASE / "m"
    text = render_node_config(_spec(), seen, node, self_init=True)
    assert str(tmp_path) not in text
    assert '"/srv/h1/var/lib/vaultmesh/m/nodes/node-1/data"' in text
    assert '"/srv/h1/var/lib/vaultmesh/m/pki/ca.pem"' in text  # retry_join's CA, on the host
    assert "https://10.9.0.12:8200" in text and "https://10.9.0.13:8200" in text  # peers by address
    assert "file:///srv/h1/var/lib/vaultmesh/m/seal/static.key" in text


def test_a_local_node_is_its_own_host_view(tmp_path: Path) -> None:
    layout = build_layout("m", tmp_path, [("node-1", "a")], [1, 2, 3], transit_seal=False)
    assert host_view(layout, layout.nodes[0]) == (layout, layout.nodes[0])


def test_a_bundle_keeps_keys_and_config_private(tmp_path: Path) -> None:
    node = _layout(tmp_path).nodes[0]
    files = service.node_bundle(node, ca=b"ca", config=b"cfg", cert=b"c", key=b"k", static_key=b"s")
    modes = {f.path.removeprefix("/srv/h1/var/lib/vaultmesh/m/"): f.mode for f in files}
    assert modes == {"pki/ca.pem": 0o644, "nodes/node-1/config.hcl": 0o600, "nodes/node-1/tls/cert.pem": 0o644,
                     "nodes/node-1/tls/key.pem": 0o600, "seal/static.key": 0o600}
    assert not any("static.key" in f.path for f in
                   service.node_bundle(node, ca=b"", config=b"", cert=b"", key=b"", static_key=None))


def test_the_service_manager_commands_name_the_node_and_the_hosts_supervisor(tmp_path: Path) -> None:
    node = _layout(tmp_path).nodes[2]
    assert service.service_name(node) == "vaultmesh-m-node-3"
    assert service.ctl(node, "supervisor", "start") == [
        "supervisorctl", "-c", "/srv/h3/etc/supervisor/supervisord.conf", "start", "vaultmesh-m-node-3"]
    assert service.ctl(node, "systemd", "hup") == ["systemctl", "reload", "vaultmesh-m-node-3"]
    assert service.program_file(node, "systemd") == "/srv/h3/etc/systemd/system/vaultmesh-m-node-3.service"
    assert service.program_file(node, "supervisor") == "/srv/h3/etc/supervisor/conf.d/vaultmesh-m-node-3.conf"
    assert "vaultmesh-m-node-3" in service.render_service(node, "supervisor")
    assert "ProtectSystem=strict" in service.render_service(node, "systemd")


def test_the_pid_probe_matches_only_the_nodes_own_server_command(tmp_path: Path) -> None:
    node = _layout(tmp_path).nodes[0]
    pattern = service.pid_probe(node)[-1]
    config = "/srv/h1/var/lib/vaultmesh/m/nodes/node-1/config.hcl"
    assert re.search(pattern, f"/usr/bin/bao server -config={config}")
    assert not re.search(pattern, f"/usr/bin/bao server -config={config.replace('.hcl', 'xhcl')}")
    assert not re.search(pattern, f"/usr/bin/bao server -config={config}.old")
    assert service.parse_pid("1234\n") == 1234
    assert service.parse_pid("") is None and service.parse_pid("0") is None


def test_auto_takes_systemd_only_where_it_runs_the_host() -> None:
    auto = _remote(1)
    auto = Remote(**{**auto.__dict__, "service": "auto"})
    assert service.manager(auto, True) == "systemd"
    assert service.manager(auto, False) == "supervisor"
    assert service.manager(_remote(1), True) == "supervisor"  # asked for by name


def test_a_service_user_other_than_root_is_made_and_given_the_nodes_folder(tmp_path: Path) -> None:
    node = _layout(tmp_path).nodes[0]
    commands = service.owner_commands(node)
    assert ["chown", "-R", "openbao:openbao", "/srv/h1/var/lib/vaultmesh/m/nodes/node-1"] in commands
    assert any("useradd --system" in " ".join(c) for c in commands)
    root = Remote(**{**_remote(1).__dict__, "run_as": "root"})
    from dataclasses import replace

    assert service.owner_commands(replace(node, remote=root)) == []


def test_the_entry_runs_on_named_hosts_only_of_a_mesh_on_hosts() -> None:
    assert _spec(entry={"hosts": ["h1"]}).entry.hosts == ["h1"]
    with pytest.raises(ValidationError, match=r"entry\.hosts names h9"):
        _spec(entry={"hosts": ["h9"]})
    with pytest.raises(ValidationError, match="only read with runtime: ssh"):
        MeshSpec.model_validate({"entry": {"hosts": ["h1"]}})


def test_an_entry_on_a_host_binds_its_address_and_checks_with_its_copy_of_the_ca(tmp_path: Path) -> None:
    from vaultmesh.render.entry import render_entry_config

    remotes = tuple(_remote(i) for i in (1, 2, 3))
    layout = build_layout("m", tmp_path, [("node-1", "a"), ("node-2", "b"), ("node-3", "c")],
                          [8200, 8201] * 3 + [9000], transit_seal=False, remotes=remotes, entry_hosts=("h2",))
    assert layout.entry_addr == "https://10.9.0.12:9000"
    text = render_entry_config(layout, bind="10.9.0.12", ca_file="/srv/h2/var/lib/vaultmesh/m/pki/ca.pem")
    assert "bind 10.9.0.12:9000" in text and "ca-file /srv/h2/var/lib/vaultmesh/m/pki/ca.pem" in text
    assert "server node-1 10.9.0.11:8200" in text
    program = service.render_entry_program(layout.entry_hosts[0], "/usr/sbin/haproxy")
    assert "command=/usr/sbin/haproxy -db -f /srv/h2/var/lib/vaultmesh/m/entry/haproxy.cfg" in program
    assert "user=openbao" in program
    local = build_layout("m", tmp_path, [("node-1", "a")], [1, 2, 3], transit_seal=False)
    assert local.entry_addr == "https://127.0.0.1:3"


def test_nodes_may_share_hosts_round_robin_on_ports_of_their_own_with_a_warning() -> None:
    from vaultmesh.lifecycle.mesh import pick_ports, remotes_of
    from vaultmesh.spec.models import zone_warnings

    spec = MeshSpec.model_validate({"runtime": "ssh", "nodes": 5, "hosts": _hosts(2)})
    assert [r.host for r in remotes_of(spec, {"ssh": {"dir": "m"}})] == ["h1", "h2", "h1", "h2", "h1"]
    ports = pick_ports(spec)
    assert ports[:10] == [8200, 8201, 8200, 8201, 8202, 8203, 8202, 8203, 8204, 8205]
    assert any("hosts h1, h2 each run more than one node" in w for w in zone_warnings(spec))
    assert not any("more than one node" in w for w in zone_warnings(_spec()))


def test_doctor_reads_a_hosts_limits_and_disk_from_one_command() -> None:
    text = ("Max core file size        0                    unlimited            bytes\n"
            "fs 250 1000 ext2/ext3\ndev 2049\n")
    assert service.parse_disk_and_limits(text) == (0, 0.25, "ext2/ext3", 2049)
    assert service.parse_disk_and_limits("Max core file size  unlimited  unlimited  bytes\n")[0] == -1
    assert service.parse_disk_and_limits("") == (None, None, None, None)
