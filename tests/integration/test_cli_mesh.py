"""The CLI against one real mesh, its output a pipe (not a TTY), as a user types it: `vaultmesh up --dir D`,
whole progress lines, the status table uncut, and `--json` of apply and leases reap."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vaultmesh.lifecycle import mesh as m

from .conftest import MeshHandle, owned_mesh

pytestmark = pytest.mark.integration

VAULTMESH = [sys.executable, "-m", "vaultmesh.cli.entry"]


def vaultmesh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VAULTMESH, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def typed_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshHandle, subprocess.CompletedProcess[str]]]:
    seen: list[subprocess.CompletedProcess[str]] = []

    def cli_up(root: Path, spec: Any, text: str, *, timeout: float) -> Any:
        proc = vaultmesh("up", "--dir", str(root), timeout=timeout + 30)
        seen.append(proc)
        assert proc.returncode == 0, proc.stderr
        return SimpleNamespace(mesh=m.open_mesh(root))

    with owned_mesh(tmp_path_factory.mktemp("cli") / "state", bring_up=cli_up) as handle:
        yield handle, seen[0]


def test_up_takes_dir_after_its_name_and_prints_whole_lines(
        typed_up: tuple[MeshHandle, subprocess.CompletedProcess[str]]) -> None:
    handle, proc = typed_up

    lines = proc.stderr.splitlines()
    assert any(line.startswith("healthy in ") for line in lines), proc.stderr
    assert f'use it: eval "$(vaultmesh --dir {handle.dir} env)"' in lines
    progress = [line for line in lines if line.startswith("  ")]
    assert progress, proc.stderr
    assert not [line for line in lines if line and not line.startswith(("  ", "healthy in ", "use it:", "warning:"))]


def test_status_table_keeps_every_address_when_not_a_tty(
        typed_up: tuple[MeshHandle, subprocess.CompletedProcess[str]]) -> None:
    handle, _ = typed_up

    proc = vaultmesh("status", "--dir", str(handle.dir))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    for addr in handle.addrs:
        assert addr in proc.stdout
    assert "…" not in proc.stdout


def test_apply_and_reap_print_one_json_document(
        typed_up: tuple[MeshHandle, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    handle, _ = typed_up
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("policies:\n  cli-json:\n"
                         "    hcl: 'path \"secret/data/cli/*\" { capabilities = [\"read\"] }'\n")

    first = vaultmesh("apply", "-f", str(mesh_file), "--json", "--dir", str(handle.dir))
    again = vaultmesh("apply", "-f", str(mesh_file), "--json", "--dir", str(handle.dir))
    reaped = vaultmesh("leases", "reap", "--workload", "nobody", "--json", "--dir", str(handle.dir))

    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["changed"] is True and doc["checksum"].startswith("sha256:")
    assert any(a["kind"] == "policy" and a["op"] == "create" for a in doc["performed"])
    assert json.loads(again.stdout)["changed"] is False
    assert reaped.returncode == 0, reaped.stderr
    assert json.loads(reaped.stdout) == {"workload": "nobody", "dry_run": False, "revoked": 0, "tokens": []}
