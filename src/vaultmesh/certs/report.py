"""What the mesh serves and trusts, and when a certificate is due for renewal. Pure: values in, values out.

A *target* is one certificate the mesh owns: a listener (each node's API listener, the transit seal node, the
identity issuer, the keeper's ``/metrics``) with the files it serves from, the entry (HAProxy passes TLS
through, so it serves the active node's certificate and has no file of its own), and the CA (a file only).

Raft's cluster listener is not a target: OpenBao serves it from its own keyring, made at init and rotated every
24 h by OpenBao itself (``raftTLSRotationPeriod``), not from the mesh CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from vaultmesh.layout import HOST, MeshLayout

RENEW_AT = 2 / 3
"""A leaf is renewed once two thirds of its lifetime have passed: 30 days before the end of a 90-day
certificate, so a renewal that fails has a month of retries and alerts before anything breaks."""

Kind = Literal["node", "seal", "entry", "issuer", "keeper", "ca"]


@dataclass(frozen=True)
class Target:
    """One certificate of the mesh: where it is served (``address`` host:port, None for the CA) and the files
    it is served from (None for the entry, which passes the nodes' TLS through)."""

    name: str
    kind: Kind
    address: str | None
    cert_file: Path | None
    key_file: Path | None = None
    server_name: str = "localhost"

    @property
    def leaf(self) -> bool:
        """A certificate ``rotate`` re-issues (a listener's own files, not the CA's, not the entry's)."""
        return self.kind not in ("ca", "entry")


def targets(layout: MeshLayout, *, entry: bool, issuer: str | None, keeper: str | None) -> list[Target]:
    """Every certificate of the mesh in ``layout``, in report order: the nodes, the seal node (transit seal),
    the entry (when it runs), the identity issuer and the keeper (``host:port`` of each, None when it has never
    listened), the CA."""
    paths = layout.paths
    out = [Target(n.name, "node", f"{n.host}:{n.api_port}", n.cert_file, n.key_file) for n in layout.nodes]
    if layout.seal_node is not None:
        s = layout.seal_node
        out.append(Target("seal", "seal", f"{s.host}:{s.api_port}", s.cert_file, s.key_file))
    if entry:
        out.append(Target("entry", "entry", layout.entry_addr.removeprefix("https://"), None))
    out.append(Target("identity", "issuer", issuer, paths.identity_cert, paths.identity_key))
    out.append(Target("keeper", "keeper", keeper, paths.keeper_cert, paths.keeper_key))
    out.append(Target("ca", "ca", None, paths.ca_cert))
    return out


def host_port(url: str | None) -> str | None:
    """``https://127.0.0.1:8200/metrics`` -> ``127.0.0.1:8200``; None stays None."""
    if not url:
        return None
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0] or None


