"""Ask each listener which certificate it serves (the edge): a TLS handshake verified with the mesh CA."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path

from vaultmesh.certs.report import Facts, Row, Target, facts_of_der, facts_of_pem, host_port, row_of, targets
from vaultmesh.errors import VaultmeshError
from vaultmesh.identity.server import read_issuer_record
from vaultmesh.lifecycle import keeper_process
from vaultmesh.lifecycle import mesh as m
from vaultmesh.runtime import processes

HANDSHAKE_TIMEOUT = 3.0
"""A handshake on loopback takes milliseconds; a listener silent this long is reported as not answering."""


def served_der(address: str, context: ssl.SSLContext, server_name: str = "localhost",
               timeout: float = HANDSHAKE_TIMEOUT) -> bytes:
    """The certificate (DER) ``address`` (host:port) serves, verified by ``context`` for ``server_name``.
    Raises OSError (down, refused, timed out) or ssl.SSLError (it does not verify)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock, \
            context.wrap_socket(sock, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("no certificate served")
    return der


def served(address: str, ca_file: Path, server_name: str = "localhost",
           timeout: float = HANDSHAKE_TIMEOUT) -> Facts:
    """The certificate ``address`` (host:port) serves, verified against ``ca_file`` for ``server_name``.
    Raises OSError (down, refused, timed out) or ssl.SSLError (it does not verify)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    return facts_of_der(served_der(address, context, server_name, timeout))


def served_or_why(address: str, ca_file: Path, server_name: str = "localhost") -> tuple[Facts | None, str | None]:
    """``served``, or None and one short reason (``down: connection refused``, ``not verified: ...``)."""
    try:
        return served(address, ca_file, server_name), None
    except ssl.SSLCertVerificationError as err:
        return None, f"not verified: {err.verify_message or err.reason}"
    except ssl.SSLError as err:
        return None, f"TLS failed: {err.reason or err}"
    except TimeoutError:
        return None, "down: no answer"
    except OSError as err:
        return None, f"down: {err.strerror or err}".lower()


def file_facts(path: Path | None) -> Facts | None:
    """The certificate in ``path``; None when there is no file or it is not a certificate."""
    if path is None:
        return None
    try:
        return facts_of_pem(path.read_bytes())
    except (OSError, ValueError):
        return None


def mesh_targets(mesh: m.Mesh) -> list[Target]:
    """The targets of ``mesh``, with the issuer's and keeper's addresses from their records."""
    issuer = read_issuer_record(mesh.paths.root)
    keeper = keeper_process.read_status(mesh.paths)
    try:
        entry = m.entry_wanted(mesh.spec)
    except VaultmeshError:
        entry = False
    return targets(mesh.layout, entry=entry,
                   issuer=f"{issuer.host}:{issuer.port}" if issuer is not None and issuer.port else None,
                   keeper=host_port(keeper.metrics) if keeper is not None else None)


def running(mesh: m.Mesh, target: Target) -> bool | None:
    """Whether the process behind ``target`` runs (by its pid file); None for the CA."""
    layout = mesh.layout
    if target.kind == "node":
        return processes.node_process(layout.node(target.name)).pid() is not None
    if target.kind == "seal":
        assert layout.seal_node is not None
        return processes.node_process(layout.seal_node, "seal").pid() is not None
    if target.kind == "entry":
        return processes.entry_process(layout).pid() is not None
    if target.kind == "issuer":
        return processes.issuer_process(mesh.paths).pid() is not None
    if target.kind == "keeper":
        return processes.keeper_process(mesh.paths).pid() is not None
    return None


def observe(mesh: m.Mesh, only: list[Target] | None = None) -> list[Row]:
    """One row per target: what its listener serves, or its file when the listener does not answer."""
    ca = mesh.paths.ca_cert
    rows = []
    for t in only if only is not None else mesh_targets(mesh):
        file = file_facts(t.cert_file)
        if t.address is None:
            rows.append(row_of(t, served=None, failure=None if t.kind == "ca" else "never started", file=file))
            continue
        if running(mesh, t) is False:
            rows.append(row_of(t, served=None, failure="down: not running", file=file))
            continue
        facts, why = served_or_why(t.address, ca, t.server_name)
        rows.append(row_of(t, served=facts, failure=why, file=file))
    return rows


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
