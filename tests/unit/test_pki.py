"""The mesh PKI: a CA that can sign server certificates only, and node certificates clients can verify."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from vaultmesh import pki

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> pki.CertPair:
    return pki.create_ca("vaultmesh test CA", now=NOW, days=3650)


@pytest.fixture(scope="module")
def node_cert(ca: pki.CertPair) -> pki.CertPair:
    dns, ips = pki.node_cert_names("node-2")
    return pki.issue_server_cert(ca, "node-2", dns_names=dns, ip_addresses=ips, now=NOW, days=90)


def sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_the_ca_is_a_ca_that_can_sign_no_further_cas(ca: pki.CertPair):
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is True
    assert constraints.value.path_length == 0


def test_the_ca_may_sign_certificates_and_crls(ca: pki.CertPair):
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign


def test_the_ca_is_self_signed(ca: pki.CertPair):
    ca.cert.verify_directly_issued_by(ca.cert)


def test_the_ca_lives_the_requested_number_of_days(ca: pki.CertPair):
    assert ca.cert.not_valid_after_utc == NOW + dt.timedelta(days=3650)


def test_certificates_are_valid_from_a_little_before_now_to_tolerate_clock_skew(ca: pki.CertPair):
    assert NOW - dt.timedelta(minutes=10) < ca.cert.not_valid_before_utc < NOW


def test_the_ca_key_is_unencrypted_pkcs8_pem(ca: pki.CertPair):
    assert ca.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_a_server_certificate_verifies_against_its_ca(ca: pki.CertPair, node_cert: pki.CertPair):
    node_cert.cert.verify_directly_issued_by(ca.cert)


def test_a_server_certificate_does_not_verify_against_another_ca(node_cert: pki.CertPair):
    other = pki.create_ca("vaultmesh test CA", now=NOW, days=10)
    with pytest.raises(InvalidSignature):
        node_cert.cert.verify_directly_issued_by(other.cert)


def test_a_server_certificate_is_not_a_ca(node_cert: pki.CertPair):
    assert node_cert.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_node_certificates_name_loopback_localhost_and_the_node(node_cert: pki.CertPair):
    names = sans(node_cert.cert)
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "node-2"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                              ipaddress.ip_address("::1")}


def test_duplicate_names_are_listed_once(ca: pki.CertPair):
    pair = pki.issue_server_cert(ca, "n", dns_names=["localhost", "localhost"], ip_addresses=["127.0.0.1"] * 2,
                                 now=NOW, days=1)
    assert len(list(sans(pair.cert))) == 2


def test_server_certificates_serve_and_authenticate_clients(node_cert: pki.CertPair):
    usages = node_cert.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages


def test_a_server_certificate_lives_the_requested_days(node_cert: pki.CertPair):
    assert node_cert.cert.not_valid_after_utc == NOW + dt.timedelta(days=90)


def test_a_server_certificate_never_outlives_its_ca():
    short_ca = pki.create_ca("short", now=NOW, days=30)
    pair = pki.issue_server_cert(short_ca, "n", dns_names=["localhost"], ip_addresses=[], now=NOW, days=90)
    assert pair.cert.not_valid_after_utc == short_ca.cert.not_valid_after_utc


def test_days_left_counts_down_to_expiry(node_cert: pki.CertPair):
    assert pki.days_left(node_cert.cert_pem, NOW) == pytest.approx(90)
    assert pki.days_left(node_cert.cert_pem, NOW + dt.timedelta(days=89, hours=12)) == pytest.approx(0.5)


def test_days_left_is_negative_after_expiry(node_cert: pki.CertPair):
    assert pki.days_left(node_cert.cert_pem, NOW + dt.timedelta(days=91)) == pytest.approx(-1)


def test_every_certificate_gets_a_fresh_key(ca: pki.CertPair):
    a = pki.issue_server_cert(ca, "n", dns_names=["localhost"], ip_addresses=[], now=NOW, days=1)
    b = pki.issue_server_cert(ca, "n", dns_names=["localhost"], ip_addresses=[], now=NOW, days=1)
    assert a.key_pem != b.key_pem
    assert a.cert.serial_number != b.cert.serial_number


# -- a real TLS handshake on loopback -------------------------------------------------------------------------

def _serve_once(server_ctx: ssl.SSLContext) -> tuple[int, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]

    def accept() -> None:
        with listener:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (ssl.SSLError, OSError):
                    pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return port, thread


def _handshake(port: int, cafile: Path, server_hostname: str = "127.0.0.1") -> bytes:
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
        return tls.recv(2)


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    dns, ips = pki.node_cert_names("node-1")
    now = dt.datetime.now(dt.UTC)
    live_ca = pki.create_ca("live CA", now=now, days=1)
    node = pki.issue_server_cert(live_ca, "node-1", dns_names=dns, ip_addresses=ips, now=now, days=1)
    other = pki.create_ca("live CA", now=now, days=1)
    files = {"ca": live_ca.cert_pem, "cert": node.cert_pem, "key": node.key_pem, "other_ca": other.cert_pem}
    paths = {}
    for name, pem in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(pem)
    return paths


def _server_context(files: dict[str, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files["cert"], files["key"])
    return ctx


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost", "node-1"])
def test_a_client_trusting_the_mesh_ca_completes_a_handshake_with_a_node(tls_files: dict[str, Path],
                                                                          hostname: str):
    port, thread = _serve_once(_server_context(tls_files))
    assert _handshake(port, tls_files["ca"], hostname) == b"ok"
    thread.join(5)


def test_a_client_trusting_another_ca_refuses_the_node(tls_files: dict[str, Path]):
    port, thread = _serve_once(_server_context(tls_files))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(port, tls_files["other_ca"])
    thread.join(5)


def test_a_client_asking_for_a_name_the_node_does_not_carry_refuses_it(tls_files: dict[str, Path]):
    port, thread = _serve_once(_server_context(tls_files))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(port, tls_files["ca"], "node-9")
    thread.join(5)


def test_a_client_with_strict_x509_checks_accepts_the_node(tls_files: dict[str, Path]):
    """Python 3.13 turns on VERIFY_X509_STRICT in its default context; the mesh PKI must pass it."""
    port, thread = _serve_once(_server_context(tls_files))
    ctx = ssl.create_default_context(cafile=str(tls_files["ca"]))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.recv(2) == b"ok"
    thread.join(5)
