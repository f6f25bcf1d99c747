"""``vaultmesh run`` and ``vaultmesh leases reap`` in the click CLI.

``run`` is also reachable without click: the ``vaultmesh`` entry point (``cli/entry.py``) hands
``vaultmesh run ...`` straight to the argparse path in ``workload/cli.py``, and ``vaultmesh-run`` is that path
alone. This command exists so ``vaultmesh --help`` lists it, ``python -m vaultmesh.cli.main run`` works, and
``vaultmesh --dir D run ...`` and ``vaultmesh run --dir D ...`` (both of which the entry point leaves to click)
reach the mesh in D.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from vaultmesh.cli.common import Ctx, current, echo_json, json_option, mesh_command, mesh_options
from vaultmesh.errors import VaultmeshError

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False, "help_option_names": []}


def _given(args: list[str], option: str) -> bool:
    """Whether ``run``'s own arguments (those before its command) name ``option``."""
    from vaultmesh.workload.cli import split_option

    return bool(split_option(args, option)[0])


def _from_state_dir(ctx: Ctx, args: list[str]) -> list[str]:
    """``--addr`` (every node) and ``--ca-cert`` of the mesh in ``ctx.dir``, for those ``run`` was not given:
    a ``--dir`` typed before ``run`` names the mesh to run against. (``run`` itself reads no state dir: it
    needs only the addresses, the CA and the workload's identity, and a workload should run as a user that
    cannot read the state dir.)"""
    from vaultmesh.lifecycle import mesh as m

    mesh = m.open_mesh(ctx.dir)
    extra: list[str] = []
    if not _given(args, "--addr"):
        extra += ["--addr", ",".join(mesh.node_addrs)]
    if not _given(args, "--ca-cert"):
        extra += ["--ca-cert", str(mesh.paths.ca_cert)]
    return extra


class _RunCommand(click.Command):
    """Hands ``run`` its arguments exactly as typed (click would drop a leading ``--``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["vaultmesh.run_args"] = tuple(args)
        return super().parse_args(ctx, args)


@click.command("run", cls=_RunCommand, context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(args: tuple[str, ...]) -> None:
    """Run a command with secrets from the mesh; revoke them when it exits (`vaultmesh run --help`)."""
    from vaultmesh.workload.cli import DIR_OPTION, EXIT_FAILED, split_option
    from vaultmesh.workload.cli import main as workload_main

    ctx = click.get_current_context()
    dirs, own = split_option(ctx.meta.get("vaultmesh.run_args", args), DIR_OPTION)
    if dirs:  # vaultmesh run --dir D
        current(ctx).dir = Path(dirs[-1]).absolute()
    root = ctx.find_root()
    before = root.command is not ctx.command and root.get_parameter_source("dir_") is ParameterSource.COMMANDLINE
    extra: list[str] = []
    if dirs or before:
        try:
            extra = _from_state_dir(current(ctx), own)
        except VaultmeshError as err:  # run's own failures are 125, in run's words
            print(f"vaultmesh run: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_FAILED)
    sys.exit(workload_main(["run", *extra, *own]))


@click.group()
@mesh_options()
def leases() -> None:
    """Tokens and leases of workloads (--dir here or after reap)."""


@leases.command("reap")
@click.option("--workload", required=True, help="Workload name (the service account in its identity token).")
@click.option("--auth-mount", default=None, help="Only tokens from this JWT auth mount (default: any).")
@click.option("--role", default=None, help="Only tokens of this role.")
@click.option("--dry-run", is_flag=True, help="Show what would be revoked; revoke nothing.")
@json_option("The tokens as one JSON document on stdout.")
@mesh_command()
def leases_reap(ctx: Ctx, workload: str, auth_mount: str | None, role: str | None, dry_run: bool,
                as_json: bool) -> None:
    """Revoke the tokens (and so the leases) a workload left behind, e.g. after `run` was SIGKILLed."""
    from vaultmesh.lifecycle import mesh as m
    from vaultmesh.workload.cli import reap_json, reap_lines
    from vaultmesh.workload.reap import reap

    mesh = m.open_mesh(ctx.dir)
    with mesh.client(token=m.admin_token(mesh)) as client:
        found = reap(client, workload, auth_mount=auth_mount, role=role, dry_run=dry_run)
    if as_json:
        echo_json(reap_json(workload, found, dry_run=dry_run))
    else:
        click.echo("\n".join(reap_lines(workload, found, dry_run=dry_run)))
