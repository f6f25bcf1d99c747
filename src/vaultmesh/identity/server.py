"""The HTTPS OIDC issuer: serves discovery and the JWKS so OpenBao's JWT auth can verify workload tokens.

Routes (relative to the issuer URL's path)::

    GET /.well-known/openid-configuration   discovery document (issuer, jwks_uri, ...)
    GET /keys                               the published public keys, recomputed on every request
    anything else                           404

The JWKS is computed per request from the key ring, which is re-read from disk when its metadata file changes,
so ``vaultmesh identity rotate`` in another process shows up without a restart. Requests are logged only at
DEBUG level on the ``vaultmesh.identity.server`` logger (method, path, status; nothing else is ever logged).
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vaultmesh.errors import RuntimeFailure, StateError, VaultmeshError
from vaultmesh.identity.keys import KeyRing, write_private_file
from vaultmesh.identity.tokens import DISCOVERY_PATH, JWKS_PATH, discovery_document, jwks
from vaultmesh.layout import StatePaths, https_url

log = logging.getLogger(__name__)

CACHE_CONTROL = "max-age=60"
"""Verifiers may cache discovery and keys for a minute; go-oidc refetches anyway on an unknown ``kid``."""

REQUEST_TIMEOUT = 10.0
"""Seconds a connection may take for its TLS handshake and request before it is dropped."""

POLL_INTERVAL = 0.2
"""Seconds between the serving loop's checks for ``stop()``: how long a stop waits at the most."""


RECORD_VERSION = 1


def keys_dir(state_dir: str | Path) -> Path:
    """The key ring directory (``StatePaths.identity_keys``)."""
    return StatePaths(Path(state_dir)).identity_keys


def issuer_record_path(state_dir: str | Path) -> Path:
    """Where ``identity serve`` records its URL for other commands (``StatePaths.issuer_record``)."""
    return StatePaths(Path(state_dir)).issuer_record


@dataclass(frozen=True, slots=True)
class IssuerRecord:
    """What ``identity serve`` leaves in ``issuer.json``; ``pid`` is None once the server has exited."""

    issuer: str
    host: str
    port: int
    max_token_ttl: float
    certfile: str
    pid: int | None = None


