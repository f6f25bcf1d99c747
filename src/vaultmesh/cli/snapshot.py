"""`vaultmesh snapshot save|list|verify`: Raft snapshots with a manifest, verified offline."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from vaultmesh.cli.common import Ctx, current, echo_json, handle_errors, mesh_options, out_console, pass_ctx
from vaultmesh.errors import SnapshotInvalid, report


@click.group("snapshot")
def snapshot() -> None:
    """Raft snapshots of the mesh: take one, list them, verify a file offline."""


@snapshot.command("save")
@click.option("--to", "dest", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write it to (default: snapshots.dir of the mesh file, else <dir>/snapshots).")
@click.option("--json", "as_json", is_flag=True, help="The manifest and path as one JSON document on stdout.")
@mesh_options()
@pass_ctx
@handle_errors
def save(ctx: Ctx, dest: Path | None, as_json: bool) -> None:
    """Take a snapshot now: <stamp>-<index>.snap and its manifest .snap.json (0600), verified before kept."""
    from vaultmesh.lifecycle import mesh as m
    from vaultmesh.snapshot import save as snap

    manifest = snap.save(m.open_mesh(ctx.dir), dest=dest, reason="manual")
    if as_json:
        echo_json({"path": str(manifest.path), **manifest.to_json()})
        return
    canary = (f"canary written (vaultmesh-canary/data/canary version {manifest.canary.version})" if manifest.canary
              else "no canary (this mesh has no vaultmesh-canary/ mount: it was made before them)")
    click.echo(f"{manifest.path}\n  index {manifest.index}, term {manifest.term}, {manifest.size} bytes, "
               f"sha256 {manifest.sha256}\n  {canary}")


@snapshot.command("list")
@click.option("--json", "as_json", is_flag=True, help="The manifests as one JSON document on stdout.")
@mesh_options()
@pass_ctx
@handle_errors
def list_(ctx: Ctx, as_json: bool) -> None:
    """The mesh's snapshots, oldest first: time, age, index, size, sha256 prefix, path."""
    from vaultmesh.lifecycle import mesh as m
    from vaultmesh.snapshot import save as snap
    from vaultmesh.snapshot.archive import LIST_COLUMNS, list_rows

    mesh = m.open_mesh(ctx.dir)
    folder = snap.folder_of(mesh)
    found = snap.listing(mesh, folder)
    if as_json:
        echo_json({"folder": str(folder), "snapshots": [{"path": str(x.path), **x.to_json()} for x in found]})
        return
    if not found:
        click.echo(f"no snapshots in {folder} (take one with `vaultmesh snapshot save`)")
        return
    from rich.table import Table

    table = Table(title=f"{len(found)} snapshot{'s' if len(found) > 1 else ''} of mesh {mesh.spec.name} in {folder}")
    for col in LIST_COLUMNS:
        table.add_column(col, justify="right" if col in ("age", "index", "size") else "left")
    for row in list_rows(found, time.time()):
        table.add_row(*row)
    out_console().print(table)



@snapshot.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The verdict as one JSON document on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@handle_errors
def verify(file: Path, as_json: bool, debug: bool) -> None:
    """Check a snapshot file offline (no mesh needed): gzip, tar, members, SHA256SUMS, meta.json, and its
    manifest (FILE.json) when there is one. Exit 0 and "ok: ..." or exit 1 and the reason."""
    from vaultmesh.snapshot.archive import sidecar_of, verify_file

    current().debug = current().debug or debug
    with_manifest = sidecar_of(file).exists()
    try:
        meta = verify_file(file)
    except SnapshotInvalid as err:
        if not as_json:
            raise
        echo_json({"ok": False, "path": str(file), "check": err.check, "error": str(err)})
        sys.exit(report(err, debug=current().debug))
    if as_json:
        echo_json({"ok": True, "path": str(file), "index": meta.index, "term": meta.term, "size": meta.size,
                   "sha256": meta.sha256, "manifest": with_manifest, "members": list(meta.members),
                   "servers": list(meta.servers)})
        return
    checked = "its manifest matches" if with_manifest else "no manifest beside it: structure and checksums only"
    click.echo(f"ok: {file}: index {meta.index}, term {meta.term}, {meta.size} bytes, sha256 {meta.sha256}; "
               f"{checked}")
