"""A mesh on 3 hosts two ways, side by side: `vaultmesh up -f mesh.yaml` (runtime: ssh) versus the playbook of
`vaultmesh export ansible` run by `ansible-playbook`, each on fresh lab hosts (`vaultmesh lab up`: network
namespaces with their own sshd and supervisord, host keys checked); then a leader killed on its host.

Measured, wall clock:
- zero to healthy: `vaultmesh up` (the CLI, from nothing to healthy over SSH) / the playbook's first run (to every
  node answering sys/health, the last one gated on it), each from a fresh lab;
- a rerun with nothing changed: a second `vaultmesh up` / a second playbook run, and whether either wrote or
  restarted anything (node pids on the hosts before and after; Ansible's `changed` count);
- failover across hosts on the vaultmesh mesh: SIGKILL of the leader's process on its host
  (`vaultmesh.chaos.inject.signal_nodes`), seconds until another node answers sys/health 200 (active), and until
  `status` says healthy again (the host's supervisor restarts the killed node and it rejoins).
The host's load average is printed: the machine may be shared.

Everything is removed at the end, also on failure (the mesh destroyed, each lab down, the temp folder).

Usage: python benchmarks/hosts.py  (as root: the lab needs network namespaces; ansible-playbook on PATH)
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from vaultmesh.api.client import make_ssl_context
from vaultmesh.chaos.inject import signal_nodes
from vaultmesh.hosts import runtime as hosts
from vaultmesh.lab import lab_down, lab_up, unavailable
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.status import status
from vaultmesh.runtime.local import wait_until

VAULTMESH = [sys.executable, "-m", "vaultmesh.cli.entry"]
TIMEOUT = 180.0


def run(argv: list[str], cwd: Path | None = None,
        env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed (exit {done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return time.monotonic() - t, done


def timed(cond: Callable[[], object], timeout: float = TIMEOUT) -> float:
    t = time.monotonic()
    if not wait_until(cond, timeout=timeout, interval=0.1):
        raise SystemExit(f"not within {timeout:.0f} s")
    return time.monotonic() - t


def health(url: str, ctx: ssl.SSLContext) -> int | None:
    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health", context=ctx, timeout=2) as res:
            return res.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def vaultmesh_side(base: Path) -> dict[str, str]:
    lab_dir, state = base / "lab-vaultmesh", base / "state"
    out: dict[str, str] = {}
    try:
        record = lab_up(lab_dir, 3)
        seconds, _ = run([*VAULTMESH, "up", "-f", str(record.mesh_file), "--dir", str(state),
                          "--timeout", str(TIMEOUT)])
        out["zero to healthy (s)"] = f"{seconds:.1f}"
        mesh = m.open_mesh(state)
        pids = {n.name: hosts.pid(n) for n in mesh.layout.nodes}
        seconds, done = run([*VAULTMESH, "up", "-f", str(record.mesh_file), "--dir", str(state)])
        said = [line for line in done.stderr.splitlines() if "pushed" in line or "restarted" in line]
        same = pids == {n.name: hosts.pid(n) for n in mesh.layout.nodes}
        out["rerun, nothing changed (s)"] = f"{seconds:.1f}"
        out["rerun wrote/restarted"] = f"{len(said)} push/restart lines, " + ("same pids" if same else "pids changed")

        _, view, _ = status(state)
        assert view.healthy and view.leader is not None, "the mesh is not healthy after up"
        leader = mesh.layout.node(view.leader.name)
        others = [n for n in mesh.layout.nodes if n.name != leader.name]
        ctx = make_ssl_context(str(mesh.paths.ca_cert))
        t0 = time.monotonic()
        signal_nodes([leader], signal.SIGKILL)
        timed(lambda: any(health(n.api_addr, ctx) == 200 for n in others))
        out["leader SIGKILLed -> another leads (s)"] = f"{time.monotonic() - t0:.1f}"
        timed(lambda: status(state)[1].healthy)
        out["leader SIGKILLed -> status healthy (s)"] = f"{time.monotonic() - t0:.1f}"
    finally:
        try:
            if m.exists(state):
                subprocess.run([*VAULTMESH, "destroy", "--yes", "--dir", str(state)], capture_output=True,
                               timeout=300)
        finally:
            lab_down(lab_dir)
    return out


def ansible_env(out: Path) -> dict[str, str]:
    """Ansible's scratch below the export dir (nothing outlives the run); pipelining."""
    return {**os.environ, "ANSIBLE_LOCAL_TEMP": str(out / ".ansible/tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(out / ".ansible/cp"), "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False"}


def changed(done: subprocess.CompletedProcess[str]) -> int:
    recap = done.stdout.split("PLAY RECAP", 1)[-1]
    return sum(int(w.split("=")[1]) for w in recap.split() if w.startswith("changed="))


def ansible_side(base: Path) -> dict[str, str]:
    lab_dir, export = base / "lab-ansible", base / "export"
    out: dict[str, str] = {}
    try:
        record = lab_up(lab_dir, 3)
        run([*VAULTMESH, "export", "ansible", "-f", str(record.mesh_file), "--out", str(export),
             "--dir", str(base / "no-state")])
        play = ["ansible-playbook", "-i", "inventory.yaml", "site.yaml"]
        seconds, _ = run(play, cwd=export, env=ansible_env(export))
        ctx = make_ssl_context(str(export / "files" / record.hosts[0].name / record.hosts[0].root.lstrip("/")
                                   / "var/lib/vaultmesh/lab/pki/ca.pem"))
        codes = sorted(health(f"https://{h.address}:8200", ctx) or 0 for h in record.hosts)
        out["zero to healthy (s)"] = f"{seconds:.1f}" + ("" if codes == [200, 429, 429] else f" (health {codes})")
        seconds, done = run(play, cwd=export, env=ansible_env(export))
        out["rerun, nothing changed (s)"] = f"{seconds:.1f}"
        out["rerun wrote/restarted"] = f"{changed(done)} tasks changed"
    finally:
        try:
            for sock in (export / ".ansible/cp").glob("*"):  # the SSH control masters Ansible leaves
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"], capture_output=True,
                               timeout=10)
        finally:
            lab_down(lab_dir)
    return out


def main() -> None:
    why = unavailable() or (None if shutil.which("ansible-playbook") else "ansible-playbook is not on PATH")
    if why:
        raise SystemExit(why)
    load = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="vm-bench-hosts-"))
    try:
        ours = vaultmesh_side(base)
        theirs = ansible_side(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    after = os.getloadavg()
    rows = list(dict.fromkeys([*ours, *theirs]))
    width = max(len(r) for r in rows)
    print(f"3 lab hosts (netns + sshd + supervisord) on {os.cpu_count()} CPUs; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before, {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} after")
    print(f"{'':{width}}  {'vaultmesh up (ssh)':>34}  {'ansible-playbook (export)':>26}")
    for r in rows:
        print(f"{r:{width}}  {ours.get(r, '-'):>34}  {theirs.get(r, '-'):>26}")


if __name__ == "__main__":
    main()
