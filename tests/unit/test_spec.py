"""The mesh file, lifecycle part: defaults, node counts, zones, seals, and errors that point at file:line.

Only lifecycle fields are exercised here; the mesh-as-code part (``spec.resources``) has its own tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaultmesh.errors import SpecError
from vaultmesh.spec.load import load_spec, parse_spec
from vaultmesh.spec.models import LifecycleSpec, MeshSpec, zone_layout, zone_warnings

SOURCE = "mesh.yaml"


def refused(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text, source=SOURCE)
    return info.value


# -- defaults ------------------------------------------------------------------------------------------------

def test_an_empty_file_is_a_three_node_mesh_in_three_zones():
    spec = parse_spec("", source=SOURCE)
    assert spec.nodes == 3
    assert spec.zones == ["zone-a", "zone-b", "zone-c"]


def test_the_default_seal_is_static_with_no_options():
    spec = parse_spec("", source=SOURCE)
    assert spec.seal.type == "static"
    assert spec.seal.options == {}


def test_the_default_raft_performance_multiplier_is_1():
    assert parse_spec("", source=SOURCE).raft.performance_multiplier == 1


def test_no_file_at_all_gives_the_same_defaults_as_an_empty_file():
    spec, text = load_spec(None)
    assert text == ""
    assert (spec.nodes, spec.zones, spec.seal.type) == (3, ["zone-a", "zone-b", "zone-c"], "static")


def test_a_missing_file_is_a_spec_error_naming_it(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=r"nope\.yaml"):
        load_spec(missing)


def test_errors_from_a_file_name_that_file(tmp_path: Path):
    path = tmp_path / "mesh.yaml"
    path.write_text("nodes: 4\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.file == str(path)
    assert str(info.value).startswith(f"{path}:1")


# -- node count ----------------------------------------------------------------------------------------------

def test_five_nodes_are_accepted():
    assert parse_spec("nodes: 5", source=SOURCE).nodes == 5


@pytest.mark.parametrize("count", [2, 4, 6])
def test_an_even_node_count_is_refused_with_the_reason(count: int):
    err = refused(f"nodes: {count}")
    assert f"nodes: {count} is even" in str(err)
    assert "split votes" in str(err)
    assert f"use {count - 1} or {count + 1}" in str(err)
    assert err.field == "nodes"


def test_one_node_is_refused_without_dev():
    err = refused("nodes: 1")
    assert "no fault tolerance" in str(err)
    assert "dev: true" in str(err)


def test_one_node_without_dev_names_the_nodes_field_and_its_line():
    err = refused("name: small\nnodes: 1\n")
    assert err.field == "nodes"
    assert err.line == 2


def test_one_node_is_allowed_with_dev():
    spec = parse_spec("nodes: 1\ndev: true", source=SOURCE)
    assert spec.nodes == 1
    assert spec.dev is True


@pytest.mark.parametrize("count", [0, -1, 9])
def test_node_counts_outside_1_to_7_are_refused(count: int):
    assert "nodes must be 3 or 5" in str(refused(f"nodes: {count}\ndev: true"))


def test_a_boolean_node_count_is_refused():
    assert refused("nodes: true\ndev: true").field == "nodes"


@given(count=st.integers(), dev=st.booleans())
def test_any_integer_node_count_validates_to_an_odd_count_up_to_7_or_is_a_spec_error(count: int, dev: bool):
    try:
        spec = parse_spec(f"nodes: {count}\ndev: {str(dev).lower()}", source=SOURCE)
    except SpecError:
        return
    assert spec.nodes == count
    assert spec.nodes % 2 == 1
    assert 1 <= spec.nodes <= 7
    assert spec.nodes > 1 or dev


# -- zones ---------------------------------------------------------------------------------------------------

def test_nodes_are_spread_over_zones_round_robin():
    spec = LifecycleSpec(nodes=5, zones=["a", "b", "c"])
    assert zone_layout(spec) == [("node-1", "a"), ("node-2", "b"), ("node-3", "c"), ("node-4", "a"),
                                 ("node-5", "b")]


def test_three_nodes_in_two_zones_warn_that_one_zone_holds_quorum():
    warnings = zone_warnings(LifecycleSpec(nodes=3, zones=["a", "b"]))
    assert len(warnings) == 1
    assert "zone a holds 2 of 3 nodes" in warnings[0]
    assert "losing it loses quorum" in warnings[0]


def test_five_nodes_in_three_zones_do_not_warn():
    assert zone_warnings(LifecycleSpec(nodes=5, zones=["a", "b", "c"])) == []


def test_the_default_mesh_does_not_warn():
    assert zone_warnings(LifecycleSpec()) == []


def test_a_dev_mesh_warns_that_it_has_no_fault_tolerance():
    warnings = zone_warnings(LifecycleSpec(nodes=1, dev=True))
    assert any("development mesh" in w for w in warnings)


def test_duplicate_zone_names_are_refused():
    err = refused("zones: [zone-a, zone-a]")
    assert "zone names must be unique" in str(err)
    assert err.field == "zones"


# -- errors point at file:line and the field -----------------------------------------------------------------

def test_invalid_yaml_is_a_spec_error_with_file_and_line():
    err = refused("nodes: 3\nzones: [zone-a, zone-b\nseal: {}\n")
    assert err.file == SOURCE
    assert err.line is not None
    assert str(err).startswith(f"{SOURCE}:{err.line}: not valid YAML")


def test_invalid_yaml_names_the_offending_line():
    err = refused("nodes: 3\nname: x\n  bad: indentation\n")
    assert err.line == 3


def test_a_file_that_is_not_a_mapping_is_refused():
    assert "must be a mapping" in str(refused("- nodes\n- zones\n"))


def test_an_unknown_top_level_field_names_file_line_and_allowed_fields():
    err = refused("nodes: 3\nnodse: 5\n")
    assert str(err).startswith(f"{SOURCE}:2: nodse: unknown field 'nodse'")
    assert err.field == "nodse"
    for allowed in ("nodes", "zones", "seal", "raft", "tls", "ports", "entry", "dev", "version"):
        assert allowed in err.message.split("allowed here: ")[1].split(", ")


def test_an_unknown_nested_field_names_the_dotted_path_and_that_level_s_allowed_fields():
    err = refused("nodes: 3\nraft:\n  performance_multiplier: 2\n  heartbeat: 1s\n")
    assert err.line == 4
    assert err.field == "raft.heartbeat"
    assert "unknown field 'heartbeat'; allowed here: autopilot, performance_multiplier" in str(err)


def test_a_wrong_type_deep_in_the_file_names_its_line_and_dotted_field():
    err = refused("version: 1\nname: x\nraft: {performance_multiplier: x}\n")
    assert err.line == 3
    assert err.field == "raft.performance_multiplier"
    assert str(err).startswith(f"{SOURCE}:3: raft.performance_multiplier: ")


def test_a_newer_schema_version_is_refused_with_upgrade_advice():
    err = refused("nodes: 3\nversion: 2\n")
    assert "schema version 2 is newer" in str(err)
    assert "upgrade vaultmesh" in str(err)
    assert err.line == 2
    assert err.field == "version"


def test_the_current_schema_version_is_accepted():
    assert parse_spec("version: 1", source=SOURCE).version == 1


# -- seal ----------------------------------------------------------------------------------------------------

def test_kms_seal_options_are_passed_through_for_awskms():
    spec = parse_spec("seal:\n  type: awskms\n  options: {region: eu-west-1, kms_key_id: alias/mesh}\n",
                      source=SOURCE)
    assert spec.seal.type == "awskms"
    assert spec.seal.options == {"region": "eu-west-1", "kms_key_id": "alias/mesh"}


@pytest.mark.parametrize("seal", ["static", "transit", "shamir"])
def test_seal_options_are_refused_for_seals_vaultmesh_manages(seal: str):
    err = refused(f"seal:\n  type: {seal}\n  options: {{region: eu-west-1}}\n")
    assert "seal.options is only for KMS seals" in str(err)
    assert f"manages the {seal} seal itself" in str(err)


def test_an_unknown_seal_type_is_refused():
    err = refused("seal: {type: hsm}")
    assert err.field == "seal.type"


def test_key_threshold_above_key_shares_is_refused():
    err = refused("seal: {type: shamir, key_shares: 3, key_threshold: 5}")
    assert "key_threshold cannot exceed seal.key_shares" in str(err)


def test_key_threshold_equal_to_key_shares_is_accepted():
    spec = parse_spec("seal: {type: shamir, key_shares: 3, key_threshold: 3}", source=SOURCE)
    assert (spec.seal.key_shares, spec.seal.key_threshold) == (3, 3)


def test_the_spec_is_immutable():
    spec = MeshSpec()
    with pytest.raises(ValueError):
        spec.nodes = 5  # type: ignore[misc]
