"""``up -f`` on an existing mesh: a file that changes its shape is refused; a file that gives it another name
renames it (a label: OpenBao takes ``cluster_name`` from each node's config when the node starts)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from vaultmesh.errors import StateError
from vaultmesh.fsutil import read_json
from vaultmesh.layout import StatePaths
from vaultmesh.lifecycle.mesh import check_same_lifecycle, create_mesh, new_name, open_mesh, rename, renamed_text
from vaultmesh.spec.load import parse_spec

PROD = "# our production mesh\nname: prod  # the label\nnodes: 3\nports:\n  base: 41000\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A mesh's state dir as ``create_mesh`` writes it (no process is started)."""
    create_mesh(tmp_path / "mesh", parse_spec(PROD), PROD, engine=None, spec_dir=tmp_path)
    return tmp_path / "mesh"


def test_the_same_shape_passes(root: Path) -> None:
    check_same_lifecycle(open_mesh(root), parse_spec("name: production\nnodes: 3\nports:\n  base: 41000\n"))


def test_a_shape_change_names_the_fields(root: Path) -> None:
    with pytest.raises(StateError, match=r"was created with different log_level, nodes, zones \("):
        check_same_lifecycle(open_mesh(root), parse_spec("name: prod\nnodes: 5\nzones: [a, b, c]\nlog_level: "
                                                         "debug\nports:\n  base: 41000\n"))


def test_only_a_file_that_names_another_name_renames() -> None:
    mesh = SimpleNamespace(spec=parse_spec(PROD))

    assert new_name(mesh, parse_spec("name: production\n")) == "production"  # type: ignore[arg-type]
    assert new_name(mesh, parse_spec("name: prod\n")) is None  # type: ignore[arg-type]
    assert new_name(mesh, parse_spec("nodes: 3\n")) is None  # type: ignore[arg-type]  # no name: never the default


NESTED = "nodes: 3\nauth:\n  jwt:\n    type: jwt\n    name: x\n"


@pytest.mark.parametrize(("text", "renamed"), [
    (PROD, "# our production mesh\nname: production\nnodes: 3\nports:\n  base: 41000\n"),
    ("nodes: 3\n", "name: production\nnodes: 3\n"),
    (NESTED, "name: production\n" + NESTED),  # only a top-level name line is the mesh's
])
def test_renamed_text_changes_only_the_top_level_name(text: str, renamed: str) -> None:
    assert renamed_text(text, "production") == renamed


def test_rename_records_the_name_everywhere_it_is_kept(root: Path) -> None:
    paths = StatePaths(root)
    ca_before = paths.ca_cert.read_bytes()

    mesh = rename(open_mesh(root), "production")

    assert mesh.spec.name == "production" and mesh.layout.name == "production"
    assert open_mesh(root).spec.name == "production"
    assert read_json(paths.state_file)["name"] == "production"
    assert paths.spec_file.read_text().startswith("# our production mesh\nname: production\n")
    assert paths.ca_cert.read_bytes() == ca_before  # the CA keeps its subject


def test_the_configs_rendered_after_a_rename_carry_the_new_cluster_name(root: Path) -> None:
    from vaultmesh.lifecycle.mesh import render_configs

    mesh = rename(open_mesh(root), "production")
    render_configs(mesh)

    for node in mesh.layout.nodes:
        assert 'cluster_name = "production"' in node.config_file.read_text()
