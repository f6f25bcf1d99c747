"""``prometheus.yml`` for one mesh. Pure: the layout, the keeper's metrics address and the rule file's path in,
YAML text out (nothing is read from disk or asked of a process).

Three scrape jobs (``names.JOB_*``), every target labelled ``mesh`` (and nodes ``node`` and ``zone``):
- every node's ``/v1/sys/metrics?format=prometheus`` over TLS verified with the mesh CA. The node config
  (``render.node``) already sets ``telemetry { unauthenticated_metrics_access = true }`` on the listener, so
  no token is needed, and each node, standbys too, answers with its own figures. Server name ``localhost``:
  every node certificate carries it (``pki.node_cert_names``), also on a netns mesh whose node addresses are
  not in the certificates;
- the keeper's ``/metrics`` (HTTPS, a mesh-CA certificate for 127.0.0.1 and localhost), when it runs;
- the entry, for ``up`` only (``names.JOB_ENTRY``), when the mesh has one.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

from vaultmesh.errors import StateError
from vaultmesh.layout import HOST, MeshLayout
from vaultmesh.monitoring.names import JOB_ENTRY, JOB_KEEPER, JOB_NODE, MESH_LABEL, NODE_LABEL, ZONE_LABEL

SCRAPE_INTERVAL = "5s"
"""Every 5 s: a node's scrape is ~1000 lines, cheap; with the rules' 30 s ``for`` a fault is an alert within
~40 s, inside the 60 s the chaos table asks for (the default 1 m scrape alone would take most of it)."""
SCRAPE_TIMEOUT = "4s"
"""Below the interval, as Prometheus requires; a node that takes longer to answer its metrics is not well."""
EVALUATION_INTERVAL = "5s"
"""Rules are evaluated as often as samples come."""
TLS_SERVER_NAME = "localhost"
METRICS_PATH = "/v1/sys/metrics"


def keeper_target(address: str) -> tuple[str, str]:
    """(host:port, path) of the keeper's metrics address (``https://127.0.0.1:PORT/metrics``); anything but
    an HTTPS URL with a port is refused."""
    url = urlsplit(address)
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme != "https" or not url.hostname or port is None:
        raise StateError(f"the keeper's metrics address {address!r} is not an HTTPS URL with a port",
                         hint="restart the keeper (`vaultmesh down` then `vaultmesh up`) so it records it again")
    return f"{url.hostname}:{port}", url.path or "/metrics"


def scrape_configs(layout: MeshLayout, *, ca_file: Path, keeper: str | None, entry: bool) -> list[dict[str, object]]:
    """The ``scrape_configs`` of the mesh: its nodes, the keeper (``keeper``: its metrics address) and the
    entry (when ``entry``)."""
    tls = {"ca_file": str(ca_file), "server_name": TLS_SERVER_NAME, "min_version": "TLS12"}
    mesh = {MESH_LABEL: layout.name}
    nodes = {
        "job_name": JOB_NODE, "scheme": "https", "metrics_path": METRICS_PATH,
        "params": {"format": ["prometheus"]}, "tls_config": dict(tls),
        "static_configs": [{"targets": [f"{n.host}:{n.api_port}"],
                            "labels": {**mesh, NODE_LABEL: n.name, ZONE_LABEL: n.zone}} for n in layout.nodes],
    }
    out: list[dict[str, object]] = [nodes]
    if keeper is not None:
        target, path = keeper_target(keeper)
        out.append({"job_name": JOB_KEEPER, "scheme": "https", "metrics_path": path, "tls_config": dict(tls),
                    "static_configs": [{"targets": [target], "labels": dict(mesh)}]})
    if entry:
        out.append({"job_name": JOB_ENTRY, "scheme": "https", "metrics_path": METRICS_PATH,
                    "params": {"format": ["prometheus"]}, "tls_config": dict(tls),
                    "static_configs": [{"targets": [f"{HOST}:{layout.entry_port}"], "labels": dict(mesh)}],
                    # the active node's samples, scraped as that node already: keep only `up`
                    "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": ".+", "action": "drop"}]})
    return out


def render_prometheus_config(layout: MeshLayout, *, rules_file: Path | None, keeper: str | None,
                             entry: bool, ca_file: Path | None = None, alertmanager: str | None = None) -> str:
    """The whole ``prometheus.yml``: global intervals, the mesh as an external label, the rule file (None:
    none), where firing alerts are sent (``alertmanager``: the ``host:port`` of the keeper's Alertmanager, HTTPS
    verified with the mesh CA; None: nowhere) and ``scrape_configs``. ``ca_file`` defaults to the layout's
    mesh CA."""
    ca = ca_file or layout.paths.ca_cert
    doc: dict[str, object] = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_TIMEOUT,
                   "evaluation_interval": EVALUATION_INTERVAL, "external_labels": {MESH_LABEL: layout.name}},
    }
    if rules_file is not None:
        doc["rule_files"] = [str(rules_file)]
    if alertmanager is not None:
        tls = {"ca_file": str(ca), "server_name": TLS_SERVER_NAME, "min_version": "TLS12"}
        doc["alerting"] = {"alertmanagers": [{"scheme": "https", "tls_config": tls,
                                              "static_configs": [{"targets": [alertmanager]}]}]}
    doc["scrape_configs"] = scrape_configs(layout, ca_file=ca, keeper=keeper, entry=entry)
    header = f"# Prometheus config of mesh {layout.name}, rendered by `vaultmesh monitoring config`; do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)
