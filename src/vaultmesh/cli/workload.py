"""``vaultmesh run`` and ``vaultmesh leases reap`` in the click CLI.

``run`` is also reachable without click: the ``vaultmesh`` entry point (``cli/entry.py``) hands
``vaultmesh run ...`` straight to the argparse path in ``workload/cli.py``, and ``vaultmesh-run`` is that path
alone. This command exists so ``vaultmesh --help`` lists it and ``python -m vaultmesh.cli.main run`` works.
"""

from __future__ import annotations

import sys

import click

from vaultmesh.cli.common import Ctx, handle_errors, pass_ctx

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False, "help_option_names": []}


@click.command("run", context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(args: tuple[str, ...]) -> None:
    """Run a command with secrets from the mesh; revoke them when it exits (`vaultmesh run --help`)."""
    from vaultmesh.workload.cli import main as workload_main

    sys.exit(workload_main(["run", *args]))


@click.group()
def leases() -> None:
    """Tokens and leases of workloads."""


@leases.command("reap")
@click.option("--workload", required=True, help="Workload name (the service account in its identity token).")
@click.option("--auth-mount", default=None, help="Only tokens from this JWT auth mount (default: any).")
@click.option("--role", default=None, help="Only tokens of this role.")
@click.option("--dry-run", is_flag=True, help="Show what would be revoked; revoke nothing.")
@pass_ctx
@handle_errors
def leases_reap(ctx: Ctx, workload: str, auth_mount: str | None, role: str | None, dry_run: bool) -> None:
    """Revoke the tokens (and so the leases) a workload left behind, e.g. after `run` was SIGKILLed."""
    from vaultmesh.lifecycle import mesh as m
    from vaultmesh.workload.reap import reap

    mesh = m.open_mesh(ctx.dir)
    with mesh.client(token=m.admin_token(mesh)) as client:
        found = reap(client, workload, auth_mount=auth_mount, role=role, dry_run=dry_run)
    verb = "would revoke" if dry_run else "revoked"
    for info in found:
        click.echo(f"{verb} token {info.accessor} ({info.display_name}, {info.path}, expires {info.expire_time})")
    click.echo(f"{verb} {len(found)} token(s) of workload {workload} and the leases they created")
