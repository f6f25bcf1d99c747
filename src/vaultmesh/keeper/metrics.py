"""The keeper's ``/metrics`` endpoint: Prometheus text over HTTPS (the mesh CA), on 127.0.0.1.

Every figure is read from the keeper's record at scrape time (``KeeperStatus``), so what ``status`` says and what
Prometheus scrapes are the same numbers::

    vaultmesh_keeper_up 1
    vaultmesh_keeper_cycle_timestamp_seconds           when the last reap cycle ended
    vaultmesh_keeper_mesh_answering                    1 when the last cycle saw the mesh answer
    vaultmesh_keeper_restarts_total                    processes the keeper (re)started
    vaultmesh_keeper_backing_off                       1 while a restart keeps failing
    vaultmesh_keeper_revoked_total                     tokens and login leases reaped
    vaultmesh_keeper_over_budget                       lease budgets exceeded now
    vaultmesh_snapshot_last_success_timestamp_seconds, vaultmesh_snapshot_last_size_bytes,
    vaultmesh_snapshot_last_index, vaultmesh_snapshot_failures_total
    vaultmesh_drill_last_timestamp_seconds, vaultmesh_drill_last_ok, vaultmesh_drill_last_rto_seconds,
    vaultmesh_drill_last_rpo_seconds
    vaultmesh_certificate_expiry_timestamp_seconds{cert="node-1"|"seal"|"entry"|"identity"|"keeper"|"ca"}
                                                       when each certificate ends, as its listener serves it
                                                       (its file when the listener is down)

The same listener serves the dashboard page (``keeper.page``: ``page`` answers its paths, every other path is
``/metrics``). The listener's TLS pair is re-read by ``reload_tls`` (the keeper calls it on SIGHUP, after
``certs rotate``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

from vaultmesh.lifecycle.keeper_process import KeeperStatus

CERT_EXPIRY = "vaultmesh_certificate_expiry_timestamp_seconds"
"""The expiry gauge's name (alert rules are written against it): one series per certificate, label ``cert``."""


def families(status: KeeperStatus, certificates: dict[str, float] | None = None) -> list[Metric]:
    """The metric families of one record and the certificates' not-after times (``cert`` -> Unix seconds).
    Pure."""
    def gauge(name: str, doc: str, value: float | None) -> Metric | None:
        if value is None:
            return None
        g = GaugeMetricFamily(name, doc)
        g.add_metric([], float(value))
        return g

    def counter(name: str, doc: str, value: float) -> Metric:
        c = CounterMetricFamily(name, doc)
        c.add_metric([], float(value))
        return c

    snap: dict[str, Any] = status.snapshot or {}
    drill: dict[str, Any] = status.drill or {}
    out = [
        gauge("vaultmesh_keeper_up", "The keeper runs.", 1),
        gauge("vaultmesh_keeper_cycle_timestamp_seconds", "When the keeper's last reap cycle ended.",
              status.cycle_at or None),
        gauge("vaultmesh_keeper_mesh_answering", "1 when the last cycle saw the mesh answer.",
              1 if status.healthy_since is not None else 0),
        counter("vaultmesh_keeper_restarts", "Processes the keeper (re)started.", status.restarts),
        gauge("vaultmesh_keeper_backing_off", "1 while a restart keeps failing.", 1 if status.backing_off else 0),
        counter("vaultmesh_keeper_revoked", "Tokens and login leases reaped.", status.revoked),
        gauge("vaultmesh_keeper_over_budget", "Lease budgets exceeded now.", len(status.over_budget)),
        gauge("vaultmesh_snapshot_last_success_timestamp_seconds", "When the last snapshot was taken.",
              snap.get("time")),
        gauge("vaultmesh_snapshot_last_size_bytes", "Size of the last snapshot.", snap.get("size")),
        gauge("vaultmesh_snapshot_last_index", "Raft index of the last snapshot.", snap.get("index")),
        counter("vaultmesh_snapshot_failures", "Scheduled snapshots (or their shipping) that failed.",
                int(snap.get("failures") or 0)),
        gauge("vaultmesh_drill_last_timestamp_seconds", "When the last restore drill ended.", drill.get("time")),
        gauge("vaultmesh_drill_last_ok", "1 when the last restore drill passed.",
              None if "ok" not in drill else (1 if drill["ok"] else 0)),
        gauge("vaultmesh_drill_last_rto_seconds", "The last drill's recovery time.", drill.get("rto_s")),
        gauge("vaultmesh_drill_last_rpo_seconds", "The last drill's snapshot age.", drill.get("rpo_s")),
    ]
    if certificates:
        expiry = GaugeMetricFamily(CERT_EXPIRY, "When the certificate ends (not after), as its listener serves it.",
                                   labels=["cert"])
        for name, when in sorted(certificates.items()):
            expiry.add_metric([name], float(when))
        out.append(expiry)
    return [f for f in out if f is not None]


def _none() -> dict[str, float]:
    return {}


class _Collector:
    def __init__(self, record: Callable[[], KeeperStatus],
                 certificates: Callable[[], dict[str, float]] = _none) -> None:
        self.record = record
        self.certificates = certificates

    def collect(self) -> Iterator[Metric]:
        yield from families(self.record(), self.certificates())


Answer = tuple[str, list[tuple[str, str]], bytes]
"""An HTTP status line, headers and body."""
Route = Callable[[Mapping[str, Any]], Answer | None]
"""A WSGI request's environ -> its answer, or None for ``/metrics`` to answer it."""


def serve_metrics(record: Callable[[], KeeperStatus], cert: Path, key: Path, port: int,
                  certificates: Callable[[], dict[str, float]] = _none, page: Route | None = None) -> tuple[str, Any]:
    """Listen on 127.0.0.1:``port`` (0: any free one) over TLS; returns the address and the server.
    ``certificates``: the expiry gauge's values at scrape time; ``page``: the paths it answers first."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(record, certificates))  # type: ignore[arg-type]
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry, certfile=str(cert),
                                  keyfile=str(key))
    if page is not None:
        metrics_app = server.get_app()

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            got = page(environ)
            if got is None:
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            status, headers, body = got
            start_response(status, [*headers, ("Content-Length", str(len(body)))])
            return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

        server.set_app(app)
    return f"https://127.0.0.1:{server.server_port}/metrics", server


def reload_tls(server: Any, cert: Path, key: Path) -> None:
    """Have the listening ``server`` use the pair now in ``cert``/``key`` for every new handshake (connections
    already open keep theirs). Raises OSError or ssl.SSLError when the pair cannot be loaded; the old one stays."""
    server.socket.context.load_cert_chain(certfile=str(cert), keyfile=str(key))
