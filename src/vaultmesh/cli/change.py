"""`vaultmesh upgrade`: change a running mesh as a plan of steps, each checked against an invariant."""

from __future__ import annotations

import click

from vaultmesh.cli.common import Ctx, echo_json, err_console, json_option, mesh_command


@click.command("upgrade")
@click.option("--engine", "engine_path", required=True, type=click.Path(dir_okay=False),
              help="The bao (or vault) binary to move every node to.")
@click.option("--allow-downgrade", is_flag=True,
              help="Allow a target older than a node's version (a verified snapshot is taken first to go back to).")
@json_option("What was done: target, each node's version before, the steps, the snapshot, the leaders seen.")
@mesh_command()
def upgrade(ctx: Ctx, engine_path: str, allow_downgrade: bool, as_json: bool) -> None:
    """Move every node to the binary at --engine, one node at a time: a verified snapshot first; the standbys,
    then the leader last after a clean handover to a node on the new version; each node gated on being unsealed,
    a voter, caught up with the leader's commit index and healthy in autopilot for the stabilisation time.
    Refuses (one line) a downgrade, a mesh that tolerates no failure, or an unhealthy autopilot. Interrupted, it
    is resumed by running it again."""
    from vaultmesh.change.upgrade import upgrade as do_upgrade

    console = err_console()
    result = do_upgrade(ctx.dir, engine_path, allow_downgrade=allow_downgrade,
                        progress=lambda line: console.print(f"  {line}", markup=False, soft_wrap=True))
    if as_json:
        echo_json(result.to_json())
        return
    if not result.steps:
        click.echo(f"every node already runs {result.target}; nothing to do")
        return
    click.echo(f"upgraded to {result.target} in {result.seconds:.1f} s: {len(result.steps)} steps, leaders "
               f"{' -> '.join(result.leaders)}; snapshot {result.snapshot}")
