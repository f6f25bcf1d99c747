"""Prometheus beside the mesh, run by the keeper (``monitoring.mode``): it scrapes every node, the keeper's own
``/metrics`` and the entry, with the mesh's alert rules loaded, and serves its UI and HTTP API over HTTPS (a
certificate from the mesh CA) on 127.0.0.1. The keeper runs it because the keeper is the one process that knows
its own ``/metrics`` address and runs for the mesh's whole life: it starts Prometheus, starts it again when it
dies (at most every ``RETRY`` seconds), and, when a keeper started on a changed mesh (after ``scale``) renders
other config or rules than Prometheus runs on, reloads it (SIGHUP). A running keeper does not re-read the mesh.

``wanted`` is pure; ``ensure`` is the edge. What happened is in ``monitoring/prometheus.json`` (the address, its
port kept across restarts, or why it does not run), which ``status`` shows.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vaultmesh.errors import VaultmeshError
from vaultmesh.fsutil import ensure_dir, read_json, write_atomic, write_json
from vaultmesh.lifecycle import mesh as m
from vaultmesh.monitoring.config import render_prometheus_config
from vaultmesh.monitoring.rules import render_rules
from vaultmesh.runtime.local import free_ports, port_holder
from vaultmesh.runtime.processes import prometheus_process, start_prometheus

CHECK_EVERY = 5.0
"""Seconds between two looks at Prometheus."""
RETRY = 30.0
"""Seconds before a Prometheus that failed to start (or died) is started again."""


def wanted(mode: str, binary: str | None) -> tuple[bool, str | None]:
    """Whether Prometheus should run, and why not when it should not (None: it should). Pure."""
    if mode == "none":
        return False, "monitoring: none in the mesh file"
    if binary is None:
        why = "the prometheus binary is not installed (Debian package prometheus)"
        return False, why if mode == "prometheus" else f"{why}; monitoring: auto runs it once it is"
    return True, None


@dataclass
class Watch:
    """The keeper's memory of Prometheus between two looks."""

    next_at: float = 0.0
    started: int = 0
    record: dict[str, Any] = field(default_factory=dict)


def web_config(cert: str, key: str) -> str:
    return f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"


def _port(mesh: m.Mesh, pid: int | None) -> int:
    """The recorded port when it is free (or held by our Prometheus), else a free one."""
    try:
        port = int(read_json(mesh.paths.prometheus_record).get("port") or 0)
    except (OSError, ValueError, AttributeError):
        port = 0
    if port and (port_holder(port) is None or pid is not None):
        return port
    return free_ports(1)[0]


def _write_if_changed(path: Any, text: str, *, mode: int = 0o644) -> bool:
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    write_atomic(path, text.encode(), mode=mode)
    return True


def ensure(mesh: m.Mesh, keeper_metrics: str | None, watch: Watch, log: Callable[[str], None], *,
           now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Prometheus running on the current config and rules (started or reloaded as needed); the record."""
    t = now()
    if t < watch.next_at:
        return watch.record
    watch.next_at = t + CHECK_EVERY
    paths, spec = mesh.paths, mesh.spec
    binary = shutil.which("prometheus")
    run, why = wanted(spec.monitoring.mode, binary)
    proc = prometheus_process(paths)
    pid = proc.pid(adopt=True)
    if not run:
        return _keep(mesh, watch, {"running": pid is not None, "url": None, "reason": why})
    assert binary is not None
    try:
        ensure_dir(paths.monitoring_dir)
        cert, key = m.ensure_prometheus_cert(mesh)
        changed = _write_if_changed(paths.prometheus_rules, render_rules(spec))
        changed |= _write_if_changed(paths.prometheus_config, render_prometheus_config(
            mesh.layout, rules_file=paths.prometheus_rules, keeper=keeper_metrics, entry=m.entry_wanted(spec)))
        changed |= _write_if_changed(paths.prometheus_web, web_config(str(cert), str(key)))
        if pid is not None:
            if changed:
                os.kill(pid, signal.SIGHUP)
                log("prometheus: config or rules changed, reloaded")
            port = int(watch.record.get("port") or _port(mesh, pid))
        else:
            if watch.started:  # it ran, and died: started again, but not more often than every RETRY s
                log(f"prometheus is gone (see {paths.prometheus_log}): starting it again")
                watch.next_at = t + RETRY
            port = _port(mesh, None)
            pid = start_prometheus(paths, binary, port, float(spec.monitoring.retention))
            watch.started += 1
            log(f"started prometheus (pid {pid}) on https://127.0.0.1:{port}")
    except (VaultmeshError, OSError) as err:
        watch.next_at = t + RETRY
        log(f"prometheus could not start: {err}")
        return _keep(mesh, watch, {"running": False, "url": None, "reason": f"prometheus could not start: {err}"})
    url = f"https://127.0.0.1:{port}"
    return _keep(mesh, watch, {"running": True, "url": url, "port": port, "pid": pid, "reason": None,
                               "starts": watch.started})


def _keep(mesh: m.Mesh, watch: Watch, record: dict[str, Any]) -> dict[str, Any]:
    """Remember ``record`` and write it to ``prometheus.json`` when it changed (the port of a Prometheus that
    ran is kept there for its next start)."""
    if record != watch.record:
        if "port" not in record and watch.record.get("port"):
            record = {**record, "port": watch.record["port"]}
        ensure_dir(mesh.paths.monitoring_dir)
        write_json(mesh.paths.prometheus_record, record, mode=0o644)
    watch.record = record
    return record
