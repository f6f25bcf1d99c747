"""The layering of ARCHITECTURE.md, checked on the source: dependencies point down, nothing imports the CLI,
and the workload path stays light."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "vaultmesh"


def imports_of(path: Path) -> set[str]:
    """Every vaultmesh module ``path`` imports, at any depth in the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("vaultmesh"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaultmesh"):
            out.add(node.module)
    return out


def package_files(package: str) -> list[Path]:
    base = SRC / package
    return sorted(base.rglob("*.py")) if base.is_dir() else [SRC / f"{package}.py"]


FORBIDDEN = {
    # package: prefixes it must not import
    "spec": ("vaultmesh.cli", "vaultmesh.lifecycle", "vaultmesh.runtime", "vaultmesh.engine", "vaultmesh.workload"),
    "render": ("vaultmesh.cli", "vaultmesh.lifecycle", "vaultmesh.runtime", "vaultmesh.engine"),
    "engine": ("vaultmesh.cli", "vaultmesh.lifecycle", "vaultmesh.reconcile", "vaultmesh.render",
               "vaultmesh.workload", "vaultmesh.spec"),
    "runtime": ("vaultmesh.cli", "vaultmesh.lifecycle", "vaultmesh.reconcile"),
    "lifecycle": ("vaultmesh.cli", "vaultmesh.reconcile", "vaultmesh.workload", "vaultmesh.keeper"),
    "reconcile": ("vaultmesh.cli",),
    "identity": ("vaultmesh.lifecycle", "vaultmesh.reconcile", "vaultmesh.render"),
    "workload": ("vaultmesh.cli", "vaultmesh.reconcile", "vaultmesh.render", "vaultmesh.lifecycle"),
    "pki": ("vaultmesh.cli", "vaultmesh.lifecycle", "vaultmesh.engine"),
    "keeper": ("vaultmesh.cli", "vaultmesh.bench", "vaultmesh.chaos"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_down(package: str) -> None:
    bad = []
    for path in package_files(package):
        for module in imports_of(path):
            if module.startswith(FORBIDDEN[package]):
                bad.append(f"{path.relative_to(SRC)} imports {module}")
    assert not bad, bad


def test_nothing_outside_cli_imports_cli() -> None:
    bad = [f"{p.relative_to(SRC)} imports {m}" for p in SRC.rglob("*.py") if "cli" not in p.parts
           for m in imports_of(p) if m.startswith("vaultmesh.cli")]
    assert not bad, bad