def read_issuer_record(state_dir: str | Path) -> IssuerRecord | None:
    """Return the recorded issuer, or None if no issuer was ever served from ``state_dir``."""
    path = issuer_record_path(state_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StateError(f"cannot read {path}: {err}") from None
    if not isinstance(doc, dict) or doc.get("version") != RECORD_VERSION:
        raise StateError(f"{path} is not an identity issuer record this vaultmesh can read")
    try:
        return IssuerRecord(
            issuer=str(doc["issuer"]), host=str(doc["host"]), port=int(doc["port"]),
            max_token_ttl=float(doc["max_token_ttl"]), certfile=str(doc["certfile"]),
            pid=None if doc.get("pid") is None else int(doc["pid"]),
        )
    except (KeyError, TypeError, ValueError):
        raise StateError(f"{path} is missing fields or has malformed ones") from None


def write_issuer_record(state_dir: str | Path, record: IssuerRecord) -> None:
    """Write ``issuer.json`` atomically (0600)."""
    path = issuer_record_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {"version": RECORD_VERSION, **asdict(record)}
    write_private_file(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def issuer_url_for(host: str, port: int) -> str:
    """Return ``https://<host>:<port>``, naming loopback for a wildcard bind address."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return https_url(host, port)


class IssuerServer:
    """An OIDC issuer over HTTPS (TLS 1.2+) for the keys in ``ring``.

    ``issuer_url`` defaults to ``https://<host>:<port>`` with the port actually bound (``port=0`` picks a free
    one); it must equal the ``iss`` of the tokens and OpenBao's ``bound_issuer``. ``max_token_ttl`` bounds the
    lifetime of any token signed by the ring: a retired key is published that long after its retirement.
    """

    def __init__(
        self,
        ring: KeyRing,
        *,
        certfile: str | Path,
        keyfile: str | Path,
        issuer_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_token_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ring = ring
        self._ring_lock = threading.Lock()
        self._certfile = Path(certfile)
        self._keyfile = Path(keyfile)
        self._issuer_url = issuer_url
        self._host = host
        self._port = port
        self._max_token_ttl = max_token_ttl
        self._clock = clock
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = False
        self._discovery_body = b""
        self._base_path = ""

    # -- addresses -----------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The listening port once bound (the requested one before)."""
        return self._port

    @property
    def issuer_url(self) -> str:
        return self._issuer_url or issuer_url_for(self._host, self._port)

    # -- running -------------------------------------------------------------------------------------------

    def listen(self) -> None:
        """Bind and listen (TLS set up); from here on ``port`` and ``issuer_url`` are final. Idempotent."""
        if self._httpd is None:
            self._bind()

    def _begin_serving(self) -> _HTTPServer:
        """Listen (see ``listen``) and mark the issuer as serving; refused while it already serves."""
        if self._serving:
            raise RuntimeFailure("the identity issuer is already serving")
        self.listen()
        assert self._httpd is not None
        self._serving = True
        return self._httpd

    def start(self) -> None:
        """Listen and serve from a background thread; return once the socket is listening."""
        httpd = self._begin_serving()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": POLL_INTERVAL},
                                        name="vaultmesh-identity-issuer", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Listen and serve in the calling thread until ``stop()`` (from another thread) or an exception."""
        httpd = self._begin_serving()
        try:
            httpd.serve_forever(poll_interval=POLL_INTERVAL)
        finally:
            self._serving = False
            self._close()

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call more than once."""
        httpd = self._httpd
        if httpd is None:
            return
        if self._serving:
            httpd.shutdown()
            self._serving = False
        if self._thread is not None:
            self._thread.join(timeout=REQUEST_TIMEOUT)
            self._thread = None
        self._close()

    def reload_tls(self) -> None:
        """Serve the pair now in the certificate and key files to every new handshake (``certs rotate`` sends
        SIGHUP); connections already open keep theirs. A pair that does not load raises and the old one stays."""
        httpd = self._httpd
        if httpd is None:
            return
        try:
            httpd.socket.context.load_cert_chain(certfile=self._certfile, keyfile=self._keyfile)  # type: ignore[attr-defined]
        except (OSError, ssl.SSLError) as err:
            raise VaultmeshError(f"cannot load the identity issuer's new TLS certificate {self._certfile} / key "
                                 f"{self._keyfile}: {err}", hint="the old one is still served") from None

    def __enter__(self) -> IssuerServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what is served ------------------------------------------------------------------------------------

    def current_jwks(self) -> dict[str, Any]:
        """Return the JWKS for now, re-reading the ring first if another process changed it."""
        with self._ring_lock:
            try:
                self._ring.refresh()
            except VaultmeshError as err:
                log.warning("keeping the last good identity keys: %s", err)
            keys = self._ring.published(self._clock(), self._max_token_ttl)
        return jwks(keys)

    def respond(self, path: str) -> tuple[int, bytes]:
        """Return the status and JSON body for a GET of ``path`` (query string ignored)."""
        route = path.split("?", 1)[0].split("#", 1)[0]
        if route == self._base_path + DISCOVERY_PATH:
            return 200, self._discovery_body
        if route == self._base_path + JWKS_PATH:
            return 200, _json_bytes(self.current_jwks())
        return 404, _json_bytes({"error": "not found"})

    # -- internals -----------------------------------------------------------------------------------------

    def _bind(self) -> None:
        context = _tls_context(self._certfile, self._keyfile)
        try:
            httpd = _HTTPServer((self._host, self._port), self)
        except OSError as err:
            raise RuntimeFailure(
                f"identity issuer cannot listen on {self._host}:{self._port}: {err.strerror or err}",
                hint="choose another --port, or --port 0 for a free one",
            ) from None
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self._port = httpd.server_address[1]
        try:
            discovery = discovery_document(self.issuer_url)
        except VaultmeshError:
            httpd.server_close()
            raise
        self._base_path = urlsplit(self.issuer_url).path.rstrip("/")
        self._discovery_body = _json_bytes(discovery)
        self._httpd = httpd

    def _close(self) -> None:
        if self._httpd is not None:
            self._httpd.server_close()
            self._httpd = None


def _tls_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    except (OSError, ssl.SSLError) as err:
        raise VaultmeshError(
            f"cannot load the identity issuer's TLS certificate {certfile} / key {keyfile}: {err}"
        ) from None
    return context


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


HANDSHAKE_TIMEOUT = 2.0
"""A TLS handshake takes milliseconds on loopback; a connection still silent after this is dropped."""

MAX_CONNECTIONS = 64
"""Connections served at once, one thread each; more are closed at once. With ``REQUEST_TIMEOUT`` on every
read, slow clients (slowloris) hold at most this many threads for at most that long."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], issuer: IssuerServer) -> None:
        self.issuer = issuer
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            log.debug("identity issuer: %d connections open; closing the one from %s", MAX_CONNECTIONS,
                      client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS lookup); we never use it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed handshakes and dropped connections are the client's business; keep the console quiet.
        log.debug("identity issuer: connection from %s failed: %s", client_address, sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "vaultmesh-identity"
    sys_version = ""
    timeout = REQUEST_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.request.settimeout(HANDSHAKE_TIMEOUT)  # a client that never finishes its handshake lets go soon
        self.request.do_handshake()  # here, in the connection's own thread, not in accept()
        self.request.settimeout(self.timeout)

    def do_GET(self) -> None:
        self._reply(send_body=True)

    def do_HEAD(self) -> None:
        self._reply(send_body=False)

    def _reply(self, *, send_body: bool) -> None:
        try:
            status, body = self.server.issuer.respond(self.path)
        except Exception:
            log.exception("identity issuer failed to answer %s", self.path)
            status, body = 500, _json_bytes({"error": "internal error"})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", CACHE_CONTROL if status == 200 else "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("identity issuer: %s " + format, self.address_string(), *args)
