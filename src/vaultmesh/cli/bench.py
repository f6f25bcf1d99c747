"""``vaultmesh bench`` and ``vaultmesh chaos``: load a mesh, break it under load, report figures and a picture.

``bench`` has one subcommand per scenario, each with its own help; both take ``--dir`` before or after their name.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from vaultmesh.cli.common import Ctx, err_console, mesh_command
from vaultmesh.errors import VaultmeshError


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int, float], None]]:
    """A rich progress bar on stderr, fed by the runner's ``progress(done, total, elapsed)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console(), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int, elapsed: float) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def _write_outputs(result: Any, json_file: Path | None, plot_file: Path | None, title: str = "") -> None:
    from vaultmesh.bench.plot import render_html
    from vaultmesh.bench.report import to_json

    if json_file:
        json_file.write_text(json.dumps(to_json(result)) + "\n")
        click.echo(f"raw results: {json_file}", err=True)
    if plot_file:
        if plot_file.suffix.lower() not in (".html", ".htm", ".svg"):
            raise VaultmeshError(f"--plot {plot_file}: only .html (a self-contained page with an inline SVG) is "
                                 "drawn", hint="use a .html file name")
        page = render_html(result, title=title)
        if plot_file.suffix.lower() == ".svg":
            page = page[page.index("<svg"):page.index("</svg>") + 6] + "\n"
        plot_file.write_text(page)
        click.echo(f"plot: {plot_file}", err=True)


SINGLE_OPS = ("kv-read", "jwt-login", "db-creds")

LOAD_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any], tuple[str, ...]]] = [
    # (names, click.option keywords, the bench scenarios that use it: shown in their help only)
    (("-n", "--count"), dict(type=int, default=None, help="rollout: workloads (default 100); single-op: requests "
                                                          "(default: until --duration)."),
     ("rollout", *SINGLE_OPS)),
    (("--window",), dict(type=float, default=5.0, show_default=True,
                         help="rollout: seconds over which the workloads start (0: all at once)."), ("rollout",)),
    (("--rate",), dict(type=float, default=0.0, help="Open-loop arrivals per second (steady; optional for "
                                                     "single-op)."), ("steady", *SINGLE_OPS)),
    (("--duration",), dict(type=float, default=10.0, show_default=True, help="steady/single-op: seconds."),
     ("steady", *SINGLE_OPS)),
    (("--hold",), dict(type=float, default=1.0, show_default=True,
                       help="Seconds a workload holds its secrets before revoking them."), ("rollout", "steady")),
    (("-c", "--concurrency"), dict(type=int, default=32, show_default=True, help="Threads in all."), ()),
    (("--processes",), dict(type=int, default=2, show_default=True, help="Worker processes."), ()),
    (("--op",), dict(type=click.Choice(["workload", "kv-read", "jwt-login", "db-creds"]), default="workload",
                     show_default=True, help="steady: what arrives."), ("steady",)),
    (("--json", "json_file"), dict(type=click.Path(dir_okay=False, path_type=Path),
                                   help="Write the raw results (every sample) as JSON."), ()),
    (("--plot", "plot_file"), dict(type=click.Path(dir_okay=False, path_type=Path),
                                   help="Draw latency over time (.html page with an inline SVG)."), ()),
]


