"""Restore drill RTO and RPO: a 3-node mesh with 10,000 KV entries (and, with ``--mb N``, about N MB more in large
values), one snapshot, then ``vaultmesh drill`` on it (a scratch mesh in network namespaces where the machine
allows it). Prints the snapshot's time and size, then per run the RTO, each phase of the drill (create, up:
node 1 alone, restore: snapshot-force including OpenBao's fixed 5 s pause, restart: node 1 restarted and the
others joined until healthy, checks) and the RPO (the snapshot's age when the drill starts).

Usage: python benchmarks/drill.py [--entries 10000] [--mb 0] [--runs 1] [--no-isolation]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from vaultmesh.dr.drill import drill
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.teardown import destroy
from vaultmesh.lifecycle.up import up
from vaultmesh.runtime import netns
from vaultmesh.snapshot.save import save
from vaultmesh.spec.load import parse_spec

SPEC = "snapshots:\n  every: null\nkeeper:\n  enabled: false\n"
BLOB = 512 * 1024
"""Bytes of one large value (``--mb``): well under OpenBao's 32 MB request limit."""


def fill(mesh: m.Mesh, entries: int, mb: int) -> None:
    client = mesh.client(token=m.admin_token(mesh))
    client.write("sys/mounts/bench-kv", {"type": "kv", "options": {"version": "2"}})
    time.sleep(1.0)  # a new KV v2 mount upgrades itself for a moment

    def put(i: int) -> None:
        client.write(f"bench-kv/data/entry-{i}", {"data": {"value": f"value-{i}", "pad": "x" * 64}})

    def blob(i: int) -> None:
        client.write(f"bench-kv/data/blob-{i}", {"data": {"value": os.urandom(BLOB * 3 // 4).hex()[:BLOB]}})

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(entries)))
        list(pool.map(blob, range(mb * 1_000_000 // BLOB)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--mb", type=int, default=0, help="about this many MB more, in 512 KB values")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-isolation", action="store_true")
    args = ap.parse_args()
    isolation = not args.no_isolation
    if isolation and netns.unavailable():
        raise SystemExit(f"no isolation possible here ({netns.unavailable()}): pass --no-isolation")
    base = Path(tempfile.mkdtemp(prefix="vaultmesh-drill-bench-"))
    root = base / "state"
    try:
        mesh = up(root, parse_spec(SPEC, source="bench"), SPEC).mesh
        t = time.monotonic()
        fill(mesh, args.entries, args.mb)
        print(f"wrote {args.entries} KV entries" + (f" and ~{args.mb} MB of values" if args.mb else "")
              + f" in {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        manifest = save(mesh)
        print(f"snapshot: {manifest.size / 1e6:.1f} MB in {time.monotonic() - t:.2f} s (index {manifest.index})")
        rtos = []
        for run in range(args.runs):
            report = drill(root, snapshot=manifest.path, isolation=isolation)
            if not report.ok:
                for line in report.lines():
                    print(line)
                raise SystemExit("the drill failed")
            rtos.append(report.rto_s or 0.0)
            phases = ", ".join(f"{k} {v:.2f} s" for k, v in report.phases.items())
            print(f"run {run + 1}: RTO {report.rto_s:.2f} s ({phases}), RPO {report.rpo_s:.1f} s, "
                  f"isolation {'netns' if isolation else 'none'}")
        if args.runs > 1:
            print(f"RTO median {statistics.median(rtos):.2f} s, min {min(rtos):.2f} s, max {max(rtos):.2f} s")
    finally:
        destroy(root, warn=lambda _: None)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
