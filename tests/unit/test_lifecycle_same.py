"""``up -f`` on an existing mesh: a file that renames it or changes its shape is refused, each in its own words."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultmesh.errors import StateError
from vaultmesh.layout import build_layout
from vaultmesh.lifecycle.mesh import Mesh, check_same_lifecycle
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.models import zone_layout


def made_from(text: str, root: Path) -> Mesh:
    spec = parse_spec(text)
    layout = build_layout(spec.name, root, zone_layout(spec), list(range(41000, 41007)), transit_seal=False)
    return Mesh(spec, layout, None, True, {})


def test_the_same_file_passes(tmp_path: Path) -> None:
    check_same_lifecycle(made_from("name: prod\n", tmp_path), parse_spec("name: prod\nkeeper:\n  enabled: false\n"))


def test_a_renamed_file_is_refused_for_its_name_not_its_shape(tmp_path: Path) -> None:
    with pytest.raises(StateError) as info:
        check_same_lifecycle(made_from("name: prod\n", tmp_path), parse_spec("name: production\n"))

    err = info.value
    assert str(err).startswith(f"the mesh in {tmp_path} is named 'prod' and the file names it 'production'; "
                               "a mesh keeps the name it was created with (OpenBao stored it as its cluster name")
    assert "shape" not in str(err) and "different" not in str(err)
    assert err.hint is not None
    assert err.hint.startswith("set name: prod in the file; for a mesh named production, make a new one: ")


def test_a_file_without_a_name_says_it_means_the_default(tmp_path: Path) -> None:
    with pytest.raises(StateError, match=r"the file names none \(so 'vaultmesh', the default\)"):
        check_same_lifecycle(made_from("name: prod\n", tmp_path), parse_spec("nodes: 3\n"))


def test_a_shape_change_names_the_fields(tmp_path: Path) -> None:
    with pytest.raises(StateError, match=r"was created with different log_level, nodes, zones \("):
        check_same_lifecycle(made_from("name: prod\n", tmp_path),
                             parse_spec("name: prod\nnodes: 5\nzones: [a, b, c]\nlog_level: debug\n"))
