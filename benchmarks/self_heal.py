"""Self-heal: SIGKILL a node and time until the mesh is healthy again (every node unsealed, a voter, autopilot
healthy), with no command run. Side by side with the alternative: no keeper (`keeper: {heal: false}`) and a
human who runs `vaultmesh up` the moment the node dies (the best case of someone at the keyboard).

For each kill it prints: seconds until the node's new process exists (detection + start), until a leader
serves again, until the mesh is healthy.

Usage: python benchmarks/self_heal.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

from vaultmesh.lifecycle.status import status
from vaultmesh.lifecycle.up import down, up
from vaultmesh.runtime import processes
from vaultmesh.spec.load import parse_spec


def leader_of(root: Path) -> str | None:
    _, view, _ = status(root)
    return view.leader.name if view.leader else None


def kill_and_time(root: Path, pick: str, *, heal_by_hand: bool) -> tuple[float, float, float]:
    mesh, view, _ = status(root)
    leader = view.leader.name if view.leader else None
    name = leader if pick == "leader" else next(n.name for n in view.nodes if n.name != leader)
    node = mesh.layout.node(name)
    pid = processes.node_process(node).pid()
    assert pid is not None
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    if heal_by_hand:
        while processes.node_process(node).pid() == pid:
            time.sleep(0.01)
        up(root, None, "")
    started = leads = healthy = None
    while healthy is None:
        now = time.monotonic() - t0
        new = processes.node_process(node).pid()
        if started is None and new is not None and new != pid:
            started = now
        _, view, _ = status(root)
        if leads is None and view.leader is not None:
            leads = now
        if started is not None and view.healthy:
            healthy = now
        if now > 60:
            raise TimeoutError(f"{name} not healthy after 60 s")
        time.sleep(0.05)
    return started or 0.0, leads or 0.0, healthy


def run(text: str, rounds: int, heal_by_hand: bool) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="vm-heal-")) / "state"
    out: dict[str, list[float]] = {"standby": [], "leader": []}
    try:
        up(root, parse_spec(text), text)
        for _ in range(rounds):
            for pick in ("standby", "leader"):
                started, leads, healthy = kill_and_time(root, pick, heal_by_hand=heal_by_hand)
                print(f"  {'by hand' if heal_by_hand else 'keeper '} {pick:7}: process back {started:5.2f} s, "
                      f"leader serving {leads:5.2f} s, healthy {healthy:5.2f} s", flush=True)
                out[pick].append(healthy)
                time.sleep(2)  # let autopilot settle between kills
    finally:
        down(root)
        shutil.rmtree(root.parent, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    keeper = run("nodes: 3\n", args.rounds, heal_by_hand=False)
    hand = run("nodes: 3\nkeeper: {heal: false}\n", args.rounds, heal_by_hand=True)
    print("\nSIGKILL -> healthy mesh again (median of", args.rounds, "rounds, seconds)")
    print(f"{'':28} {'standby':>8} {'leader':>8}")
    print(f"{'keeper (no command)':28} {statistics.median(keeper['standby']):8.1f} "
          f"{statistics.median(keeper['leader']):8.1f}")
    print(f"{'`vaultmesh up` at once':28} {statistics.median(hand['standby']):8.1f} "
          f"{statistics.median(hand['leader']):8.1f}")
    print(f"{'nobody (no keeper)':28} {'never':>8} {'never':>8}")


if __name__ == "__main__":
    main()
