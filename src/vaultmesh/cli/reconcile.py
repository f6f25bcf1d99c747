"""``plan``, ``apply``, ``lint`` and ``policy test``: the mesh as code."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from vaultmesh.cli.common import (
    Ctx,
    echo_json,
    err_console,
    errors_exit_with,
    handle_errors,
    json_option,
    mesh_command,
    pass_ctx,
)
from vaultmesh.errors import EXIT_FAILED

FILE_OPT = click.option("-f", "--file", "file_", type=click.Path(path_type=Path), required=True,
                        help="The mesh file.")


def _load(file_: Path):  # type: ignore[no-untyped-def]
    from vaultmesh.spec.load import load_spec

    spec, text = load_spec(file_)
    return spec, text


def _admin(ctx: Ctx):  # type: ignore[no-untyped-def]
    from vaultmesh.lifecycle import mesh as m

    mesh = m.open_mesh(ctx.dir)
    return mesh, mesh.client(token=m.admin_token(mesh))


class _PlanCommand(click.Command):
    """With ``--detailed-exitcode`` a usage error exits 1 too (2 means "changes" there)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        detailed = "--detailed-exitcode" in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            if not detailed:
                raise
            err.show()
            ctx.exit(EXIT_FAILED)


@click.command(cls=_PlanCommand)
@FILE_OPT
@json_option("The plan as JSON.")
@click.option("--prune", is_flag=True, help="Include deleting what the file no longer declares.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0: no changes, 2: changes, 1: error.")
@click.option("-v", "--verbose", is_flag=True, help="Also list unchanged objects.")
@mesh_command()
def plan(ctx: Ctx, file_: Path, as_json: bool, prune: bool, detailed_exitcode: bool, verbose: bool) -> None:
    """Show what apply would change, resource by resource; secrets redacted."""
    from vaultmesh.reconcile.apply import make_plan
    from vaultmesh.reconcile.render import render_json, render_text

    if detailed_exitcode:  # 2 means "changes" there: every error is 1
        errors_exit_with(EXIT_FAILED)
    spec, _ = _load(file_)
    mesh, client = _admin(ctx)
    the_plan, _ = make_plan(mesh, client, spec, base_dir=file_.parent.absolute())
    if as_json:
        doc = json.loads(render_json(the_plan, prune=prune))
        doc["checksum"] = the_plan.checksum(prune=prune)
        click.echo(json.dumps(doc, indent=2))
    else:
        # render_text starts with the summary and the checksum
        click.echo(render_text(the_plan, prune=prune, verbose=verbose).rstrip())
    if detailed_exitcode and the_plan.executable(prune=prune):
        sys.exit(2)


@click.command()
@FILE_OPT
@click.option("--prune", is_flag=True, help="Also delete what the file no longer declares (shown by plan).")
@click.option("--force", is_flag=True, help="Allow deleting namespaces, secrets engines, or many objects.")
@click.option("--checksum", default=None, help="Apply only if the plan still has this checksum.")
@json_option("What was done, as one JSON document on stdout.")
@mesh_command()
def apply(ctx: Ctx, file_: Path, prune: bool, force: bool, checksum: str | None, as_json: bool) -> None:
    """Converge the mesh to the file; shows each action on stderr. A second run changes nothing.

    Exit 3 when the plan deletes a namespace, a secrets engine or more than 3 objects and --force is not
    given (nothing was done)."""
    from vaultmesh.reconcile.apply import apply as do_apply
    from vaultmesh.reconcile.render import summary

    spec, _ = _load(file_)
    mesh, client = _admin(ctx)
    console = err_console()
    result = do_apply(mesh, client, spec, base_dir=file_.parent.absolute(), prune=prune, force=force,
                      reviewed_checksum=checksum, progress=lambda msg: console.print(f"  {msg}", markup=False))
    if as_json:
        echo_json({"changed": bool(result.performed or result.audit_changed),
                   "performed": [a.to_dict() for a in result.performed],
                   "audit_changed": result.audit_changed, "prune": prune,
                   "checksum": result.plan.checksum(prune=prune), "summary": summary(result.plan, prune=prune)})
    elif not result.performed and not result.audit_changed:
        click.echo("No changes: the mesh matches the file.")
    else:
        click.echo(f"Applied {len(result.performed)} change(s). " + summary(result.plan, prune=prune))


@click.command()
@FILE_OPT
@json_option("The warnings as one JSON document on stdout.")
@pass_ctx
@handle_errors
def lint(ctx: Ctx, file_: Path, as_json: bool) -> None:
    """Least-privilege and TTL warnings; exit 1 when there are any."""
    from vaultmesh.reconcile.lint import lint as do_lint
    from vaultmesh.spec.load import line_index

    spec, text = _load(file_)
    warnings = do_lint(spec, lines=line_index(text))
    if as_json:
        echo_json({"file": str(file_), "count": len(warnings),
                   "warnings": [{"line": w.line, "field": w.where, "code": w.code, "message": w.message}
                                for w in warnings]})
        sys.exit(1 if warnings else 0)
    for w in warnings:
        click.echo(f"{file_}:{w}")
    click.echo(f"{len(warnings)} warning(s)" if warnings else "no warnings")
    sys.exit(1 if warnings else 0)


@click.group()
def policy() -> None:
    """Policy assertions: the mesh file's expect blocks."""


@policy.command("test")
@FILE_OPT
@click.option("--live", is_flag=True, help="Evaluate against the live mesh instead of a throwaway server.")
@json_option("The results as one JSON document on stdout.")
@mesh_command(engine=True)
def policy_test(ctx: Ctx, file_: Path, live: bool, as_json: bool) -> None:
    """Evaluate the file's expectations for real: by default in a throwaway in-memory OpenBao."""
    from vaultmesh.reconcile.policytest import run_policy_tests

    spec, _ = _load(file_)
    report = run_policy_tests(spec, base_dir=file_.parent.absolute(), live_dir=ctx.dir if live else None,
                              engine=ctx.engine)
    if as_json:
        echo_json(_report_json(report))
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(0 if report.ok else 1)


def _report_json(report: Any) -> dict[str, Any]:
    """``policy test --json``: every assertion with what the server said about each probe."""
    results = [{"subject": r.subject, "expect": "can" if r.expected else "cannot", "capability": r.capability,
                "path": r.path, "ok": r.ok, "found": {probe: list(caps) for probe, caps in r.found},
                "error": r.error} for r in report.results]
    return {"ok": report.ok, "where": report.where, "passed": sum(r["ok"] for r in results),
            "failed": sum(not r["ok"] for r in results), "results": results}
