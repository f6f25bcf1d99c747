"""The ``vaultmesh`` entry point keeps ``vaultmesh run`` off the control-plane import stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("click", "rich", "pydantic", "cryptography", "httpx", "yaml.composer")


def imported_modules(argv: list[str]) -> set[str]:
    code = f"import sys; sys.argv = {argv!r}; from vaultmesh.cli.entry import main; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=60)
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def test_vaultmesh_run_does_not_import_the_control_plane() -> None:
    mods = imported_modules(["vaultmesh", "run", "--help"])
    assert "vaultmesh.workload.cli" in mods
    assert not [m for m in mods if m.split(".")[0] in HEAVY or m in HEAVY]


def test_other_commands_go_to_the_click_cli() -> None:
    mods = imported_modules(["vaultmesh", "--help"])
    assert "click" in mods and "vaultmesh.cli.main" in mods
