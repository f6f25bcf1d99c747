"""Cross-check of the raw ceiling: `wrk` and `vaultmesh bench kv-read --raw` side by side, same mesh, same request.

Both send GET /v1/vaultmesh-bench-kv/data/app/config with a bench workload's token to the entry, over kept-alive TLS
connections, for the same duration and connection count; the workload path (EngineClient) runs the same load too.
If --raw reaches what wrk reaches, the bench's ceiling measures the mesh, not the client.

Usage: python benchmarks/bench_ceiling.py [--dir STATE_DIR] [--duration 10] [--connections 32]
Without --dir a fresh 3-node mesh is made in a temporary directory and stopped afterwards.
Needs `wrk` (Debian package wrk).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from vaultmesh.api.client import EngineClient
from vaultmesh.bench.model import BenchConfig
from vaultmesh.bench.ops import identity_token
from vaultmesh.bench.report import overall
from vaultmesh.bench.runner import bench_mesh
from vaultmesh.bench.targets import load_signer, setup_targets
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import down, up

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def seconds(text: str) -> float:
    num, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(num) * UNITS[unit]


def run_wrk(url: str, token: str, duration: float, connections: int) -> dict[str, float]:
    threads = min(2, connections)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--latency",
                          "-H", f"X-Vault-Token: {token}", url], capture_output=True, text=True,
                         timeout=duration + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50": seconds(lat["50"]), "p90": seconds(lat["90"]), "p99": seconds(lat["99"]),
            "errors": float(non2xx.group(1)) if non2xx else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    tmp = None
    root = args.dir
    if root is None:
        tmp = tempfile.mkdtemp(prefix="vaultmesh-ceiling-")
        root = Path(tmp) / "state"
        up(root, None, "")
    try:
        mesh = m.open_mesh(root)
        targets = setup_targets(mesh)
        client = EngineClient([targets.entry], ca_file=targets.ca_file)
        auth = client.login(targets.auth_mount, {"role": targets.role,
                                                  "jwt": identity_token(load_signer(targets), targets, 0)})
        token = str(auth["client_token"])
        url = f"{targets.entry}/v1/{targets.kv_read_path}"
        rows = [("wrk", run_wrk(url, token, args.duration, args.connections))]
        for label, raw in (("vaultmesh bench --raw", True), ("vaultmesh bench (workload path)", False)):
            cfg = BenchConfig(scenario="kv-read", count=0, duration=args.duration, concurrency=args.connections,
                              raw=raw)
            o = overall(bench_mesh(mesh, cfg, targets=targets))
            rows.append((label, {"rps": o.throughput, "p50": o.p50, "p90": o.p90, "p99": o.p99,
                                 "errors": float(o.error_count)}))
        client.write("auth/token/revoke-self", {}, token=token)
        print(f"KV v2 read through the entry, {args.connections} connections, {args.duration:g} s each\n")
        print("| client | req/s | p50 ms | p90 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|")
        for label, r in rows:
            print(f"| {label} | {r['rps']:.0f} | {r['p50'] * 1000:.1f} | {r['p90'] * 1000:.1f} | "
                  f"{r['p99'] * 1000:.1f} | {r['errors']:.0f} |")
        wrk_rps = rows[0][1]["rps"]
        print(f"\nraw ceiling / wrk: {rows[1][1]['rps'] / wrk_rps:.0%}; workload path / wrk: "
              f"{rows[2][1]['rps'] / wrk_rps:.0%}")
    finally:
        if tmp:
            down(root)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
