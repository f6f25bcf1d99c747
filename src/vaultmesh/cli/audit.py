"""`vaultmesh audit report`: who did what, who was denied what, from every node's audit files."""

from __future__ import annotations

import time

import click

from vaultmesh.cli.common import Ctx, echo_json, json_option, mesh_command


@click.group("audit")
def audit() -> None:
    """The mesh's audit records."""


@audit.command("report")
@click.option("--since", default=None, metavar="DURATION",
              help="Only the last DURATION (e.g. 1h, 30m); default: everything on disk.")
@click.option("--limit", default=20, show_default=True, help="Rows per section in the table (not --json).")
@json_option("The whole report as one JSON document on stdout (identities, denied, auth_failures, "
             "unusual_reads, long_ttl_tokens, compliance).")
@mesh_command()
def report(ctx: Ctx, since: str | None, limit: int, as_json: bool) -> None:
    """Requests and logins by identity, every denied request, repeated authentication failures, unusual
    reads, long-lived tokens, and who read which path, from every node's audit files. Values the audit device
    HMACs stay HMAC'd."""
    from vaultmesh.audit import report as r
    from vaultmesh.audit.sources import audit_files, read_events
    from vaultmesh.durations import parse_seconds
    from vaultmesh.lifecycle import mesh as m

    try:
        start = time.time() - parse_seconds(since) if since else None
    except ValueError as err:
        raise click.BadParameter(f"{since!r}: {err} (a duration such as 90s, 30m, 1h or 7d)",
                                 param_hint="--since") from None
    mesh = m.open_mesh(ctx.dir)
    files = audit_files(mesh)
    result = r.build(read_events(files), since=start)
    if as_json:
        echo_json({"files": [str(p) for _, p in files], **result.to_json()})
        return
    for line in r.text(result, limit=limit):
        click.echo(line)
