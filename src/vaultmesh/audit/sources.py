"""Where a mesh's audit records are on disk: each node's default device (``audit.log`` in its folder) and every
file device ``apply`` declared (a path relative to the node's folder). Socket and syslog devices stream
elsewhere: their receiver holds the same records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vaultmesh.audit.report import Event, parse_line
from vaultmesh.lifecycle import mesh as m
from vaultmesh.render.node import DEFAULT_AUDIT


def audit_files(mesh: m.Mesh) -> list[tuple[str, Path]]:
    """(node name, file) for every audit file of every node that exists."""
    devices = [DEFAULT_AUDIT, *m.declared_audit(mesh.paths.root)]
    declared = sorted({str(d.options["file_path"]) for d in devices if d.type == "file" and d.options.get("file_path")})
    out = []
    for node in mesh.layout.nodes:
        for rel in declared:
            path = node.dir / rel
            if path.is_file():
                out.append((node.name, path))
    return out


def read_events(files: list[tuple[str, Path]]) -> Iterator[Event]:
    """The response events of ``files``, line by line (an audit file can be gigabytes)."""
    for node, path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                event = parse_line(line, node)
                if event is not None:
                    yield event
