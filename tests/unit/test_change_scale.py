"""Scaling's state-dir side (no process is started): the ports list laid out for another node count, the mesh
opened from it, the mesh file's ``nodes`` line, and ``up -f`` with another ``nodes`` going to the scale path."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultmesh.change.scale import check_target
from vaultmesh.errors import StateError, UnsafePlan
from vaultmesh.fsutil import read_json
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle import up as up_module
from vaultmesh.spec.load import parse_spec

SPEC = "# ours\nnodes: 3  # three zones\nports:\n  base: 41300\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    m.create_mesh(tmp_path / "mesh", parse_spec(SPEC), SPEC, engine=None, spec_dir=tmp_path)
    return tmp_path / "mesh"


def test_the_ports_of_the_first_nodes_the_entry_and_the_seal_node_stay() -> None:
    ports = [1, 2, 3, 4, 5, 6, 7, 8, 9]  # 3 nodes, entry 7, seal node 8 9
    assert m.resized_ports(ports, 3, 5, [10, 11, 12, 13]) == [1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 7, 8, 9]
    assert m.resized_ports([1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 7], 5, 3, []) == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError):
        m.resized_ports(ports, 3, 5, [10])


def test_the_node_count_is_read_off_the_ports() -> None:
    assert m.node_count(list(range(7)), transit_seal=False) == 3
    assert m.node_count(list(range(13)), transit_seal=True) == 5


def test_the_nodes_line_is_replaced_and_every_other_line_kept() -> None:
    assert m.renodes_text(SPEC, 5) == "# ours\nnodes: 5\nports:\n  base: 41300\n"
    assert m.renodes_text("name: a\n", 5) == "name: a\nnodes: 5\n"


def test_a_resize_lays_out_new_nodes_with_ports_certificates_and_configs(root: Path) -> None:
    mesh = m.resize(m.open_mesh(root), 5)
    assert [n.name for n in mesh.layout.nodes] == [f"node-{i}" for i in range(1, 6)]
    assert [n.zone for n in mesh.layout.nodes] == ["zone-a", "zone-b", "zone-c", "zone-a", "zone-b"]
    assert mesh.spec.nodes == 5 and m.open_mesh(root).spec.nodes == 5
    assert mesh.layout.nodes[0].api_port == 41300 and mesh.layout.entry_port == 41306
    assert len(set(mesh.layout.all_ports())) == 11
    for node in mesh.layout.nodes:
        assert node.cert_file.exists() and node.key_file.exists()
        config = node.config_file.read_text()
        assert config.count("retry_join") == 4
    haproxy = (mesh.paths.entry_dir / "haproxy.cfg").read_text()
    assert haproxy.count("    server node-") == 5
    assert "nodes: 3" in mesh.paths.spec_file.read_text()  # the mesh file says so once the change is done

    back = m.resize(mesh, 3)
    assert read_json(root / "state.json")["ports"] == [41300 + i for i in range(7)]
    assert back.spec.nodes == 3 and (back.paths.entry_dir / "haproxy.cfg").read_text().count("server node-") == 3
    assert m.record_nodes(back, 5).paths.spec_file.read_text() == "# ours\nnodes: 5\nports:\n  base: 41300\n"


def test_up_f_with_another_nodes_is_refused_with_the_scale_command_when_no_scale_is_registered(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(up_module, "RESCALE", [])
    text = "nodes: 5\nports:\n  base: 41300\n"
    with pytest.raises(StateError, match="3 nodes, the file 5") as err:
        up_module.up(root, parse_spec(text), text)
    assert "vaultmesh scale --nodes 5" in (err.value.hint or "")


def test_more_than_seven_nodes_or_a_shamir_mesh_without_its_key_shares_is_refused(root: Path,
                                                                                  tmp_path: Path) -> None:
    with pytest.raises(UnsafePlan, match="more than 7"):
        check_target(m.open_mesh(root), 9)
    text = "nodes: 3\nseal:\n  type: shamir\nports:\n  base: 41320\n"
    m.create_mesh(tmp_path / "shamir", parse_spec(text), text, engine=None, spec_dir=tmp_path)
    shamir = m.open_mesh(tmp_path / "shamir")
    with pytest.raises(StateError, match=r"Shamir-sealed .* key shares") as err:
        check_target(shamir, 5)
    assert str(shamir.paths.shamir_keys) in str(err.value)
    check_target(shamir, 1)  # a node that goes needs no key share
    shamir.paths.shamir_keys.parent.mkdir(parents=True, exist_ok=True)
    shamir.paths.shamir_keys.write_text("{}")
    check_target(shamir, 5)
