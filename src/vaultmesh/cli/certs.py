"""`vaultmesh certs status|rotate|rotate-ca`: every certificate the mesh serves or trusts, renewing the leaves in
place, replacing the CA in stages."""

from __future__ import annotations

import click

from vaultmesh.cli.common import Ctx, echo_json, err_console, json_option, mesh_command, out_console


@click.group("certs")
def certs() -> None:
    """The mesh's certificates: what each listener serves, and renewing them with no restart."""


def _progress(line: str) -> None:
    err_console().print(f"  {line}", markup=False)


@certs.command("status")
@json_option('{"certificates": [{"name", "address", "serial", "issuer", "not_after", "days_left", "source"}, '
             '...]} on stdout.')
@mesh_command()
def status(ctx: Ctx, as_json: bool) -> None:
    """Each certificate as its listener serves it (a TLS handshake verified with the mesh CA): the nodes, the
    transit seal node, the entry, the identity issuer, the keeper's /metrics, and the CA. A listener that does
    not answer is shown from its file, with why."""
    from vaultmesh.certs.probe import now_utc, observe
    from vaultmesh.certs.report import COLUMNS, due, soonest, table_rows
    from vaultmesh.lifecycle import mesh as m

    mesh = m.open_mesh(ctx.dir)
    rows = observe(mesh)
    now = now_utc()
    if as_json:
        echo_json({"certificates": [r.to_json(now) for r in rows]})
        return
    from rich.table import Table

    table = Table(title=f"certificates of mesh {mesh.spec.name}")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col == "days left" else "left")
    for row in table_rows(rows, now):
        table.add_row(*row)
    out_console().print(table)
    first = soonest(rows)
    if first is not None and first.facts is not None:
        when = "due for renewal" if first.name != "ca" and due(first.facts, now) else "soonest to expire"
        click.echo(f"{when}: {first.name}, {first.facts.days_left(now):.0f} days left "
                   f"({first.facts.not_after:%Y-%m-%d})")


@certs.command("rotate")
@json_option('{"rotated": [{"name", "old_serial", "new_serial", "loaded"}, ...]} on stdout.')
@mesh_command()
def rotate(ctx: Ctx, as_json: bool) -> None:
    """New leaf certificates from the mesh CA for every listener, loaded with no restart (SIGHUP) and read back
    from each listener (a listener still serving its old one fails the command, naming it)."""
    from vaultmesh.certs import rotate as r
    from vaultmesh.lifecycle import mesh as m

    with m.locked(ctx.dir):
        done = r.rotate(m.open_mesh(ctx.dir), progress=(lambda _: None) if as_json else _progress)
    if as_json:
        echo_json({"rotated": [x.to_json() for x in done]})
        return
    loaded = sum(1 for x in done if x.loaded)
    click.echo(f"renewed {len(done)} certificate{'s' if len(done) != 1 else ''}, {loaded} served now with no "
               "restart" + ("" if loaded == len(done) else f", {len(done) - loaded} at their next start"))


@certs.command("rotate-ca")
@click.option("--stop-after", type=click.Choice(["make-ca", "trust", "restart", "sign", "reissue", "drop"]),
              default=None, hidden=True,
              help="Stop once this stage is done (tests; running it again goes on from there).")
@json_option('{"old_ca", "new_ca", "stage", "steps": [...], "seconds", "rotated": [{"name", "old_serial", '
             '"new_serial", "loaded"}, ...]} on stdout.')
@mesh_command()
def rotate_ca(ctx: Ctx, stop_after: str | None, as_json: bool) -> None:
    """Replace the mesh CA in stages, each checked before the next: a new CA; the CA file trusts both (the entry
    reloads; on a transit seal each node is restarted once, standbys first, as OpenBao reads the seal's CA at start
    only); the new CA signs; every leaf re-issued from it with no restart and read back; the old CA dropped;
    every listener verified with the new CA alone. Refuses (one line) when a node is down, the mesh tolerates no
    failure or autopilot is unhealthy. Interrupted, it is resumed by running it again."""
    from vaultmesh.change import rotate_ca as r

    result = r.rotate_ca(ctx.dir, progress=(lambda _: None) if as_json else _progress,
                         stop_after=stop_after)  # type: ignore[arg-type]
    if as_json:
        echo_json(result.to_json())
        return
    new = (result.new or "?")[:12]
    if result.stage == "done":
        click.echo(f"the mesh CA is {new} (was {(result.old or '?')[:12]}): {len(result.rotated)} leaves re-issued "
                   f"with no restart, in {result.seconds:.1f} s")
    else:
        click.echo(f"stopped after stage {result.stage} (new CA {new}); run `vaultmesh certs rotate-ca` to go on")
