"""Prometheus beside the mesh, run by the keeper (``monitoring.mode``): it scrapes every node, the keeper's own
``/metrics`` and the entry, with the mesh's alert rules loaded, and serves its UI and HTTP API over HTTPS (a
certificate from the mesh CA) on 127.0.0.1. The keeper runs it because the keeper is the one process that knows
its own ``/metrics`` address and runs for the mesh's whole life: it starts Prometheus, starts it again when it
dies (at most every ``RETRY`` seconds), and, when a keeper started on a changed mesh (after ``scale``) renders
other config or rules than Prometheus runs on, reloads it (SIGHUP). A running keeper does not re-read the mesh.

With a receiver in ``monitoring.alerts`` the keeper also runs Alertmanager (``prometheus-alertmanager``) the same
way: HTTPS on 127.0.0.1 with Prometheus's certificate, its port kept across restarts, no cluster listener, its data
in ``monitoring/alertmanager``; Prometheus's ``alerting`` names it, and it is reloaded (SIGHUP) when its rendered
config changes. A ``command`` receiver is reached through the keeper's own bridge (``keeper.alerts``).

``wanted`` is pure; ``ensure`` is the edge. What happened is in ``monitoring/prometheus.json`` and
``monitoring/alertmanager.json`` (the address, its port kept across restarts, or why it does not run), which
``status`` shows.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultmesh.errors import VaultmeshError
from vaultmesh.fsutil import ensure_dir, read_json, write_atomic, write_json
from vaultmesh.keeper.alerts import AlertBridge, ensure_token, serve_bridge
from vaultmesh.lifecycle import mesh as m
from vaultmesh.monitoring import alertmanager as am
from vaultmesh.monitoring.config import render_prometheus_config
from vaultmesh.monitoring.rules import render_rules
from vaultmesh.runtime.local import free_ports, port_holder
from vaultmesh.runtime.processes import (
    alertmanager_process,
    prometheus_process,
    start_alertmanager,
    start_prometheus,
)

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
    alerts: Watch | None = None
    """Alertmanager's (the same bookkeeping; its ``next_at`` is its own retry), made at the first look."""
    bridge: AlertBridge | None = None
    """The command receiver's listener, while the keeper serves one."""


def web_config(cert: str, key: str) -> str:
    return f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"


def _recorded(path: Path, key: str = "port") -> int:
    """The port recorded under ``key`` in ``path`` (0: none)."""
    try:
        return int(read_json(path).get(key) or 0)
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def _port(record: Path, pid: int | None) -> int:
    """The port recorded in ``record`` when it is free (or held by our process ``pid``), else a free one."""
    port = _recorded(record)
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
    """Prometheus (and, with a receiver, Alertmanager) running on the current config and rules (started or
    reloaded as needed); Prometheus's record."""
    t = now()
    if t < watch.next_at:
        return watch.record
    watch.next_at = t + CHECK_EVERY
    paths, spec = mesh.paths, mesh.spec
    binary = shutil.which("prometheus")
    run, why = wanted(spec.monitoring.mode, binary)
    alerts = watch.alerts = watch.alerts or Watch()
    am_binary = shutil.which(am.BINARY)
    am_run, am_why = am.wanted(spec.monitoring.alerts, am_binary, prometheus=run)
    am_pid = alertmanager_process(paths).pid(adopt=True) if spec.monitoring.alerts is not None else None
    am_port = _alertmanager_port(paths.alertmanager_record, alerts) if am_run else None
    proc = prometheus_process(paths)
    pid = proc.pid(adopt=True)
    if not run:
        _ensure_alertmanager(mesh, alerts, None, am_why, am_pid, t, log)
        return _keep(paths.prometheus_record, watch, {"running": pid is not None, "url": None, "reason": why})
    assert binary is not None
    try:
        ensure_dir(paths.monitoring_dir)
        cert, key = m.ensure_prometheus_cert(mesh)
        changed = _write_if_changed(paths.prometheus_rules, render_rules(spec))
        changed |= _write_if_changed(paths.prometheus_config, render_prometheus_config(
            mesh.layout, rules_file=paths.prometheus_rules, keeper=keeper_metrics, entry=m.entry_wanted(spec),
            alertmanager=None if am_port is None else f"127.0.0.1:{am_port}"))
        changed |= _write_if_changed(paths.prometheus_web, web_config(str(cert), str(key)))
        if pid is not None:
            if changed:
                os.kill(pid, signal.SIGHUP)
                log("prometheus: config or rules changed, reloaded")
            port = int(watch.record.get("port") or _port(paths.prometheus_record, pid))
        else:
            if watch.started:  # it ran, and died: started again, but not more often than every RETRY s
                log(f"prometheus is gone (see {paths.prometheus_log}): starting it again")
                watch.next_at = t + RETRY
            port = _port(paths.prometheus_record, None)
            pid = start_prometheus(paths, binary, port, float(spec.monitoring.retention))
            watch.started += 1
            log(f"started prometheus (pid {pid}) on https://127.0.0.1:{port}")
    except (VaultmeshError, OSError) as err:
        watch.next_at = t + RETRY
        log(f"prometheus could not start: {err}")
        record = {"running": False, "url": None, "reason": f"prometheus could not start: {err}"}
    else:
        record = {"running": True, "url": f"https://127.0.0.1:{port}", "port": port, "pid": pid, "reason": None,
                  "starts": watch.started}
    _ensure_alertmanager(mesh, alerts, am_port, am_why, am_pid, t, log, binary=am_binary)
    return _keep(paths.prometheus_record, watch, record)


