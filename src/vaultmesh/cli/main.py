"""The ``vaultmesh`` command: parse, call one function, render the result. No logic here."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from vaultmesh import __version__
from vaultmesh.cli import (
    audit,
    bench,
    certs,
    change,
    doctor,
    dr,
    export,
    identity,
    lab,
    monitoring,
    reconcile,
    snapshot,
    workload,
)
from vaultmesh.cli.common import (
    DEFAULT_DIR,
    DIR_ENV,
    DIR_HELP,
    ENGINE_ENV,
    ENGINE_HELP,
    Ctx,
    echo_json,
    err_console,
    handle_errors,
    mesh_options,
    out_console,
    pass_ctx,
)
from vaultmesh.errors import VaultmeshError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--dir", "dir_", type=click.Path(path_type=Path), envvar=DIR_ENV, default=DEFAULT_DIR,
              show_default=True, help=DIR_HELP + " Commands that use a mesh also take it after their name.")
@click.option("--engine", envvar=ENGINE_ENV, default=None, help=ENGINE_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="vaultmesh")
@click.pass_context
def cli(ctx: click.Context, dir_: Path, engine: str | None, debug: bool) -> None:
    """vaultmesh: a production-shaped OpenBao mesh for ephemeral workloads.

    Exit codes: 0 done, 1 an expected failure (or a check that found something), 2 a usage error or an invalid
    mesh file, 3 apply refused a destructive plan (add --force), 70 a bug, 130 interrupted."""
    ctx.obj = Ctx(dir_.absolute(), engine, debug)


@cli.command()
@click.option("-f", "--file", "file_", type=click.Path(path_type=Path), help="Mesh file (default: built-in).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for a healthy mesh.")
@mesh_options(engine=True)
@pass_ctx
@handle_errors
def up(ctx: Ctx, file_: Path | None, timeout: float) -> None:
    """Create, start, complete or heal the mesh; return when it is healthy."""
    from rich.text import Text

    from vaultmesh.lifecycle.up import up as do_up
    from vaultmesh.spec.load import load_spec
    from vaultmesh.spec.models import zone_warnings

    console = err_console()
    spec, text = load_spec(file_) if file_ else (None, "")
    for warning in zone_warnings(spec) if spec else []:
        console.print(f"[bold yellow]warning:[/] {warning}")
    with console.status("starting") as st:
        def progress(msg: str) -> None:
            st.update(Text(msg))
            console.print(f"  {msg}", markup=False)  # a whole line: never wrapped mid-sentence

        result = do_up(ctx.dir, spec, text, engine_override=ctx.engine,
                       spec_dir=file_.parent.absolute() if file_ else None, timeout=timeout, progress=progress)
    from vaultmesh.lifecycle.up import address

    leader = result.view.leader
    via = "entry" if result.view.entry_running else "leader address (no entry runs)"
    console.print(f"[bold green]healthy[/] in {result.seconds:.1f} s: {len(result.view.nodes)} voters, leader "
                  f"{leader.name if leader else '?'}; {via} {address(result.mesh, result.view)}")
    console.print(f'use it: eval "$(vaultmesh --dir {shlex.quote(str(ctx.dir))} env)"', markup=False)


@cli.command()
@mesh_options()
@pass_ctx
@handle_errors
def down(ctx: Ctx) -> None:
    """Stop every process of the mesh; keep its data."""
    from vaultmesh.lifecycle.up import down as do_down

    stopped = do_down(ctx.dir, progress=lambda line: click.echo(f"  {line}", err=True))
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@cli.command()
@click.option("--yes", is_flag=True, help="Really delete the mesh and all its data.")
@mesh_options()
@pass_ctx
@handle_errors
def destroy(ctx: Ctx, yes: bool) -> None:
    """Stop the mesh and delete its state dir (data, keys, PKI)."""
    from vaultmesh.lifecycle.up import destroy as do_destroy

    if not yes:
        raise VaultmeshError(f"destroy deletes {ctx.dir} with all secrets in it; nothing was done",
                             hint="add --yes to confirm")
    do_destroy(ctx.dir, progress=lambda line: click.echo(f"  {line}", err=True))
    click.echo(f"destroyed {ctx.dir}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@mesh_options()
@pass_ctx
@handle_errors
def status(ctx: Ctx, as_json: bool) -> None:
    """Show every node: process, seal, Raft role, health."""
    from vaultmesh.lifecycle.status import STATUS_COLUMNS, status_json, status_rows
    from vaultmesh.lifecycle.status import status as do_status

    mesh, view, addr = do_status(ctx.dir)
    doc = status_json(mesh, view, addr)
    if as_json:
        echo_json(doc)
    else:
        from rich.table import Table

        table = Table(title=f"mesh {mesh.spec.name}: {'healthy' if doc['healthy'] else 'NOT healthy'} "
                            f"at {addr}")
        for col in STATUS_COLUMNS:
            table.add_column(col)
        for *cells, healthy in status_rows(view):
            table.add_row(*cells, "[green]yes[/]" if healthy == "yes" else "[red]no[/]")
        console = out_console()
        console.print(table)
        console.print(f"keeper: {doc['keeper']['summary']}", soft_wrap=True)
        page = (doc.get("monitoring") or {}).get("dashboard_url")
        if page:
            console.print(f"dashboard: {page}", soft_wrap=True)
        first = (doc.get("certificates") or {}).get("soonest")
        if first:
            console.print(f"certificates: {first['name']} ends first, {first['not_after'][:10]} "
                          f"({first['days_left']:.0f} days; `vaultmesh certs status`)", soft_wrap=True)
    sys.exit(0 if doc["healthy"] else 1)


@cli.command()
@mesh_options()
@pass_ctx
@handle_errors
def env(ctx: Ctx) -> None:
    """Print export lines (BAO_* and VAULT_*) for the bao/vault CLI, hvac and curl."""
    from vaultmesh.api.env import export_lines
    from vaultmesh.lifecycle import mesh as m
    from vaultmesh.lifecycle.up import address

    mesh = m.open_mesh(ctx.dir)
    token = m.admin_token(mesh)
    values = {"ADDR": address(mesh, None), "CACERT": str(mesh.paths.ca_cert), "TOKEN": token}
    click.echo("\n".join(export_lines(values)))


for command in (identity.identity, reconcile.plan, reconcile.apply, reconcile.lint, reconcile.policy,
                bench.bench, bench.chaos, workload.run, workload.leases, snapshot.snapshot, dr.restore,
                dr.drill, monitoring.monitoring, certs.certs, doctor.doctor, change.upgrade, change.scale,
                audit.audit, export.export, lab.lab):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="vaultmesh")


if __name__ == "__main__":
    main()
