"""`vaultmesh doctor`: the seed's production checklist and the hardening checks, run against the live mesh."""

from __future__ import annotations

import sys

import click

from vaultmesh.cli.common import Ctx, echo_json, json_option, mesh_command

MARK = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command("doctor")
@json_option('{"checks": [{"id", "status", "message", "fix"}, ...]} on stdout.')
@mesh_command()
def doctor(ctx: Ctx, as_json: bool) -> None:
    """Check the running mesh against the production checklist: nodes and zones, Raft, seal, TLS, auth roles,
    policies, token TTLs, root tokens, audit, monitoring, snapshots, drills, load tests, file modes, metrics,
    core dumps, versions. Reads only. Exit 1 when a check fails (warnings do not)."""
    from vaultmesh.doctor.checks import evaluate, exit_code
    from vaultmesh.doctor.gather import gather

    findings = evaluate(gather(ctx.dir))
    if as_json:
        echo_json({"checks": [f.to_json() for f in findings]})
    else:
        for f in findings:
            click.echo(f"{MARK[f.status]}  {f.id:<18} {f.message}" + (f"\n      {'':<18} fix: {f.fix}"
                                                                      if f.status != "pass" and f.fix else ""))
        counts = {s: sum(1 for f in findings if f.status == s) for s in ("pass", "warn", "fail")}
        click.echo(f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed")
    sys.exit(exit_code(findings))