@dataclass(frozen=True)
class Facts:
    """What a certificate says: subject and issuer (RFC 4514), serial (hex), validity (UTC), and its SANs."""

    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    @property
    def common_name(self) -> str:
        for part in self.subject.split(","):
            key, _, value = part.partition("=")
            if key.strip().upper() == "CN":
                return value.strip()
        return self.subject

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def facts_of(cert: x509.Certificate) -> Facts:
    """The facts of a parsed certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    return Facts(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), serial_hex(cert.serial_number),
                 cert.not_valid_before_utc, cert.not_valid_after_utc, dns, ips)


def facts_of_pem(pem: bytes) -> Facts:
    return facts_of(x509.load_pem_x509_certificate(pem))


def facts_of_der(der: bytes) -> Facts:
    return facts_of(x509.load_der_x509_certificate(der))


def due(facts: Facts, now: dt.datetime, *, at: float = RENEW_AT) -> bool:
    """Whether the certificate has passed ``at`` (two thirds) of its lifetime at ``now``, or is expired."""
    life = facts.not_after - facts.not_before
    return now >= facts.not_before + life * at


def renew_when(facts: Facts, *, at: float = RENEW_AT) -> dt.datetime:
    """When the certificate becomes due."""
    return facts.not_before + (facts.not_after - facts.not_before) * at


def reissue_names(facts: Facts | None, default_dns: Iterable[str], default_ips: Iterable[str]) -> tuple[
        list[str], list[str]]:
    """The SANs of a certificate's successor: the old one's when it had any, else the defaults; always with
    ``localhost`` and 127.0.0.1 (every client of the mesh names a listener so)."""
    dns = list(facts.dns_names) if facts and (facts.dns_names or facts.ip_addresses) else list(default_dns)
    ips = list(facts.ip_addresses) if facts and (facts.dns_names or facts.ip_addresses) else list(default_ips)
    for name in ("localhost",):
        if name not in dns:
            dns.insert(0, name)
    if not any(ipaddress.ip_address(a) == ipaddress.ip_address(HOST) for a in ips):
        ips.insert(0, HOST)
    return dns, ips


Source = Literal["listener", "file"]


@dataclass(frozen=True)
class Row:
    """One line of ``certs status``: what the listener serves (``source`` listener), or, when it cannot be
    asked (down, never started, the CA), what its file holds (``source`` file) and why (``down``)."""

    name: str
    address: str | None
    source: Source
    facts: Facts | None
    down: str | None = None
    """Why the listener was not asked or did not answer (None: it answered, or there is no listener)."""
    file_serial: str | None = None
    """The serial of the file beside it, when the listener serves another one (a reload still to come)."""

    def days_left(self, now: dt.datetime) -> float | None:
        return None if self.facts is None else self.facts.days_left(now)

    @property
    def pending(self) -> bool:
        """The listener serves another certificate than its file holds."""
        return self.file_serial is not None

    def to_json(self, now: dt.datetime) -> dict[str, Any]:
        f = self.facts
        days = self.days_left(now)
        return {"name": self.name, "address": self.address, "subject": f.subject if f else None,
                "serial": f.serial if f else None, "issuer": f.issuer if f else None,
                "not_after": f.not_after.isoformat().replace("+00:00", "Z") if f else None,
                "days_left": None if days is None else round(days, 2), "source": self.source,
                "down": self.down, "file_serial": self.file_serial}


def row_of(target: Target, *, served: Facts | None, failure: str | None, file: Facts | None) -> Row:
    """The row of ``target`` from what its listener served (or why it could not be asked) and its file."""
    if served is not None:
        stale = file.serial if file is not None and target.leaf and file.serial != served.serial else None
        return Row(target.name, target.address, "listener", served, file_serial=stale)
    return Row(target.name, target.address, "file", file, down=failure)


COLUMNS = ("certificate", "address", "subject", "serial", "issuer", "not after", "days left", "from")


def table_rows(rows: Iterable[Row], now: dt.datetime) -> list[tuple[str, ...]]:
    """The ``certs status`` table, in ``COLUMNS`` order. For the CLI to render."""
    out = []
    for r in rows:
        f = r.facts
        days = r.days_left(now)
        source = r.source if r.down is None else f"file ({r.down})"
        if r.pending:
            source += f"; file holds {r.file_serial[:12]}, reload pending"
        out.append((r.name, r.address or "-", f.common_name if f else "-", f.serial[:12] if f else "-",
                    _short_issuer(f.issuer) if f else "-", f.not_after.strftime("%Y-%m-%d %H:%M") if f else "-",
                    "-" if days is None else f"{days:.0f}", source))
    return out


def _short_issuer(issuer: str) -> str:
    for part in issuer.split(","):
        key, _, value = part.partition("=")
        if key.strip().upper() == "CN":
            return value.strip()
    return issuer


def soonest(rows: Iterable[Row]) -> Row | None:
    """The row whose certificate ends first (the one to watch)."""
    with_facts = [r for r in rows if r.facts is not None]
    return min(with_facts, key=lambda r: r.facts.not_after) if with_facts else None  # type: ignore[union-attr]


def expiry_gauges(rows: Iterable[Row]) -> dict[str, float]:
    """``cert`` label -> not-after (Unix seconds) for ``vaultmesh_certificate_expiry_timestamp_seconds``."""
    return {r.name: r.facts.not_after.timestamp() for r in rows if r.facts is not None}


def due_targets(targets_: Iterable[Target], rows: Iterable[Row], files: dict[str, Facts | None],
                now: dt.datetime, *, at: float = RENEW_AT) -> list[Target]:
    """The leaves to renew now: one whose file is missing or due, or whose listener serves a certificate that
    is due (``files``: each target's file facts by name, None when missing or unreadable)."""
    by_name = {r.name: r for r in rows}
    out = []
    for t in targets_:
        if not t.leaf:
            continue
        file = files.get(t.name)
        row = by_name.get(t.name)
        served = row.facts if row is not None and row.source == "listener" else None
        if file is None or due(file, now, at=at) or (served is not None and due(served, now, at=at)):
            out.append(t)
    return out
