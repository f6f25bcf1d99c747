"""``up -f`` with another ``name`` renames a running mesh: recorded at once, reported by each node from its next
start (OpenBao takes ``cluster_name`` from the node's config when it starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaultmesh.lifecycle.up import down, up

from .conftest import MeshHandle

pytestmark = pytest.mark.integration

VAULTMESH = [sys.executable, "-m", "vaultmesh.cli.main"]


def vaultmesh(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*VAULTMESH, "--dir", str(root), *args], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    return proc


def cluster_names(handle: MeshHandle) -> set[str]:
    client = handle.client()
    return {str(client.health(addr)["cluster_name"]) for addr in handle.addrs}


def test_up_with_another_name_renames_the_mesh(make_mesh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    handle: MeshHandle = make_mesh("name: prod\nkeeper: {enabled: false}\n")
    assert cluster_names(handle) == {"prod"}
    renamed = tmp_path / "mesh.yaml"
    renamed.write_text("name: production\nkeeper: {enabled: false}\n")

    proc = vaultmesh(handle.dir, "up", "-f", str(renamed))

    assert "renamed the mesh prod -> production" in proc.stderr
    assert "healthy" in proc.stderr
    handle.reopen()
    assert handle.mesh.spec.name == "production"
    assert vaultmesh(handle.dir, "status").stdout.lstrip().startswith("mesh production: healthy")
    assert json.loads(vaultmesh(handle.dir, "status", "--json").stdout)["healthy"] is True

    down(handle.dir)
    up(handle.dir, None, "")
    assert cluster_names(handle) == {"production"}  # every node started since reports the new name
