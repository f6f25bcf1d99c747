"""`vaultmesh monitoring rules|config|dashboard`: the alert rules, prometheus.yml and the Grafana dashboard of a
mesh, printed or written to a file (atomically, 0644: nothing in them is secret)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vaultmesh.cli.common import Ctx, mesh_command

FILE_HELP = "Mesh file (default: the mesh's own in --dir, else the built-in defaults)."
OUT_HELP = "Write to this file (atomically, 0644) instead of stdout."


@click.group("monitoring")
def monitoring() -> None:
    """Prometheus alert rules, the Prometheus config and a Grafana dashboard for the mesh."""


def _spec(ctx: Ctx, file_: Path | None) -> Any:
    """The spec: ``-f``, else the mesh's own, else the defaults."""
    from vaultmesh.lifecycle import mesh as m
    from vaultmesh.spec.load import load_spec

    if file_ is not None:
        return load_spec(file_)[0]
    if m.exists(ctx.dir):
        return m.open_mesh(ctx.dir).spec
    return load_spec(None)[0]


def _emit(text: str, out: Path | None, what: str) -> None:
    if out is None:
        click.echo(text, nl=False)
        return
    from vaultmesh.fsutil import write_atomic

    write_atomic(out, text.encode(), mode=0o644)
    click.echo(f"wrote {what} to {out}", err=True)


OUTPUT = click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), help=OUT_HELP)


def from_mesh_file(fn: Callable[..., None]) -> Callable[..., None]:
    """``-f FILE`` and ``-o FILE`` on a mesh command: what renders from a mesh file alone."""
    option = click.option("-f", "--file", "file_", type=click.Path(dir_okay=False, path_type=Path), help=FILE_HELP)
    return option(OUTPUT(mesh_command()(fn)))


@monitoring.command("rules")
@from_mesh_file
def rules(ctx: Ctx, file_: Path | None, out: Path | None) -> None:
    """The alerting rules (a Prometheus rule file), thresholds from the mesh file."""
    from vaultmesh.monitoring.rules import mesh_rules, render_rules

    spec = _spec(ctx, file_)
    _emit(render_rules(spec), out, f"{len(mesh_rules(spec))} rules of mesh {spec.name}")


@monitoring.command("dashboard")
@from_mesh_file
def dashboard(ctx: Ctx, file_: Path | None, out: Path | None) -> None:
    """The Grafana dashboard JSON (import it: Dashboards > New > Import; pick a Prometheus data source)."""
    from vaultmesh.monitoring.dashboard import render_dashboard_json

    spec = _spec(ctx, file_)
    _emit(render_dashboard_json(spec), out, f"the dashboard of mesh {spec.name}")


@monitoring.command("config")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The rule file prometheus.yml names (default: rules.yml beside -o, else in the current folder).")
@OUTPUT
@mesh_command()
def config(ctx: Ctx, rules_file: Path | None, out: Path | None) -> None:
    """prometheus.yml for the mesh in --dir: every node over TLS verified with the mesh CA, the keeper's
    /metrics, the entry. It reads the mesh's own addresses, so it needs the mesh (no -f)."""
    from vaultmesh.lifecycle import mesh as m
    from vaultmesh.lifecycle.keeper_process import read_status
    from vaultmesh.monitoring.config import render_prometheus_config

    mesh = m.open_mesh(ctx.dir)
    record = read_status(mesh.paths) if mesh.spec.keeper.enabled else None
    keeper = record.metrics if record else None
    if mesh.spec.keeper.enabled and keeper is None:
        click.echo("warning: the keeper has not recorded its metrics address yet (`vaultmesh up` starts it); "
                   "no keeper job", err=True)
    rules_path = (rules_file or (out.parent if out else Path()) / "rules.yml").absolute()
    text = render_prometheus_config(mesh.layout, rules_file=rules_path, keeper=keeper,
                                    entry=m.entry_wanted(mesh.spec))
    _emit(text, out, f"the Prometheus config of mesh {mesh.spec.name} (rules: {rules_path})")
