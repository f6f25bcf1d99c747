"""Renewing the leaf certificates of a 3-node mesh under a steady write load: `vaultmesh certs rotate` side by side
with the manual way (issue each node a new certificate from the mesh CA, then restart each node in turn).

Both start from a fresh mesh (keeper off) and run the same load as benchmarks/upgrade.py: ~20 KV writes/s through
vaultmesh's retrying EngineClient (5 s deadline per request), every acknowledged write read back, a sampler of the
active node (10/s). Printed per procedure: failed requests, lost writes, leadership changes, the slowest write,
duration until every node serves its new certificate and the mesh is healthy.

`vaultmesh certs rotate` also renews the identity issuer's certificate (the manual way here does the nodes only)
and loads each with SIGHUP; the manual way restarts each node (stop, start: it unseals again on start), with no
gate between nodes, as a runbook without vaultmesh would.

Usage: python benchmarks/certs_rotate.py [--rounds 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from upgrade import Load, healthy_when, print_rows  # benchmarks/upgrade.py: the same load and table

from vaultmesh import pki
from vaultmesh.certs.probe import served_or_why
from vaultmesh.certs.rotate import rotate
from vaultmesh.fsutil import write_atomic
from vaultmesh.layout import NodeLayout
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import down, up
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import resolve_engine, stop_processes
from vaultmesh.spec.load import parse_spec

SPEC = "keeper:\n  enabled: false\nmonitoring: none\n"


def serial(mesh: m.Mesh, node: NodeLayout) -> str | None:
    """The serial a node's API listener serves (None: it does not answer)."""
    facts, _ = served_or_why(f"{node.host}:{node.api_port}", mesh.paths.ca_cert)
    return facts.serial if facts else None


def manual(root: Path) -> None:
    """New certificate and key for each node from the mesh CA, then each node restarted in turn, no gate."""
    mesh = m.open_mesh(root)
    ca = pki.CertPair(mesh.paths.ca_cert.read_bytes(), mesh.paths.ca_key.read_bytes())
    engine = resolve_engine(mesh.engine).path
    for node in mesh.layout.nodes:
        dns, ips = pki.node_cert_names(node.name)
        pair = pki.issue_server_cert(ca, node.name, dns_names=dns, ip_addresses=ips, now=dt.datetime.now(dt.UTC),
                                     days=mesh.spec.tls.cert_days)
        write_atomic(node.key_file, pair.key_pem)
        write_atomic(node.cert_file, pair.cert_pem, mode=0o644)
    for node in mesh.layout.nodes:
        stop_processes([processes.node_process(node).pid()], timeout=processes.STOP_TIMEOUT)
        processes.wait_ports_free(node)
        processes.start_node(node, engine)


def settled(root: Path, old: dict[str, str | None], timeout: float = 120.0) -> bool:
    mesh = m.open_mesh(root)
    return healthy_when(root, lambda _: all(serial(mesh, n) not in (None, old[n.name]) for n in mesh.layout.nodes),
                        timeout)


def one(procedure: str) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="vm-bench-certs-"))
    root = work / "state"
    try:
        result = up(root, parse_spec(SPEC, source="bench"), SPEC)
        mesh = result.mesh
        old = {n.name: serial(mesh, n) for n in mesh.layout.nodes}
        load = Load(mesh)
        load.start()
        t0 = time.monotonic()
        if procedure == "vaultmesh certs rotate":
            with m.locked(root):
                rotate(m.open_mesh(root))
        else:
            manual(root)
        return load.figures(t0, lambda: settled(root, old), "new serials")
    finally:
        down(root)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    rows: dict[str, list[dict[str, object]]] = {}
    for _ in range(args.rounds):
        for procedure in ("vaultmesh certs rotate", "manual (re-issue, restart each)"):
            rows.setdefault(procedure, []).append(one(procedure))
    print_rows("leaf certificates of 3 nodes renewed, ~20 writes/s", rows, args.rounds)


if __name__ == "__main__":
    main()
