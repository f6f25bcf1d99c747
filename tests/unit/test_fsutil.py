"""Atomic, private writes: a file is either the old one or the new one, secrets are 0600, dirs 0700."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vaultmesh import fsutil


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _permissive_umask():
    """A lax umask, so the modes checked are the ones fsutil sets and not the umask's doing."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_write_atomic_writes_the_bytes(tmp_path: Path):
    path = tmp_path / "state.json"
    fsutil.write_atomic(path, b"hello")
    assert path.read_bytes() == b"hello"


def test_write_atomic_leaves_the_file_0600(tmp_path: Path):
    path = tmp_path / "secret"
    fsutil.write_atomic(path, b"s3cret")
    assert mode(path) == 0o600


def test_write_atomic_makes_an_existing_world_readable_file_0600(tmp_path: Path):
    path = tmp_path / "secret"
    path.write_bytes(b"old")
    path.chmod(0o644)
    fsutil.write_atomic(path, b"new")
    assert mode(path) == 0o600
    assert path.read_bytes() == b"new"


def test_write_atomic_honours_an_explicit_mode(tmp_path: Path):
    path = tmp_path / "public.pem"
    fsutil.write_atomic(path, b"cert", mode=0o644)
    assert mode(path) == 0o644


def test_write_atomic_leaves_no_temp_files(tmp_path: Path):
    fsutil.write_atomic(tmp_path / "a", b"1")
    fsutil.write_atomic(tmp_path / "a", b"2")
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_a_failed_write_leaves_no_temp_file_and_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "state.json"
    fsutil.write_atomic(path, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        fsutil.write_atomic(path, b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert path.read_bytes() == b"old"
    assert mode(path) == 0o600


def test_a_failed_first_write_leaves_nothing_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fsutil.write_atomic(tmp_path / "new", b"data")
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_creates_a_missing_parent_0700(tmp_path: Path):
    path = tmp_path / "admin" / "password"
    fsutil.write_atomic(path, b"pw")
    assert mode(path.parent) == 0o700


def test_write_atomic_leaves_an_existing_parent_s_mode_alone(tmp_path: Path):
    parent = tmp_path / "mine"
    parent.mkdir(mode=0o755)
    parent.chmod(0o755)
    fsutil.write_atomic(parent / "f", b"x")
    assert mode(parent) == 0o755


def test_ensure_dir_creates_the_directory_0700(tmp_path: Path):
    path = fsutil.ensure_dir(tmp_path / "nodes" / "node-1")
    assert path.is_dir()
    assert mode(path) == 0o700


def test_ensure_dir_tightens_an_existing_directory_to_0700(tmp_path: Path):
    path = tmp_path / "pki"
    path.mkdir()
    path.chmod(0o755)
    fsutil.ensure_dir(path)
    assert mode(path) == 0o700


def test_write_json_is_sorted_indented_and_ends_with_a_newline(tmp_path: Path):
    path = tmp_path / "state.json"
    fsutil.write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert fsutil.read_json(path) == {"a": [1, 2], "b": 1}
    assert mode(path) == 0o600

