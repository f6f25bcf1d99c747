"""The issuer's serving lifecycle: load (or create) the key ring, refuse a second issuer for the same state dir,
keep the port of the last run (so the issuer URL, and every JWT auth config naming it, stays valid), serve
until SIGTERM or Ctrl-C, and record in ``issuer.json`` that it stopped.

``python -m vaultmesh.identity`` (the process ``vaultmesh up`` manages) and ``vaultmesh identity serve`` run it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from vaultmesh.errors import RuntimeFailure, VaultmeshError
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.server import (
    IssuerRecord,
    IssuerServer,
    issuer_record_path,
    keys_dir,
    read_issuer_record,
    write_issuer_record,
)
from vaultmesh.waiting import process_exists

DEFAULT_MAX_TOKEN_TTL = 3600.0
"""The longest lifetime of any token when none is given; retired keys stay published this long."""


def check_tls_pair(certfile: Path, keyfile: Path) -> None:
    """Raise VaultmeshError unless ``certfile`` and ``keyfile`` are a PEM certificate and its key."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(certfile), str(keyfile))
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or "not a certificate and key pair"
        raise VaultmeshError(f"cannot serve TLS with --cert {certfile} and --key {keyfile}: {reason}",
                             hint="pass the PEM certificate and its private key") from None


def open_issuer(state_dir: Path, *, certfile: Path, keyfile: Path, host: str = "127.0.0.1",
                port: int | None = None, max_token_ttl: float = DEFAULT_MAX_TOKEN_TTL,
                now: float | None = None) -> tuple[IssuerServer, IssuerRecord]:
    """A listening issuer for ``state_dir`` and the record it wrote. ``port`` None reuses the last run's port
    (else 0: a free one). Refused when another issuer of this state dir still runs; a bad TLS pair is refused
    before anything is written."""
    check_tls_pair(certfile, keyfile)
    now = time.time() if now is None else now
    ring = KeyRing.load_or_create(keys_dir(state_dir), now)
    previous = read_issuer_record(state_dir)
    if (previous is not None and previous.pid is not None and previous.pid != os.getpid()
            and process_exists(previous.pid)):
        raise RuntimeFailure(
            f"an identity issuer is already running for {state_dir} (pid {previous.pid}, {previous.issuer})",
            hint=f"stop it first, or delete {issuer_record_path(state_dir)} if that pid is not vaultmesh",
        )
    if port is None:
        port = previous.port if previous is not None else 0
    ring.prune(now, max_token_ttl)
    server = IssuerServer(ring, certfile=certfile, keyfile=keyfile, host=host, port=port,
                          max_token_ttl=max_token_ttl)
    server.listen()
    record = IssuerRecord(issuer=server.issuer_url, host=host, port=server.port, max_token_ttl=max_token_ttl,
                          certfile=str(certfile.resolve()), pid=os.getpid())
    write_issuer_record(state_dir, record)
    return server, record


def serve_issuer(state_dir: Path, *, certfile: Path, keyfile: Path, host: str = "127.0.0.1",
                 port: int | None = None, max_token_ttl: float = DEFAULT_MAX_TOKEN_TTL,
                 announce: Callable[[str], None] = print) -> None:
    """Serve the issuer in the foreground until SIGTERM or Ctrl-C; ``announce`` gets one line once it listens.
    On the way out the record keeps the URL and port and loses the pid."""
    server, record = open_issuer(state_dir, certfile=certfile, keyfile=keyfile, host=host, port=port,
                                 max_token_ttl=max_token_ttl)
    announce(f"identity issuer listening at {server.issuer_url} (pid {os.getpid()})")
    try:
        with sigterm_as_interrupt(), sighup_reloads_tls(server, announce):
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        write_issuer_record(state_dir, dataclasses.replace(record, pid=None))


@contextlib.contextmanager
def sighup_reloads_tls(server: IssuerServer, announce: Callable[[str], None]) -> Iterator[None]:
    """While serving, SIGHUP has the issuer load its certificate and key files again (``certs rotate``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def reload(signum: int, frame: FrameType | None) -> None:
        try:
            server.reload_tls()
        except VaultmeshError as err:
            announce(str(err))
            return
        announce("identity issuer: TLS certificate reloaded")

    previous = signal.signal(signal.SIGHUP, reload)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while serving, so the record is cleaned up either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
