"""Which snapshots a ``keep`` policy removes. Pure: snapshots, the policy and ``now`` in; the ones to delete out.

``snapshots.keep`` in the mesh file: ``count`` (keep the newest N) and ``age`` (delete what is older); either may
be null. The newest snapshot is always kept, whatever its age: a mesh whose schedule stopped for a week must not
be left with no snapshot at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from vaultmesh.snapshot.archive import Manifest
from vaultmesh.spec.models import RetentionSpec

Snapshot = TypeVar("Snapshot", Manifest, tuple[Path, float])
"""A snapshot as retention sees it: its manifest, or (path, Unix time) for a file known without one."""


def _when(item: Manifest | tuple[Path, float]) -> tuple[float, str]:
    """Sort key: the time, then the path (two snapshots of one second still have one order)."""
    if isinstance(item, Manifest):
        return item.time, str(item.path or "")
    return float(item[1]), str(item[0])


def due(snapshots: Sequence[Snapshot], keep: RetentionSpec, now: float) -> list[Snapshot]:
    """The snapshots ``keep`` deletes, oldest first: all but the newest ``keep.count``, and every one older than
    ``keep.age`` seconds at ``now``; never the newest one."""
    newest_first = sorted(snapshots, key=_when, reverse=True)
    out = []
    for rank, item in enumerate(newest_first):
        if rank == 0:
            continue
        too_many = keep.count is not None and rank >= keep.count
        too_old = keep.age is not None and now - _when(item)[0] > keep.age
        if too_many or too_old:
            out.append(item)
    return out[::-1]
