"""`vaultmesh restore` and `vaultmesh drill`: a mesh back from a snapshot, and the drill that proves it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from vaultmesh.cli.common import Ctx, echo_json, err_console, handle_errors, mesh_options, pass_ctx
from vaultmesh.errors import VaultmeshError


def _progress(line: str) -> None:
    err_console().print(f"  {line}", markup=False)


def _phases(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())


@click.command("restore")
@click.argument("snapshot", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--into", "into", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Make a new mesh in this (new or empty) folder from the snapshot of the mesh in --dir.")
@click.option("--force", is_flag=True, help="Restore into the running mesh in --dir, replacing all its data "
                                            "(a snapshot of its current state is taken first).")
@click.option("--json", "as_json", is_flag=True, help="What was done, as one JSON document on stdout.")
@mesh_options()
@pass_ctx
@handle_errors
def restore(ctx: Ctx, snapshot: Path, into: Path | None, force: bool, as_json: bool) -> None:
    """Restore a snapshot into a new mesh (--into DIR) or into the running one (--force).

    --dir names the mesh the snapshot was taken of: its seal key (checked against the snapshot's manifest before
    anything starts) and admin password open the restored storage."""
    from vaultmesh.dr.restore import restore_in_place, restore_into

    if into is not None and force:
        raise click.UsageError("give --into DIR (a new mesh) or --force (the running mesh), not both")
    if into is None and not force:
        raise VaultmeshError(f"restore replaces every secret, policy and token of the mesh in {ctx.dir} with the "
                             "snapshot's; nothing was done",
                             hint="add --force to restore into it (its current state is saved first), or "
                                  "--into DIR to make a new mesh from the snapshot")
    if into is not None:
        result = restore_into(snapshot, into.absolute(), source=ctx.dir, progress=_progress)
        where = into.absolute()
    else:
        result = restore_in_place(ctx.dir, snapshot, progress=_progress)
        where = ctx.dir
    if as_json:
        echo_json({"dir": str(where), "snapshot": str(snapshot), "index": result.manifest.index,
                   "snapshot_time": result.manifest.time, "seconds": round(result.seconds, 3),
                   "phases": {k: round(v, 3) for k, v in result.phases.items()},
                   "before": str(result.before) if result.before else None})
        return
    console = err_console()
    console.print(f"[bold green]restored[/] {snapshot} (index {result.manifest.index}) into {where} in "
                  f"{result.seconds:.1f} s ({_phases(result.phases)})")
    if result.before:
        console.print(f"the state before the restore is in {result.before}", markup=False)
    console.print(f'use it: eval "$(vaultmesh --dir {shlex.quote(str(where))} env)"', markup=False)


@click.command("drill")
@click.option("--snapshot", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The snapshot to drill (default: the mesh's newest).")
@click.option("-f", "--file", "file_", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The mesh file whose resources must show no changes on the restored mesh (plan check).")
@click.option("--no-isolation", is_flag=True,
              help="Run the scratch mesh on this machine's network where namespaces are not possible (it could "
                   "then reach the databases and URLs the snapshot's config names).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document on stdout.")
@mesh_options()
@pass_ctx
@handle_errors
def drill(ctx: Ctx, snapshot: Path | None, file_: Path | None, no_isolation: bool, as_json: bool) -> None:
    """Restore a snapshot into an isolated scratch mesh, check it, report RTO and RPO, tear it down.

    Exit 0 when every check passed (or was skipped, with the reason), 1 when one failed."""
    from vaultmesh.dr.drill import drill as do_drill

    report = do_drill(ctx.dir, snapshot=snapshot, isolation=not no_isolation, file=file_,
                      progress=_progress)
    if as_json:
        echo_json(report.to_json())
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(0 if report.ok else 1)
