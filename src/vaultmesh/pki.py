"""The mesh's own PKI: a CA and server certificates. Values in, PEM out; no disk, no clock reads."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: fast handshakes and small keys; supported by OpenBao, HAProxy, curl and Python's ssl.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(common_name: str, *, now: dt.datetime, days: int) -> CertPair:
    """Return a self-signed CA allowed to sign server certificates only (path length 0)."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vaultmesh")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_server_cert(ca: CertPair, common_name: str, *, dns_names: list[str], ip_addresses: list[str],
                      now: dt.datetime, days: int) -> CertPair:
    """Return a server+client certificate for ``common_name`` signed by ``ca``.

    Client auth is included because Raft's cluster port uses mutual TLS between nodes.
    """
    ca_cert = ca.cert
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(ip_addresses)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
                       critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def node_cert_names(node_name: str) -> tuple[list[str], list[str]]:
    """The SANs every node certificate carries: (dns names, ip addresses)."""
    return ["localhost", node_name], ["127.0.0.1", "::1"]


def days_left(cert_pem: bytes, now: dt.datetime) -> float:
    """Days until the certificate expires (negative when it already has)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


# -- trust bundles (a CA rotation: the CA file holds the CA that signs first, then the other one) ---------

def certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in order (a trust bundle has several). Raises ValueError when none."""
    return x509.load_pem_x509_certificates(pem)


def bundle(*cas: bytes) -> bytes:
    """One PEM file of the CAs ``cas`` (each a PEM), in order, each once."""
    parts = [p.strip() + b"\n" for p in dict.fromkeys(cas)]
    return b"".join(parts)


def serial_of(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def key_belongs_to(key_pem: bytes, cert: x509.Certificate) -> bool:
    """Whether the private key ``key_pem`` is the one of ``cert``'s public key."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def issuer_of(leaf: x509.Certificate, cas: list[x509.Certificate]) -> x509.Certificate | None:
    """The CA of ``cas`` that signed ``leaf`` (by its authority key identifier and the signature); None: none."""
    try:
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    for ca in cas:
        ski = x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest  # type: ignore[arg-type]
        if aki is not None and aki != ski:
            continue
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None
