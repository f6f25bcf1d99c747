"""`vaultmesh upgrade`, `vaultmesh scale`: change a running mesh as a plan of steps, each checked against an invariant.
Importing it gives ``up -f`` its way to change the node count (``lifecycle.up.RESCALE``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from vaultmesh.cli.common import Ctx, echo_json, err_console, json_option, mesh_command
from vaultmesh.lifecycle.mesh import Mesh, open_mesh
from vaultmesh.lifecycle.up import RESCALE


def progress() -> Callable[[str], None]:
    """A change's progress lines, indented, on stderr."""
    console = err_console()
    return lambda line: console.print(f"  {line}", markup=False, soft_wrap=True)


def report(result: Any, as_json: bool, *, nothing: str, done: str) -> None:
    """A change's outcome: its JSON, or one line (``nothing`` when it had no step to take)."""
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(done if result.steps else nothing)


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

    result = do_upgrade(ctx.dir, engine_path, allow_downgrade=allow_downgrade, progress=progress())
    report(result, as_json, nothing=f"every node already runs {result.target}; nothing to do",
           done=f"upgraded to {result.target} in {result.seconds:.1f} s: {len(result.steps)} steps, leaders "
                f"{' -> '.join(result.leaders)}; snapshot {result.snapshot}")


@click.command("scale")
@click.option("--nodes", "nodes", required=True, type=int, help="The node count to reach: 3, 5 or 7.")
@json_option("What was done: the node count before and after, the steps, the leaders seen, the voters at the end.")
@mesh_command()
def scale(ctx: Ctx, nodes: int, as_json: bool) -> None:
    """Add or remove nodes one at a time until the mesh has --nodes voters: a new node starts, joins Raft as a
    non-voter and is promoted by autopilot once caught up and stable; a node that goes (highest first) has the
    leader stepped away from it, is removed from Raft, stopped and its folder deleted. Zones stay round-robin,
    the voters never drop below a quorum of the old or new configuration, every config and the entry's backends
    follow; the mesh file's nodes line says --nodes when done. Refuses (one line) an even count, a mesh that
    tolerates no failure, or an unhealthy autopilot. Interrupted, it is resumed by running it again."""
    from vaultmesh.change.scale import scale as do_scale

    result = do_scale(ctx.dir, nodes, progress=progress())
    report(result, as_json, nothing=f"the mesh has {result.nodes} voters already; nothing to do",
           done=f"scaled {result.before} -> {result.nodes} nodes in {result.seconds:.1f} s: {len(result.steps)} "
                f"steps; voters {', '.join(result.voters)}; leaders {' -> '.join(result.leaders)}")


def _rescale(mesh: Mesh, n: int, progress: Callable[[str], None]) -> Mesh:
    """``up -f`` with another ``nodes``: the same path as ``vaultmesh scale`` (the caller holds the lock)."""
    from vaultmesh.change.scale import scale_locked

    scale_locked(mesh, n, progress=progress)
    return open_mesh(mesh.paths.root)


RESCALE.append(_rescale)
