"""`vaultmesh snapshot save|list|verify`: Raft snapshots with a manifest, verified offline."""

from __future__ import annotations

import click


@click.group("snapshot")
def snapshot() -> None:
    """Raft snapshots of the mesh: take one, list them, verify a file offline."""
