"""``alertmanager.yml`` for one mesh, and whether the keeper runs Alertmanager. Pure: the mesh file's
``monitoring.alerts`` in, YAML text out.

One route, one receiver (``RECEIVER``): every alert of the mesh, grouped by alert name, goes to the user's
``webhook`` (Alertmanager's webhook JSON, POSTed, ``send_resolved``), or, for a ``command`` receiver, to the
keeper's command bridge (``keeper.alerts``: HTTPS on 127.0.0.1 verified with the mesh CA, a bearer token from a
0600 file), which runs the command with that JSON on stdin. Alertmanager has no command receiver of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from vaultmesh.monitoring.config import TLS_SERVER_NAME
from vaultmesh.monitoring.names import MESH_LABEL
from vaultmesh.spec.models import AlertsSpec
from vaultmesh.spec.types import format_duration

BINARY = "prometheus-alertmanager"
"""Debian's name for it (package ``prometheus-alertmanager``, with ``amtool``)."""
RECEIVER = "vaultmesh"
GROUP_BY = ["alertname", MESH_LABEL]
"""One notification per kind of alert (every node a rule fires for is in it, as one alert each)."""
RESOLVE_TIMEOUT = "5m"
"""Alertmanager's default; Prometheus resends firing alerts every evaluation, so it only matters if it stops."""


@dataclass(frozen=True)
class Bridge:
    """Where the keeper's command bridge listens, and what Alertmanager needs to reach it."""

    url: str
    """``https://127.0.0.1:PORT/alerts``."""
    token_file: Path
    ca_file: Path


def wanted(alerts: AlertsSpec | None, binary: str | None, *, prometheus: bool) -> tuple[bool, str | None]:
    """Whether Alertmanager should run (a receiver is named, Prometheus runs, the binary is installed), and
    why not when it should not (None: it should). Pure."""
    if alerts is None:
        return False, "no receiver: monitoring.alerts is not in the mesh file"
    if not prometheus:
        return False, "Prometheus does not run, so no alert fires"
    if binary is None:
        return False, (f"the {BINARY} binary is not installed (Debian package {BINARY}): firing alerts reach no "
                       "receiver until it is")
    return True, None


def render_alertmanager_config(alerts: AlertsSpec, *, mesh: str, bridge: Bridge | None = None) -> str:
    """The whole ``alertmanager.yml``: one route with the mesh file's group timings, one receiver. A
    ``command`` receiver needs the keeper's ``bridge``."""
    if alerts.webhook is not None:
        webhook: dict[str, object] = {"url": alerts.webhook, "send_resolved": True}
    else:
        if bridge is None:
            raise ValueError("a command receiver is reached through the keeper's bridge: give its address")
        webhook = {"url": bridge.url, "send_resolved": True, "http_config": {
            "authorization": {"type": "Bearer", "credentials_file": str(bridge.token_file)},
            "tls_config": {"ca_file": str(bridge.ca_file), "server_name": TLS_SERVER_NAME, "min_version": "TLS12"}}}
    doc = {
        "global": {"resolve_timeout": RESOLVE_TIMEOUT},
        "route": {"receiver": RECEIVER, "group_by": list(GROUP_BY),
                  "group_wait": format_duration(alerts.group_wait),
                  "group_interval": format_duration(alerts.group_interval),
                  "repeat_interval": format_duration(alerts.repeat_interval)},
        "receivers": [{"name": RECEIVER, "webhook_configs": [webhook]}],
    }
    header = f"# Alertmanager config of mesh {mesh}, rendered by the keeper from monitoring.alerts; do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)
