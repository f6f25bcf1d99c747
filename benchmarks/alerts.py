"""Which alert fires, and how soon, for each fault of `vaultmesh chaos` (and a SIGSTOPped standby), on a fresh
3-node mesh whose keeper runs Prometheus with the mesh's rules (`monitoring: auto`; the `prometheus` binary
must be installed). Each fault is held for --hold seconds under a light kv-read load; Prometheus's
`/api/v1/alerts` is polled every second (HTTPS, the mesh CA) and the first time each alert is *firing* is
printed, counted from the injection. partition-zone needs network namespaces (root and iproute2).

Usage: python benchmarks/alerts.py [--faults kill-leader,kill-node,...] [--hold 70] [--quiet 0]

--quiet N: also leave one more fresh mesh alone for N seconds and print whatever fires (the aim: nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.status import monitoring_json, status
from vaultmesh.lifecycle.teardown import destroy
from vaultmesh.lifecycle.up import up
from vaultmesh.runtime import netns
from vaultmesh.spec.load import parse_spec
from vaultmesh.waiting import wait_until

FAULTS = ("kill-leader", "kill-node", "stop-zone", "partition-zone", "lose-quorum", "sigstop-standby")
IGNORED = {"VaultmeshSnapshotMissing"}
"""Alerts a fresh mesh may show before its first scheduled snapshot (pending for 30 min, never firing here)."""


def get(url: str, ca: str) -> dict[str, object]:
    ctx = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        return json.load(resp)


def firing(url: str, ca: str) -> set[str]:
    doc = get(f"{url}/api/v1/alerts", ca)
    return {a["labels"]["alertname"] for a in doc["data"]["alerts"]  # type: ignore[index]
            if a["state"] == "firing" and a["labels"]["alertname"] not in IGNORED}


def fresh_mesh(base: Path, name: str, runtime: str) -> tuple[Path, str, str]:
    root = base / name
    text = f"monitoring: auto\nsnapshots:\n  every: null\nruntime: {runtime}\n"
    mesh = up(root, parse_spec(text, source="bench"), text).mesh
    url = wait_until(lambda: monitoring_json(m.open_mesh(root))["prometheus_url"], timeout=30)
    if not url:
        raise SystemExit("the keeper started no Prometheus: is the prometheus binary installed?")
    ca = str(mesh.paths.ca_cert)

    def scraped() -> bool:
        try:
            targets = get(f"{url}/api/v1/targets", ca)["data"]["activeTargets"]  # type: ignore[index]
        except OSError:  # not listening yet
            return False
        return len(targets) >= 5 and all(t["health"] == "up" for t in targets)

    if not wait_until(scraped, timeout=60, interval=1):
        destroy(root, warn=lambda _: None)
        raise SystemExit(f"Prometheus of {root} did not scrape every target within 60 s")
    return root, url, ca


def watch(url: str, ca: str, seconds: float, t0: float) -> dict[str, float]:
    first: dict[str, float] = {}
    end = t0 + seconds
    while time.monotonic() < end:
        try:
            for name in firing(url, ca) - set(first):
                first[name] = time.monotonic() - t0
        except OSError:
            pass
        time.sleep(1.0)
    return first


def run_fault(base: Path, fault: str, hold: float) -> dict[str, float]:
    runtime = "netns" if fault == "partition-zone" else "local"
    root, url, ca = fresh_mesh(base, fault, runtime)
    try:
        if fault == "sigstop-standby":
            _, view, _ = status(root)
            node = next(n for n in view.nodes if n.pid and not n.leader)
            assert node.pid is not None
            os.kill(node.pid, signal.SIGSTOP)
            try:
                return watch(url, ca, hold, time.monotonic())
            finally:
                os.kill(node.pid, signal.SIGCONT)
        at = 3.0
        proc = subprocess.Popen([sys.executable, "-m", "vaultmesh.cli.main", "--dir", str(root), "chaos", fault,
                                 "--scenario", "kv-read", "--rate", "5", "--duration", str(hold + 5), "--at",
                                 str(at), "--lift-after", str(hold)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            time.sleep(at)
            return watch(url, ca, hold, time.monotonic())
        finally:
            proc.wait(timeout=hold + 120)
    finally:
        destroy(root, warn=lambda _: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--hold", type=float, default=70.0)
    ap.add_argument("--quiet", type=float, default=0.0)
    args = ap.parse_args()
    if shutil.which("prometheus") is None:
        raise SystemExit("install prometheus first (Debian package prometheus)")
    base = Path(tempfile.mkdtemp(prefix="vaultmesh-alerts-"))
    try:
        print(f"{'fault':<18} first firing alerts (seconds after the injection)")
        for fault in filter(None, args.faults.split(",")):
            if fault == "partition-zone" and netns.unavailable():
                print(f"{fault:<18} skipped: {netns.unavailable()}")
                continue
            first = run_fault(base, fault, args.hold)
            shown = ", ".join(f"{name} {s:.0f} s" for name, s in sorted(first.items(), key=lambda kv: kv[1]))
            print(f"{fault:<18} {shown or 'NONE within the hold'}", flush=True)
        if args.quiet:
            root, url, ca = fresh_mesh(base, "quiet", "local")
            try:
                first = watch(url, ca, args.quiet, time.monotonic())
                print(f"{'quiet mesh':<18} {', '.join(sorted(first)) or 'nothing fired'} in {args.quiet:.0f} s")
            finally:
                destroy(root, warn=lambda _: None)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
