"""Scaling a 3-node mesh to 5 under a steady write load: `vaultmesh scale --nodes 5` side by side with the manual
way (lay out and start each new node with retry_join, wait until it joined and autopilot promoted it, the next).

Both start from a fresh mesh (keeper off, so nothing but the procedure touches the nodes) and run the same load as
benchmarks/upgrade.py: ~20 KV writes/s through vaultmesh's retrying EngineClient (5 s deadline per request), every
acknowledged write read back at the end, a sampler of the active node (10/s). Printed per procedure: failed
requests, lost acknowledged writes, leadership changes, the slowest write, duration until 5 healthy voters.

The manual way gets its configs from vaultmesh (``lifecycle.mesh.resize``: ports, a certificate, retry_join to
every peer), as an operator would write them; what it leaves out is what vaultmesh adds: the restart of a joined
node so it unseals at once, the entry's reload, the gates, the resumable plan.

``--sizes``: `vaultmesh scale` on one mesh 3 -> 5 -> 3 -> 7 -> 3 (no load): each change's time and leadership
changes.

Usage: python benchmarks/scale.py [--rounds 1] [--sizes]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from upgrade import Load, healthy_when, print_rows  # benchmarks/upgrade.py: the same load and table, side by side

from vaultmesh.change.scale import scale
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import down, up
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import resolve_engine
from vaultmesh.spec.load import parse_spec

SPEC = "keeper:\n  enabled: false\nmonitoring: none\n"


def voters(mesh: m.Mesh) -> set[str]:
    client = mesh.client(token=m.admin_token(mesh))
    conf = client.read("sys/storage/raft/configuration") or {}
    servers = ((conf.get("data") or {}).get("config") or {}).get("servers") or []
    return {s["node_id"] for s in servers if s.get("voter")}


def manual(root: Path, n: int) -> None:
    """Each new node: its config (vaultmesh renders it), start it, wait until it is a voter; then the next."""
    mesh = m.open_mesh(root)
    engine = resolve_engine(mesh.engine).path
    for count in range(len(mesh.layout.nodes) + 1, n + 1):
        mesh = m.resize(mesh, count)
        node = mesh.layout.nodes[-1]
        processes.start_node(node, engine)
        end = time.monotonic() + 120
        while node.name not in voters(mesh):
            if time.monotonic() > end:
                raise SystemExit(f"{node.name} was not promoted within 120 s")
            time.sleep(0.2)


def settled(root: Path, n: int, timeout: float = 120.0) -> bool:
    return healthy_when(root, lambda view: len(view.nodes) == n and all(x.voter for x in view.nodes), timeout)


def one(procedure: str) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="vm-bench-scale-"))
    root = work / "state"
    try:
        result = up(root, parse_spec(SPEC, source="bench"), SPEC)
        load = Load(result.mesh)
        load.start()
        t0 = time.monotonic()
        if procedure == "vaultmesh scale":
            scale(root, 5)
        else:
            manual(root, 5)
        return load.figures(t0, lambda: settled(root, 5), "5 voters")
    finally:
        down(root)
        shutil.rmtree(work, ignore_errors=True)


def sizes() -> None:
    work = Path(tempfile.mkdtemp(prefix="vm-bench-scale-"))
    root = work / "state"
    try:
        up(root, parse_spec(SPEC, source="bench"), SPEC)
        print("change (loopback, 2 cores)   time     leadership changes")
        before = 3
        for n in (5, 3, 7, 3):
            r = scale(root, n)
            print(f"{before} -> {n}".ljust(29) + f"{r.seconds:5.1f} s  {max(0, len(r.leaders) - 1)}")
            before = n
    finally:
        down(root)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sizes", action="store_true", help="time 3 -> 5 -> 3 -> 7 -> 3 with `vaultmesh scale`")
    args = ap.parse_args()
    if args.sizes:
        sizes()
        return
    rows: dict[str, list[dict[str, object]]] = {}
    for _ in range(args.rounds):
        for procedure in ("vaultmesh scale", "manual (start, wait, next)"):
            rows.setdefault(procedure, []).append(one(procedure))
    print_rows("scale 3 -> 5 nodes, ~20 writes/s", rows, args.rounds)


if __name__ == "__main__":
    main()
