"""The mesh file cannot be turned against its reader (issue 8, findings 4 and 8)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vaultmesh.errors import SpecError
from vaultmesh.reconcile.resources import secret_values
from vaultmesh.spec.load import load_spec, parse_spec
from vaultmesh.spec.resources import DbConnection, FileAuditOptions, ResourcesSpec, read_confined

PLANTED = "admin-password-7f3a9c"


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "password").write_text(PLANTED + "\n")
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    return mesh_dir


@pytest.mark.parametrize("ref", ["../outside/password", "/etc/passwd", "policies/../../outside/password"])
def test_a_policy_file_outside_the_mesh_folder_is_refused_with_its_line(planted: Path, ref: str) -> None:
    f = planted / "mesh.yaml"
    f.write_text(f"version: 1\npolicies:\n  p:\n    file: {ref}\n")
    with pytest.raises(SpecError) as exc:
        load_spec(f)
    assert f"{f}:3" in str(exc.value) and "policies.p" in str(exc.value)
    assert PLANTED not in str(exc.value)


def test_a_symlink_out_of_the_mesh_folder_is_refused(planted: Path) -> None:
    (planted / "p.hcl").symlink_to(planted.parent / "outside" / "password")
    f = planted / "mesh.yaml"
    f.write_text("version: 1\npolicies:\n  p:\n    file: p.hcl\n")
    with pytest.raises(SpecError) as exc:
        load_spec(f)
    assert "outside the mesh file's folder" in str(exc.value) and PLANTED not in str(exc.value)


def test_a_file_that_is_not_a_policy_is_never_echoed(planted: Path) -> None:
    (planted / "p.hcl").write_text(PLANTED + "\n")
    f = planted / "mesh.yaml"
    f.write_text("version: 1\npolicies:\n  p:\n    file: p.hcl\n")
    with pytest.raises(SpecError) as exc:
        load_spec(f)
    assert "p.hcl: line 1: not an ACL policy" in str(exc.value)
    assert PLANTED not in str(exc.value)


def test_a_secret_file_outside_the_mesh_folder_is_refused_at_load(planted: Path) -> None:
    f = planted / "mesh.yaml"
    f.write_text("version: 1\nsecrets:\n  kv:\n    type: kv\n    seed:\n      app:\n"
                 "        token: {from_file: ../outside/password}\n")
    with pytest.raises(SpecError, match="climbs out"):
        load_spec(f)


def test_the_secret_reader_refuses_a_symlink_out(planted: Path) -> None:
    (planted / "token").symlink_to(planted.parent / "outside" / "password")
    spec = ResourcesSpec.model_validate({"secrets": {"kv": {"type": "kv", "seed": {"app": {
        "token": {"from_file": "token"}}}}}})
    with pytest.raises(SpecError) as exc:
        secret_values(spec, env={}, read_file=lambda p: read_confined(planted, p))
    assert PLANTED not in str(exc.value)
    assert read_confined(planted.parent, "outside/password").startswith(PLANTED)


@pytest.mark.parametrize("url", [
    "postgresql://u@h/db?password=hunter2",
    "postgresql://{{username}}@h/db?sslmode=disable&password=hunter2",
    "host=127.0.0.1 user=u password=hunter2 dbname=postgres",
    "host=h password='hunter 2'",
])
def test_a_literal_password_in_any_dsn_form_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="must not contain a password"):
        DbConnection(connection_url=url)


def test_templated_passwords_are_fine_in_every_form() -> None:
    DbConnection(connection_url="host=h user={{username}} password={{password}}")
    DbConnection(connection_url="postgresql://{{username}}:{{password}}@h/db?sslmode=disable")


@pytest.mark.parametrize("path", ["../audit.log", "logs/../../x.log", "."])
def test_an_audit_file_path_stays_in_the_node_folder(path: str) -> None:
    with pytest.raises(ValueError, match="inside the node's folder"):
        FileAuditOptions(file_path=path)


@pytest.mark.parametrize(("mode", "ok"), [("0600", True), ("0400", True), ("600", True), ("0644", False),
                                          ("0777", False), ("0640", False)])
def test_an_audit_file_mode_must_be_private(mode: str, ok: bool) -> None:
    if ok:
        FileAuditOptions(file_path="a.log", mode=mode)
    else:
        with pytest.raises(ValueError, match="0600 or stricter"):
            FileAuditOptions(file_path="a.log", mode=mode)


BOMB = "a: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def test_a_yaml_alias_bomb_is_refused_fast_with_its_line() -> None:
    assert len(BOMB) < 800
    started = time.monotonic()
    with pytest.raises(SpecError) as exc:
        parse_spec(BOMB, source="bomb.yaml")
    assert time.monotonic() - started < 2.0
    assert "bomb.yaml:2" in str(exc.value) and "aliases" in str(exc.value)


def test_an_oversized_mesh_file_is_refused() -> None:
    with pytest.raises(SpecError, match="larger than"):
        parse_spec("# " + "x" * (1 << 20) + "\n", source="big.yaml")


def test_the_mesh_file_folder_itself_is_readable(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("ok")
    assert read_confined(tmp_path, "a.txt") == "ok"
    assert os.sep not in "a.txt"