def _alertmanager_port(record: Path, watch: Watch) -> int:
    """The port Alertmanager has, or will have: the one it had last (in ``watch`` or its ``record``), else a
    free one, remembered, so Prometheus's ``alerting`` stays the same from one look to the next."""
    port = int(watch.record.get("port") or 0) or _recorded(record)
    if not port:
        port = free_ports(1)[0]
        watch.record = {**watch.record, "port": port}
    return port


def _bridge(mesh: m.Mesh, watch: Watch, log: Callable[[str], None]) -> am.Bridge | None:
    """The keeper's command bridge for a ``command`` receiver (listening from the first call on, on the port it
    had last time when that is free); None for a webhook receiver."""
    alerts = mesh.spec.monitoring.alerts
    if alerts is None or alerts.command is None:
        return None
    paths = mesh.paths
    if watch.bridge is None:
        cert, key = m.ensure_keeper_cert(mesh)
        token = ensure_token(paths.alerts_token)
        watch.bridge = serve_bridge([p for p in (_recorded(paths.alertmanager_record, "bridge_port"),) if p] + [0],
                                    command=alerts.command, token=token, cert=cert, key=key,
                                    cwd=paths.monitoring_dir, log=log)
        log(f"alerts: the command receiver listens on {watch.bridge.url}")
    return am.Bridge(watch.bridge.url, paths.alerts_token, paths.ca_cert)


def _ensure_alertmanager(mesh: m.Mesh, watch: Watch, port: int | None, why: str | None, pid: int | None, t: float,
                         log: Callable[[str], None], *, binary: str | None = None) -> dict[str, Any]:
    """Alertmanager on ``port`` (None: it is not wanted, ``why``) with the current config: started (again, at
    most every ``RETRY`` s) or reloaded; its record."""
    paths, alerts = mesh.paths, mesh.spec.monitoring.alerts
    if port is None or alerts is None or binary is None:
        return _keep(paths.alertmanager_record, watch, {"running": pid is not None, "url": None, "reason": why})
    url = f"https://127.0.0.1:{port}"
    try:
        bridge = _bridge(mesh, watch, log)
        changed = _write_if_changed(paths.alertmanager_config, am.render_alertmanager_config(
            alerts, mesh=mesh.spec.name, bridge=bridge), mode=0o600)
        if pid is not None:
            if changed:
                os.kill(pid, signal.SIGHUP)
                log("alertmanager: config changed, reloaded")
        elif t < watch.next_at:
            return _keep(paths.alertmanager_record, watch, {
                "running": False, "url": None,
                "reason": f"alertmanager is gone (see {paths.alertmanager_log}); it is started again at most every "
                          f"{RETRY:g} s"})
        else:
            if watch.started:
                log(f"alertmanager is gone (see {paths.alertmanager_log}): starting it again")
                watch.next_at = t + RETRY
            if port_holder(port) is not None:  # taken meanwhile: Prometheus is pointed at the new one next look
                port = free_ports(1)[0]
                url = f"https://127.0.0.1:{port}"
            ensure_dir(paths.alertmanager_data)
            pid = start_alertmanager(paths, binary, port)
            watch.started += 1
            log(f"started alertmanager (pid {pid}) on {url}")
    except (VaultmeshError, OSError) as err:
        watch.next_at = t + RETRY
        log(f"alertmanager could not start: {err}")
        return _keep(paths.alertmanager_record, watch, {"running": False, "url": None,
                                                        "reason": f"alertmanager could not start: {err}"})
    return _keep(paths.alertmanager_record, watch, {
        "running": True, "url": url, "port": port, "pid": pid, "reason": None, "starts": watch.started,
        "receiver": "command" if bridge else "webhook", "bridge_port": watch.bridge.port if watch.bridge else None})


def _keep(path: Path, watch: Watch, record: dict[str, Any]) -> dict[str, Any]:
    """Remember ``record`` and write it to ``path`` when it changed (the port of a process that ran is kept
    there for its next start)."""
    if record != watch.record:
        for kept in ("port", "bridge_port"):
            if kept not in record and watch.record.get(kept):
                record = {**record, kept: watch.record[kept]}
        ensure_dir(path.parent)
        write_json(path, record, mode=0o644)
    watch.record = record
    return record
