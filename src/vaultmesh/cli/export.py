"""`vaultmesh export helm|ansible`: the mesh file as values for the OpenBao Helm chart, or as an Ansible playbook."""

from __future__ import annotations

import click


@click.group("export")
def export() -> None:
    """The same mesh for other tools: values for the OpenBao Helm chart, or an Ansible inventory and playbook."""
