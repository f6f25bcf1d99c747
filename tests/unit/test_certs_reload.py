"""Our own listeners (the identity issuer, the keeper's /metrics) serve a renewed pair without a restart."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from vaultmesh import pki
from vaultmesh.certs.probe import served, served_or_why
from vaultmesh.errors import VaultmeshError
from vaultmesh.fsutil import write_atomic
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.server import IssuerServer
from vaultmesh.keeper.metrics import reload_tls, serve_metrics
from vaultmesh.lifecycle.keeper_process import KeeperStatus

NOW = dt.datetime.now(dt.UTC)


def _leaf(ca: pki.CertPair, cert: Path, key: Path) -> str:
    pair = pki.issue_server_cert(ca, "test", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=NOW, days=1)
    write_atomic(key, pair.key_pem)
    write_atomic(cert, pair.cert_pem, mode=0o644)
    return format(pair.cert.serial_number, "x")


@pytest.fixture
def files(tmp_path: Path) -> tuple[pki.CertPair, Path, Path, Path]:
    ca = pki.create_ca("test CA", now=NOW, days=10)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    return ca, ca_file, tmp_path / "cert.pem", tmp_path / "key.pem"


def test_the_issuer_serves_a_renewed_pair_after_reload(files: tuple[pki.CertPair, Path, Path, Path],
                                                       tmp_path: Path) -> None:
    ca, ca_file, cert, key = files
    first = _leaf(ca, cert, key)
    ring = KeyRing.load_or_create(tmp_path / "keys", time.time())
    with IssuerServer(ring, certfile=cert, keyfile=key, port=0) as server:
        address = f"127.0.0.1:{server.port}"
        assert served(address, ca_file).serial == first
        second = _leaf(ca, cert, key)
        assert served(address, ca_file).serial == first  # nothing changes until told
        server.reload_tls()
        assert served(address, ca_file).serial == second
        key.write_bytes(b"not a key")
        with pytest.raises(VaultmeshError, match="old one is still served"):
            server.reload_tls()
        assert served(address, ca_file).serial == second


def test_the_keeper_metrics_serve_a_renewed_pair_after_reload(files: tuple[pki.CertPair, Path, Path, Path]) -> None:
    ca, ca_file, cert, key = files
    first = _leaf(ca, cert, key)
    addr, server = serve_metrics(lambda: KeeperStatus(pid=1, started=0), cert, key, 0)
    try:
        address = addr.split("://", 1)[1].split("/", 1)[0]
        assert served(address, ca_file).serial == first
        second = _leaf(ca, cert, key)
        reload_tls(server, cert, key)
        assert served(address, ca_file).serial == second
    finally:
        server.shutdown()
        server.server_close()


def test_a_listener_that_is_down_or_untrusted_is_said_so(files: tuple[pki.CertPair, Path, Path, Path],
                                                       tmp_path: Path) -> None:
    ca, ca_file, cert, key = files
    _leaf(ca, cert, key)
    from vaultmesh.runtime.local import free_ports

    facts, why = served_or_why(f"127.0.0.1:{free_ports(1)[0]}", ca_file)
    assert facts is None and why is not None and why.startswith("down:")
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pki.create_ca("other CA", now=NOW, days=10).cert_pem)
    ring = KeyRing.load_or_create(tmp_path / "keys", time.time())
    with IssuerServer(ring, certfile=cert, keyfile=key, port=0) as server:
        facts, why = served_or_why(f"127.0.0.1:{server.port}", other)
        assert facts is None and why is not None and why.startswith("not verified")