def load_options(scenario: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The load options; for a bench ``scenario``, those it does not use are accepted but not shown."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for names, kwargs, used_by in reversed(LOAD_OPTIONS):
            hidden = scenario is not None and bool(used_by) and scenario not in used_by
            fn = click.option(*names, hidden=hidden, **kwargs)(fn)
        return fn

    return decorate


def _config(scenario: str, count: int | None, window: float, rate: float, duration: float, hold: float,
            concurrency: int, processes: int, op: str, raw: bool) -> Any:
    from vaultmesh.bench.model import BenchConfig

    if count is None:
        count = 100 if scenario == "rollout" else 0
    cfg = BenchConfig(scenario=scenario, count=count, window=window, rate=rate, duration=duration, hold=hold,
                      concurrency=concurrency, processes=processes, op=op, raw=raw)
    cfg.check()
    return cfg


SCENARIO_HELP = {
    "rollout": """A rollout: N workloads (-n, default 100) start over --window seconds; each gets an identity
    token, logs in, reads its KV secret and database credentials, holds them --hold seconds and revokes them.
    Reports login-to-secrets latency per phase and overall, and checks that the token and lease counts come back
    to the baseline.""",
    "steady": """A steady open-loop arrival rate (vegeta-style, no coordinated omission): --rate arrivals per
    second for --duration seconds, each a whole workload (--op workload, the default) or one operation. Reports
    latency and errors, and checks that the token and lease counts come back to the baseline.""",
    "kv-read": """One operation, repeated: a KV read with a logged-in token; -n requests or until --duration,
    paced at --rate per second when given. --raw is the client-work-free ceiling.""",
    "jwt-login": """One operation, repeated: a JWT login with a fresh identity token; -n requests or until
    --duration, paced at --rate per second when given.""",
    "db-creds": """One operation, repeated: a database credential read (a PostgreSQL role created) with a
    logged-in token; -n requests or until --duration, paced at --rate per second when given.""",
}


SCENARIO_SHORT_HELP = {
    "rollout": "N workloads start over a window: login, KV, database creds, hold, revoke.",
    "steady": "An open-loop arrival rate of workloads (or one operation) for a duration.",
    "kv-read": "KV reads, repeated.",
    "jwt-login": "JWT logins, repeated.",
    "db-creds": "Database credential reads, repeated.",
}


@click.group("bench")
def bench() -> None:
    """Load the mesh and report figures: a rollout of N workloads, a steady open-loop rate, or one operation
    repeated. Loopback targets only; every run is bounded. `vaultmesh bench SCENARIO --help` for each."""


def _bench_command(scenario: str) -> click.Command:
    @load_options(scenario)
    @click.option("--raw", is_flag=True, help="Ceiling mode: the same requests with the least client work.")
    @click.option("--ceiling", is_flag=True, help="Run the workload path, then the raw ceiling, and compare.")
    @mesh_command()
    def command(ctx: Ctx, count: int | None, window: float, rate: float, duration: float, hold: float,
                concurrency: int, processes: int, op: str, json_file: Path | None, plot_file: Path | None,
                raw: bool, ceiling: bool) -> None:
        _run_bench(ctx, scenario, count, window, rate, duration, hold, concurrency, processes, op, json_file,
                   plot_file, raw, ceiling)

    command.__doc__ = SCENARIO_HELP[scenario]
    return click.command(scenario, short_help=SCENARIO_SHORT_HELP[scenario])(command)


def _run_bench(ctx: Ctx, scenario: str, count: int | None, window: float, rate: float, duration: float,
               hold: float, concurrency: int, processes: int, op: str, json_file: Path | None,
               plot_file: Path | None, raw: bool, ceiling: bool) -> None:
    from vaultmesh.bench.report import error_total, render_text
    from vaultmesh.bench.runner import bench_mesh
    from vaultmesh.bench.targets import setup_targets
    from vaultmesh.lifecycle import mesh as m

    cfg = _config(scenario, count, window, rate, duration, hold, concurrency, processes, op, raw)
    mesh = m.open_mesh(ctx.dir)
    targets = setup_targets(mesh)
    with _progress(f"{scenario}{' (raw)' if raw else ''}") as progress:
        result = bench_mesh(mesh, cfg, progress=progress, targets=targets)
    ceiling_result = None
    if ceiling and not raw:
        from dataclasses import replace

        with _progress(f"{scenario} (raw ceiling)") as progress:
            ceiling_result = bench_mesh(mesh, replace(cfg, raw=True), progress=progress, targets=targets)
    click.echo(render_text(result, ceiling=ceiling_result))
    _write_outputs(result, json_file, plot_file)
    passed = not error_total(result) and bool(result.returned)
    _record(mesh, f"bench {scenario}" + (" --raw" if raw else ""), passed, errors=error_total(result))
    if not passed:
        raise SystemExit(1)


def _record(mesh: Any, run: str, passed: bool, *, errors: int) -> None:
    """``<dir>/bench/last.json``: the last load test's outcome, for ``vaultmesh doctor``."""
    import time

    from vaultmesh.fsutil import write_json

    write_json(mesh.paths.load_record, {"time": time.time(), "run": run, "passed": passed, "errors": errors})


for _scenario in SCENARIO_HELP:
    bench.add_command(_bench_command(_scenario))


@click.command("chaos")
@click.argument("fault", type=click.Choice(["kill-leader", "kill-node", "stop-zone", "partition-zone", "lose-quorum"]))
@click.option("--scenario", type=click.Choice(["steady", "rollout", "kv-read", "jwt-login", "db-creds"]),
              default="steady", show_default=True, help="The load the fault hits.")
@load_options()
@click.option("--at", "at", type=float, default=3.0, show_default=True, help="Inject the fault this many seconds "
                                                                             "into the load.")
@click.option("--lift-after", type=float, default=None,
              help="Lift the fault this many seconds after injecting it (kills: `up` restarts the nodes); "
                   "default: after the load.")
@click.option("--target", default=None, help="Node (kill-node) or zone (stop-zone, partition-zone).")
@click.option("--signal", "sig", type=click.Choice(["kill", "stop"]), default="kill", show_default=True,
              help="stop-zone: SIGKILL or SIGSTOP.")
@mesh_command()
def chaos(ctx: Ctx, fault: str, scenario: str, count: int | None, window: float, rate: float, duration: float,
          hold: float, concurrency: int, processes: int, op: str, json_file: Path | None, plot_file: Path | None,
          at: float, lift_after: float | None, target: str | None, sig: str) -> None:
    """Inject a fault while a bench scenario runs (default: steady workloads at 20/s for 10 s); report the time
    until writes succeed again, client-visible errors, lost acknowledged writes, whether a partitioned minority
    refused writes, and how the mesh healed."""
    from vaultmesh.bench.report import error_total
    from vaultmesh.chaos.fault import Fault
    from vaultmesh.chaos.run import render_full, run_chaos
    from vaultmesh.lifecycle import mesh as m

    if scenario == "steady" and not rate:
        rate = 20.0
    cfg = _config(scenario, count, window, rate, duration, hold, concurrency, processes, op, False)
    plan = Fault(fault=fault, at=at, lift_after=lift_after, target=target, signal=sig)  # type: ignore[arg-type]
    mesh = m.open_mesh(ctx.dir)
    with _progress(f"{scenario} + {fault}") as progress:
        result = run_chaos(mesh, plan, cfg, progress=progress)
    click.echo(render_full(result))
    _write_outputs(result.bench, json_file, plot_file, title=f"vaultmesh chaos: {fault} under {scenario}")
    _record(mesh, f"chaos {fault} under {scenario}", result.passed, errors=error_total(result.bench))
    if not result.passed:
        raise SystemExit(1)
