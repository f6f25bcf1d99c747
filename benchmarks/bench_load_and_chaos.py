"""The figures of docs/load-and-chaos.md: rollouts of 200 and 1,000 workloads beside the raw ceiling, and every
fault under load with its recovery time and errors.

Usage: python benchmarks/bench_load_and_chaos.py [--counts 200,1000] [--skip-chaos] [--out DIR]
Makes its own meshes in a temporary directory (a network-namespace one for the partition, when root and
iproute2 allow) and stops them afterwards. Writes each run's JSON and HTML plot to --out (default: a temp dir).
Prints Markdown tables. Takes ~5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from vaultmesh.bench.model import BenchConfig
from vaultmesh.bench.plot import render_html
from vaultmesh.bench.report import error_total, overall, to_json
from vaultmesh.bench.runner import bench_mesh
from vaultmesh.bench.stats import summarize
from vaultmesh.chaos.fault import Fault
from vaultmesh.chaos.run import render_chaos, run_chaos
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import down, up
from vaultmesh.runtime import netns
from vaultmesh.spec.load import parse_spec


def save(out: Path, name: str, result: object, title: str) -> None:
    (out / f"{name}.json").write_text(json.dumps(to_json(result)))  # type: ignore[arg-type]
    (out / f"{name}.html").write_text(render_html(result, title=title))  # type: ignore[arg-type]


def rollouts(mesh: m.Mesh, counts: list[int], out: Path) -> list[str]:
    rows = ["| workloads | client | ok | errors | workloads/s | login-to-secrets p50 / p99 ms | from schedule "
            "p50 / p99 ms | tokens, leases back at baseline |", "|---|---|---|---|---|---|---|---|"]
    for n in counts:
        for raw in (False, True):
            cfg = BenchConfig(scenario="rollout", count=n, window=0.0, hold=2.0, concurrency=32, raw=raw)
            r = bench_mesh(mesh, cfg)
            save(out, f"rollout-{n}{'-raw' if raw else ''}", r, f"rollout of {n}{' (raw)' if raw else ''}")
            o = overall(r)
            s = summarize("s", [x for x in r.samples if x.phase == "login-to-secrets"])
            rows.append(f"| {n} | {'raw ceiling' if raw else 'workload path'} | {o.successes}/{o.attempts} | "
                        f"{error_total(r)} | {o.throughput:.0f} | {s.p50 * 1000:.0f} / {s.p99 * 1000:.0f} | "
                        f"{o.p50 * 1000:.0f} / {o.p99 * 1000:.0f} | "
                        f"{'yes' if r.returned else 'NO'} |")
            print(rows[-1], flush=True)
    return rows


def chaos(mesh: m.Mesh, plans: list[Fault], load: BenchConfig, out: Path) -> list[str]:
    rows = ["| fault | writes back after | longest write gap | client-visible errors | acked writes lost | "
            "minority acks | healed | healthy after lift |", "|---|---|---|---|---|---|---|---|"]
    for plan in plans:
        r = run_chaos(mesh, plan, load)
        print(render_chaos(r), flush=True)
        save(out, f"chaos-{plan.fault}{'-' + plan.signal if plan.fault == 'stop-zone' else ''}", r.bench,
             f"{plan.fault} under steady workloads")
        rec = r.recovery
        back = "never" if rec is None or rec.recovery_s is None else f"{rec.recovery_s:.2f} s"
        errs = ", ".join(f"{k} {v}" for k, v in overall(r.bench).errors.items()) or "0"
        name = plan.fault + (f" ({plan.signal.upper()})" if plan.fault == "stop-zone" else "")
        rows.append(f"| {name} | {back} | {rec.outage_s if rec else 0:.2f} s | {errs} | {len(r.lost)} of "
                    f"{r.acked} | {r.minority_acked if r.minority_acked is not None else '-'} | {r.heal_how} | "
                    f"{'NO' if r.healthy_after_s is None else f'{r.healthy_after_s:.1f} s'} |")
        print(rows[-1], flush=True)
        time.sleep(2)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="200,1000")
    ap.add_argument("--skip-chaos", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vaultmesh-figures-"))
    out = args.out or tmp / "out"
    out.mkdir(parents=True, exist_ok=True)
    roots: list[Path] = []
    try:
        root = tmp / "local"
        roots.append(root)
        mesh = up(root, None, "").mesh
        tables = rollouts(mesh, [int(c) for c in args.counts.split(",") if c], out)
        if not args.skip_chaos:
            load = BenchConfig(scenario="steady", op="workload", rate=20.0, duration=12.0, hold=1.0, concurrency=32)
            plans = [Fault("kill-leader", at=4.0), Fault("kill-node", at=4.0),
                     Fault("stop-zone", at=4.0, lift_after=5.0, signal="stop"),
                     Fault("lose-quorum", at=4.0, lift_after=4.0)]
            tables += ["", *chaos(mesh, plans, load, out)]
            why = netns.unavailable()
            if why:
                tables.append(f"\npartition-zone skipped: {why}")
            else:
                nroot = tmp / "netns"
                roots.append(nroot)
                text = "runtime: netns\n"
                nmesh = up(nroot, parse_spec(text, source="bench"), text).mesh
                tables += chaos(nmesh, [Fault("partition-zone", at=4.0, lift_after=5.0)], load, out)[2:]
        print("\n" + "\n".join(tables))
        print(f"\nraw results and plots: {out}")
    finally:
        for r in roots:
            if m.exists(r):
                layout = m.open_mesh(r).layout
                down(r)
                netns.remove(layout)
        if args.out is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
