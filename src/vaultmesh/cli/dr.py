"""`vaultmesh restore` and `vaultmesh drill`: a mesh back from a snapshot, and the drill that proves it."""

from __future__ import annotations

import click


@click.command("restore")
def restore() -> None:
    """Restore a snapshot into a new mesh (--into DIR) or into the running one (--force)."""


@click.command("drill")
def drill() -> None:
    """Restore a snapshot into an isolated scratch mesh, check it, report RTO and RPO, tear it down."""
