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


FLOORS: dict[str, int] = {
    # the base: small modules every floor may use
    "errors": 0, "durations": 0, "environ": 0, "values": 0, "fsutil": 0, "layout": 0, "pki": 0, "waiting": 0,
    "spec": 1,
    "api": 2, "render": 2, "identity": 2,
    "hosts": 3,  # a node on another host: SSH, its bundle and service (runtime starts hosted nodes through it)
    "runtime": 4,
    "lifecycle": 5, "lab": 5,
    "reconcile": 6, "workload": 6, "snapshot": 6, "monitoring": 6, "certs": 6, "audit": 6,
    "bench": 7, "dr": 7, "doctor": 7, "change": 7, "export": 7,
    "keeper": 8, "chaos": 8,
    "cli": 9,
    "__init__": 9,  # the public SDK names
}
"""Every module of the package and its floor: a module imports only from floors below its own (or its own
package). A new package must be given a floor here, or this test fails."""

ALSO_FORBIDDEN = {
    # the workload path stays light: it is started thousands of times
    "workload": ("vaultmesh.lifecycle", "vaultmesh.reconcile", "vaultmesh.render"),
}


def package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_package_has_a_floor() -> None:
    missing = sorted({package_of(p) for p in SRC.rglob("*.py")} - set(FLOORS))
    assert not missing, f"give these a floor in FLOORS: {missing}"


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_package_imports_point_down(package: str) -> None:
    bad = []
    for path in (p for p in SRC.rglob("*.py") if package_of(p) == package):
        for module in imports_of(path):
            target = module.split(".")[1] if "." in module else module
            if target == package or module == "vaultmesh":
                continue
            if FLOORS.get(target, 99) >= FLOORS[package] or module.startswith(ALSO_FORBIDDEN.get(package, ())):
                bad.append(f"{path.relative_to(SRC)} (floor {FLOORS[package]}) imports {module} "
                           f"(floor {FLOORS.get(target, '?')})")
    assert not bad, bad


def test_nothing_outside_cli_imports_cli() -> None:
    bad = [f"{p.relative_to(SRC)} imports {m}" for p in SRC.rglob("*.py") if "cli" not in p.parts
           for m in imports_of(p) if m.startswith("vaultmesh.cli")]
    assert not bad, bad
