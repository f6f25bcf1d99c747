"""`vaultmesh lab up|down`: local hosts (network namespaces with their own sshd and supervisor) to try and test
the multi-host runtime on one machine."""

from __future__ import annotations

import click


@click.group("lab")
def lab() -> None:
    """Local hosts on one machine: each a network namespace with its own address, sshd and supervisor."""
