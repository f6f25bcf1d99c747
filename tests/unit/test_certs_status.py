"""`status` names the certificate that ends first (by its file; `certs status` asks the listeners)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from vaultmesh import pki
from vaultmesh.fsutil import write_atomic
from vaultmesh.layout import build_layout
from vaultmesh.lifecycle.status import soonest_certificate

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_status_names_the_certificate_that_ends_first(tmp_path: Path) -> None:
    layout = build_layout("m", tmp_path, [("node-1", "a"), ("node-2", "b")], list(range(9000, 9005)),
                          transit_seal=False)
    assert soonest_certificate(layout, T0) is None  # nothing on disk yet
    ca = pki.create_ca("m CA", now=T0, days=3650)
    write_atomic(layout.paths.ca_cert, ca.cert_pem)
    for node, days in zip(layout.nodes, (90, 30), strict=True):
        pair = pki.issue_server_cert(ca, node.name, dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=T0,
                                     days=days)
        write_atomic(node.cert_file, pair.cert_pem)
    assert soonest_certificate(layout, T0 + dt.timedelta(days=10)) == {
        "name": "node-2", "not_after": "2026-01-31T00:00:00Z", "days_left": 20.0}
