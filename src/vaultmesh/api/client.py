"""One typed client for the OpenBao/Vault HTTP API, with failover across the mesh's nodes.

``EngineClient`` is the client; its pure parts are separate functions: which answers are retried on another
node (``classify``), how long to wait between tries (``RetryPolicy``), and how an answer becomes a value or an
``EngineError`` (``decode``). There is no async client: the SDK's ``async with`` runs this one in a thread.

Transport: the sync client's default transport (``StdlibTransport``) speaks HTTP/1.1 itself over the standard
library's ``ssl`` sockets, one kept-alive TLS connection per node. It does not use ``http.client``, which pulls
in the ``email`` package (~12 ms of the ~65 ms the run path spends importing on this machine), nor httpx
(~120 ms): ``vaultmesh run`` is started thousands of times and its start-up is the product. What it needs from
HTTP is small: one request at a time per connection, bodies sized by ``Content-Length`` or chunked, keep-alive,
and reconnecting once when the server closed an idle connection. Tests pass a ``Transport`` of their own.

``EngineClient.prefetch`` sends requests ahead of their caller in a thread (``vaultmesh run`` logs in and reads
its secrets while it imports the rest of itself); ``request`` hands the answer to the first identical request,
and ``close`` revokes what was fetched for nobody.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from vaultmesh.errors import EngineError, InsecureAddress, MissingCA, Unavailable, VaultmeshError
from vaultmesh.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and dataclasses stay off the import path of ``run``'s login (see the module doc)
    from typing import Any, BinaryIO, Literal, Protocol

    Handling = Literal["ok", "retry", "fail"]


def require_https(addrs: Iterable[str], source: str = "the address") -> None:
    """Refuse any address whose scheme is not https, before a request is made."""
    for a in addrs:
        scheme, sep, _ = a.strip().partition("://")
        if not sep or scheme.lower() != "https":
            raise InsecureAddress(f"refusing OpenBao address {a!r} from {source}: it is not https, so tokens "
                                  "and identity tokens would be sent in clear",
                                  hint="use the mesh's https:// address (`eval \"$(vaultmesh env)\"` sets it)")

RETRY_STATUSES = frozenset({307, 412, 429, 500, 502, 503, 504})
"""Answers worth trying again, maybe on another node: 307 (a standby that cannot forward redirects to the
active node; during an election there is none yet, so it means "ask again", never success), 412 (the node
has not caught up with the X-Vault-Index we sent), 429 (standby asked for the active node), 500 during a
leader election ("local node not active but active cluster node not found"), 502/504 (forwarding failed),
503 (sealed, or no leader)."""


class RetryPolicy(Value):
    """Capped exponential backoff with full jitter, within a deadline.

    Once the backoff reaches ``cap``, a client that finds the mesh down sends on average ~2/cap requests per
    second (full jitter), so a fleet of workloads retrying cannot storm it back down when it returns.

    - ``deadline`` (15 s): seconds to keep trying. Leader election with performance_multiplier 1 takes ~1-2 s;
      15 s also covers a node restart.
    - ``base`` (50 ms): the first wait; small, because the next node is usually healthy.
    - ``cap`` (1 s): the longest wait between tries.
    """

    __slots__ = ("base", "cap", "deadline")
    deadline: float
    base: float
    cap: float

    def __init__(self, deadline: float = 15.0, base: float = 0.05, cap: float = 1.0) -> None:
        self._set(deadline=deadline, base=base, cap=cap)

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        """Seconds to wait before try ``attempt`` (1-based count of failed tries so far)."""
        return rng() * min(self.cap, self.base * (2 ** min(attempt, 16)))


def classify(status: int | None) -> Handling:
    """``None`` means the connection failed."""
    if status is None or status in RETRY_STATUSES:
        return "retry"
    if 200 <= status < 400 or status == 404:
        return "ok"
    return "fail"


class Response(Value):
    """One answer: status, headers (names in lower case), the decoded JSON body, and the node that sent it."""

    __slots__ = ("data", "headers", "node", "status")
    status: int
    headers: Mapping[str, str]
    data: dict[str, Any] | None
    node: str

    def __init__(self, status: int, headers: Mapping[str, str], data: dict[str, Any] | None, node: str) -> None:
        self._set(status=status, headers=headers, data=data, node=node)

    @property
    def index(self) -> str | None:
        return self.headers.get("x-vault-index")


def _query(params: Mapping[str, str]) -> str:
    """``urlencode``, importing ``urllib.parse`` only when a value needs quoting (the run path's never do)."""
    if all(_plain(k) and _plain(str(v)) for k, v in params.items()):
        return "&".join(f"{k}={v}" for k, v in params.items())
    import urllib.parse

    return urllib.parse.urlencode(params)


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _plain(text: str) -> bool:
    return bool(text) and all(c in _SAFE for c in text)


def decode(status: int, headers: Mapping[str, str], body: bytes, node: str, method: str,
           path: str) -> Response:
    data: dict[str, Any] | None = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {"errors": [body.decode(errors="replace")[:200]]}
        data = parsed if isinstance(parsed, dict) else {"data": parsed}
    # A 404 is "absent" only for reads (GET, LIST) and for DELETE of what is already gone; a write the
    # server did not acknowledge (PUT/POST/PATCH answered 404, e.g. a standby's "unsupported path") is an error.
    if status >= 400 and not (status == 404 and method in ("GET", "LIST", "DELETE", "HEAD")):
        errors = (data or {}).get("errors") or []
        raise EngineError.from_status(status, [str(e) for e in errors], method=method, path="/" + path,
                                      node=node)
    return Response(status, headers, data, node)


class Transport(Protocol if TYPE_CHECKING else object):  # type: ignore[misc]
    """What carries the client's requests: ``StdlibTransport``, a test's fake, httpx's mock transport."""

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        """Send one request to node ``addr``; raise OSError (or a subclass) when the connection fails."""
        ...

    def close(self) -> None: ...


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """TLS verified always: the mesh CA when given, else the system store."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        raise MissingCA(f"cannot read the CA file {ca_file!r} (--ca-cert / BAO_CACERT / VAULT_CACERT): "
                        f"{getattr(err, 'strerror', None) or err}",
                        hint="point it at the mesh CA, <dir>/pki/ca.pem (`vaultmesh env` prints it)") from err
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _file_stamp(path: str | None) -> tuple[int, int, int] | None:
    """What says a file changed (inode, size, mtime in ns); None without a file."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class RemoteDisconnected(ConnectionResetError):
    """The server closed the connection without an answer (a kept-alive connection it had timed out)."""


class ProtocolError(OSError):
    """An answer that is not HTTP/1.x as we speak it."""


_MAX_LINE = 65536
_MAX_HEADERS = 200


class Connection:
    """One kept-alive HTTP/1.1 connection over TLS (or plain TCP, for tests) to one node.

    ``request`` sends one request and reads its whole answer; not thread-safe (the transport locks per node).
    """

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float) -> None:
        self.host, self.port = host, port
        self.host_header = (f"[{host}]" if ":" in host else host) + f":{port}"
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock: socket.socket = (ssl_context.wrap_socket(sock, server_hostname=host)
                                        if ssl_context is not None else sock)
        except BaseException:
            sock.close()
            raise
        self.rfile = self.sock.makefile("rb")
        self.reusable = True

    def request(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float) -> tuple[int, dict[str, str], bytes]:
        self.sock.settimeout(timeout)
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        self.sock.sendall(data)
        return self._read_response(method)

    def _line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise ProtocolError("answer line too long")
        return line

    def _read_response(self, method: str) -> tuple[int, dict[str, str], bytes]:
        while True:
            line = self._line()
            if not line:
                raise RemoteDisconnected("the server closed the connection without an answer")
            parts = line.decode("latin-1").split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"not an HTTP/1.x answer: {line[:40]!r}")
            status = int(parts[1])
            headers = self._headers()
            if status >= 200 or status == 101:
                break  # 1xx (100 Continue, 103 Early Hints) precede the answer
        if parts[0] == "HTTP/1.0" or "close" in headers.get("connection", "").lower():
            self.reusable = False
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, headers, self._chunked()
        length = headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length!r}") from None
            body = self.rfile.read(n)
            if len(body) < n:
                raise RemoteDisconnected("the server closed the connection in the middle of an answer")
            return status, headers, body
        self.reusable = False  # the body ends when the server closes the connection
        return status, headers, self.rfile.read()

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        raise ProtocolError("too many headers in the answer")

    def _chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_line = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_line[:20]!r}") from None
            if size == 0:
                self._headers()  # trailers, then the blank line
                return bytes(out)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise RemoteDisconnected("the server closed the connection in the middle of an answer")
            out += chunk
            self.rfile.read(2)  # CRLF after the chunk

    def close(self) -> None:
        self.reusable = False
        try:
            self.rfile.close()
        finally:
            self.sock.close()


def split_addr(addr: str) -> tuple[str, str, int]:
    """``https://host:port[/...]`` -> (scheme, host, port); ``[::1]`` brackets removed."""
    scheme, _, rest = addr.partition("://")
    hostport = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = hostport.partition(":")
    default = 443 if scheme.lower() == "https" else 80
    return scheme.lower(), host, int(port_text) if port_text else default


class StdlibTransport:
    """Kept-alive HTTP/1.1 connections (``Connection``), one per node, guarded by a lock per node.

    ``ca_file``: the CA file ``ssl_context`` was made from; a new connection first loads it again when it changed
    (``certs rotate-ca`` writes the old and the new CA there before any listener serves a leaf of the new one, so
    a client running for days trusts the new CA in time). Open connections keep their handshake."""

    def __init__(self, ssl_context: ssl.SSLContext, ca_file: str | None = None) -> None:
        self._ctx = ssl_context
        self._ca_file = ca_file
        self._ca_seen = _file_stamp(ca_file)
        self._conns: dict[str, Connection] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _follow_ca(self) -> None:
        stamp = _file_stamp(self._ca_file)
        if stamp is None or stamp == self._ca_seen:
            return
        try:
            self._ctx = make_ssl_context(self._ca_file)
        except MissingCA:
            return  # half-written or briefly absent: the context it had still verifies; tried at the next connect
        self._ca_seen = stamp

    def _lock(self, addr: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(addr, threading.Lock())

    def _connect(self, addr: str, timeout: float) -> Connection:
        scheme, host, port = split_addr(addr)
        if self._ca_file is not None and scheme == "https":
            self._follow_ca()
        return Connection(host, port, self._ctx if scheme == "https" else None, timeout)

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        if any(c in text for text in (method, target, *headers, *headers.values()) for c in "\r\n\0"):
            # a token, path or header value must not add a header (http.client refuses the same)
            raise VaultmeshError("a request line or header holds a line break or NUL; nothing was sent",
                                 hint="check the token (BAO_TOKEN, VAULT_TOKEN, the token file) for a stray line "
                                      "break")
        with self._lock(addr):
            for fresh in (False, True):
                conn = self._conns.pop(addr, None)
                if conn is None or fresh:
                    if conn is not None:
                        conn.close()
                    fresh = True
                    try:
                        conn = self._connect(addr, timeout)
                    except (OSError, ValueError) as err:
                        raise OSError(str(err) or type(err).__name__) from err
                try:
                    answer = conn.request(method, target, headers, body, timeout)
                except (RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    # A kept-alive connection the server closed: reconnect once, then give up on the node.
                    conn.close()
                    if fresh:
                        raise
                    continue
                except (OSError, ValueError) as err:
                    conn.close()
                    raise OSError(str(err) or type(err).__name__) from err
                if conn.reusable:
                    self._conns[addr] = conn
                else:
                    conn.close()
                return answer
        raise OSError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._guard:
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            conn.close()


_MISSING: Any = object()


def _jitter() -> float:
    """``random.random``, imported at the first backoff: the run path's first requests need none."""
    import random

    return random.random()


class Ahead(Value):
    """A request to send before its caller asks for it (``EngineClient.prefetch``)."""

    __slots__ = ("consistent", "data", "method", "params", "path")
    method: str
    path: str
    data: Any
    params: Mapping[str, str] | None
    consistent: bool

    def __init__(self, method: str, path: str, data: Any = None, params: Mapping[str, str] | None = None,
                 consistent: bool = False) -> None:
        self._set(method=method, path=path, data=data, params=params, consistent=consistent)


def _ahead_key(method: str, path: str, token: str | None, data: Any, params: Mapping[str, str] | None,
               namespace: str | None) -> tuple[str, ...]:
    body = "" if data is None else json.dumps(data, sort_keys=True)
    return (method, path.lstrip("/"), token or "", body, json.dumps(sorted((params or {}).items())),
            namespace or "")


class _Entry:
    """One request sent ahead: done once its answer (or error) is in."""

    __slots__ = ("done", "error", "response", "taken", "token")

    def __init__(self, token: str | None) -> None:
        self.done = threading.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None
        self.taken = False
        self.token = token


class _Prefetch:
    """The thread that sends a login and then, with its token, the reads; and what nobody took."""

    def __init__(self, client: EngineClient, login: Ahead, reads: Iterable[Ahead]) -> None:
        self.client = client
        self.login = login
        self.reads = list(reads)
        self.lock = threading.Lock()
        self.entries: dict[tuple[str, ...], _Entry] = {}
        self.login_entry = self._register(login, None)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="vaultmesh-prefetch", daemon=True)

    def _key(self, a: Ahead, token: str | None) -> tuple[str, ...]:
        return _ahead_key(a.method, a.path, token, a.data, a.params, self.client.namespace)

    def _register(self, a: Ahead, token: str | None) -> _Entry:
        entry = _Entry(token)
        with self.lock:
            self.entries.setdefault(self._key(a, token), entry)
        return entry

    def _send(self, a: Ahead, token: str | None, entry: _Entry) -> bool:
        if self.stopping:
            entry.error = Unavailable("the request sent ahead was abandoned")
            entry.done.set()
            return False
        try:
            entry.response = self.client._send(a.method, a.path, a.data, token=token, consistent=a.consistent,
                                               params=a.params)
        except BaseException as err:  # handed to the caller, who would have met it itself
            entry.error = err
        return entry.error is None

    SWITCH_INTERVAL = 0.0005
    """While the thread runs, the interpreter switches threads every 0.5 ms instead of 5 ms: the main thread is
    importing (CPU-bound) and would otherwise hold the GIL for up to 5 ms each time an answer arrives, a delay
    paid at every step of the TLS handshake and of each request (median cold start 140 -> 126 ms here)."""

    def _run(self) -> None:
        previous = sys.getswitchinterval()
        sys.setswitchinterval(min(previous, self.SWITCH_INTERVAL))
        try:
            self._requests()
        finally:
            sys.setswitchinterval(previous)

    def _requests(self) -> None:
        entry = self.login_entry
        try:
            if not self._send(self.login, None, entry):
                return
            auth = (entry.response.data if entry.response else None) or {}
            token = str((auth.get("auth") or {}).get("client_token") or "")
            if not token:
                return
            entry.token = token
            # the reads are registered before the login is handed over, so its taker finds them pending
            reads = [(a, self._register(a, token)) for a in self.reads]
        finally:
            entry.done.set()
        for a, read in reads:
            self._send(a, token, read)
            read.done.set()

    def take(self, key: tuple[str, ...]) -> _Entry | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None or entry.taken:
                return None
            entry.taken = True
        try:
            entry.done.wait()
        except BaseException:  # a signal's exception while waiting: the answer is nobody's, close() revokes it
            entry.taken = False
            raise
        return entry

    def finish(self) -> None:
        """Stop sending, wait for the request in flight, then revoke what nobody took: a login's token (which
        revokes every lease made with it), or a lease under a token that was taken."""
        self.stopping = True
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(self.client.retry.deadline + self.client.timeout)
        with self.lock:
            left = [e for e in self.entries.values() if not e.taken and e.response is not None]
            login_taken = self.login_entry.taken
        quick = RetryPolicy(deadline=min(5.0, self.client.retry.deadline))
        for entry in left:
            try:
                if entry is self.login_entry:
                    if entry.token:
                        self.client._send("POST", "auth/token/revoke-self", {}, token=entry.token, retry=quick)
                elif login_taken and entry.response is not None and (entry.response.data or {}).get("lease_id"):
                    self.client._send("PUT", "sys/leases/revoke",
                                      {"lease_id": (entry.response.data or {})["lease_id"]}, token=entry.token,
                                      retry=quick)
            except VaultmeshError:
                pass  # best effort: the token's revocation (by its taker) revokes its leases too


class EngineClient:
    """Talks to every node of a mesh; a request that meets a dead, sealed or leaderless node moves on.

    ``addrs`` are node (or entry) addresses. The node that answered last is asked first next time.

    - ``timeout``: the per-try socket timeout; a hung node (SIGSTOP) costs at most this much before the next node.
    - ``last_index``: the newest X-Vault-Index seen on a write; sent back on consistent reads.
    - ``addr_source``: where ``addrs`` came from (``--addr``, ``BAO_ADDR``, ...), named in the refusal of a
      non-https one.
    """

    def __init__(self, addrs: list[str], ca_file: str | None = None, token: str | None = None,
                 namespace: str | None = None, retry: RetryPolicy | None = None, timeout: float = 5.0,
                 transport: Transport | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] | None = None,
                 last_index: str | None = None, addr_source: str = "the address") -> None:
        self.addrs = list(addrs)
        self.ca_file = ca_file
        self.token = token
        self.namespace = namespace
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout
        self.transport = transport
        self.clock = clock
        self.sleep = sleep
        self.rng = rng if rng is not None else _jitter
        self.last_index = last_index
        self.addr_source = addr_source
        if not self.addrs:
            raise ValueError("EngineClient needs at least one address")
        self.addrs = [a.strip().rstrip("/") for a in self.addrs]
        require_https(self.addrs, self.addr_source)
        if self.transport is None:
            self.transport = StdlibTransport(make_ssl_context(self.ca_file), self.ca_file)
        self._preferred = 0
        self._prefetch: _Prefetch | None = None

    # -- plumbing ------------------------------------------------------------------------------------
    def _headers(self, token: str | None, wrap_ttl: str | None, consistent: bool,
                 extra: Mapping[str, str] | None, namespace: str | None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if token:
            h["X-Vault-Token"] = token
        ns = namespace if namespace is not None else self.namespace
        if ns:
            h["X-Vault-Namespace"] = ns
        if wrap_ttl:
            h["X-Vault-Wrap-TTL"] = wrap_ttl
        if consistent and self.last_index:
            h["X-Vault-Index"] = self.last_index
            h["X-Vault-Inconsistent"] = "forward-active-node"
        if extra:
            h.update(extra)
        return h

    def request(self, method: str, path: str, data: Any = None, *, token: str | None = _MISSING,
                wrap_ttl: str | None = None, consistent: bool = False, namespace: str | None = None,
                params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                retry: RetryPolicy | None = None, nodes: Iterable[str] | None = None) -> Response:
        """Send ``method /v1/<path>``; fail over across nodes on connection errors and retryable answers.

        The answer of an identical request sent ahead (``prefetch``) is taken instead, once. The first request
        that was not sent ahead ends the prefetch before it is sent: what was fetched for nobody is revoked
        first (so a caller's ``revoke-self`` after a failure also finds the leases read ahead with its token)."""
        ahead = self._prefetch
        if ahead is not None:
            if wrap_ttl is None and headers is None and nodes is None:
                key = _ahead_key(method, path, self.token if token is _MISSING else token, data, params,
                                 namespace if namespace is not None else self.namespace)
                entry = ahead.take(key)
                if entry is not None:
                    if entry.error is not None:
                        raise entry.error
                    if entry.response is not None and 200 <= entry.response.status < 300:
                        return entry.response
                    # anything else (a 404, a redirect) is asked again: the caller's transport may read it otherwise
            self._prefetch = None
            ahead.finish()
        return self._send(method, path, data, token=token, wrap_ttl=wrap_ttl, consistent=consistent,
                          namespace=namespace, params=params, headers=headers, retry=retry, nodes=nodes)

    def prefetch(self, login: Ahead, reads: Iterable[Ahead] = ()) -> None:
        """Send ``login`` (no token) now in a thread, then every read with the token it returned. Each answer
        goes to the first identical ``request``; ``close`` revokes what nobody took (the token, which takes its
        leases with it, or a lease under a token that was taken). One prefetch per client."""
        if self._prefetch is not None:
            raise RuntimeError("one prefetch per client")
        self._prefetch = _Prefetch(self, login, reads)
        self._prefetch.thread.start()

    def _send(self, method: str, path: str, data: Any = None, *, token: str | None = _MISSING,
              wrap_ttl: str | None = None, consistent: bool = False, namespace: str | None = None,
              params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
              retry: RetryPolicy | None = None, nodes: Iterable[str] | None = None) -> Response:
        path = path.lstrip("/")
        policy = retry or self.retry
        hdrs = self._headers(self.token if token is _MISSING else token, wrap_ttl, consistent, headers,
                             namespace)
        body = None
        if data is not None:
            body = json.dumps(data).encode()
            hdrs["Content-Type"] = "application/json"
        target = "/v1/" + path + ("?" + _query(params) if params else "")
        addrs = list(nodes) if nodes is not None else self.addrs
        deadline = self.clock() + policy.deadline
        last: dict[str, str] = {}
        attempt = 0
        assert self.transport is not None
        while True:
            i = (self._preferred + attempt) % len(addrs) if nodes is None else attempt % len(addrs)
            addr = addrs[i]
            status: int | None = None
            try:
                status, rh, raw = self.transport.send(method, addr, target, hdrs, body,
                                                      min(self.timeout, max(0.05, deadline - self.clock())))
            except OSError as err:
                last[addr] = f"connection failed ({err})" if str(err) else "connection failed"
            if status is not None:
                if classify(status) != "retry":
                    if nodes is None:
                        self._preferred = i
                    resp = decode(status, rh, raw, addr, method, path)
                    if method in ("POST", "PUT", "DELETE", "PATCH") and resp.index:
                        self.last_index = resp.index
                    return resp
                try:
                    decode(status, rh, raw, addr, method, path)
                except EngineError as err:
                    last[addr] = f"{status} {'; '.join(err.errors) or 'unavailable'}"
            attempt += 1
            wait = policy.delay(attempt, self.rng) if attempt >= len(addrs) else 0.0
            if self.clock() + wait >= deadline:
                detail = "; ".join(f"{a}: {m}" for a, m in last.items())
                raise Unavailable(f"no OpenBao node could serve {method} /v1/{path} within "
                                  f"{policy.deadline:g} s ({detail})",
                                  hint="check `vaultmesh status`; `vaultmesh up` heals a stopped mesh")
            if wait:
                self.sleep(wait)

    # -- typed helpers -------------------------------------------------------------------------------
    def read(self, path: str, **kw: Any) -> dict[str, Any] | None:
        """The response body of GET, or None when the path does not exist (404)."""
        resp = self.request("GET", path, **kw)
        return None if resp.status == 404 else resp.data

    def write(self, path: str, data: Mapping[str, Any] | None = None, **kw: Any) -> dict[str, Any] | None:
        resp = self.request("POST", path, dict(data) if data is not None else {}, **kw)
        return resp.data

    def delete(self, path: str, **kw: Any) -> None:
        self.request("DELETE", path, **kw)

    def list(self, path: str, **kw: Any) -> list[str]:
        resp = self.request("GET", path, params={"list": "true"}, **kw)
        if resp.status == 404 or not resp.data:
            return []
        return list((resp.data.get("data") or {}).get("keys") or [])

    def health(self, addr: str, *, timeout: float = 2.0) -> dict[str, Any]:
        """``sys/health`` of one node, never failing over. Raises OSError when the node is unreachable."""
        assert self.transport is not None
        status, _, raw = self.transport.send(
            "GET", addr.rstrip("/"), "/v1/sys/health?standbyok=true&perfstandbyok=true&sealedcode=200"
            "&uninitcode=200", {"Accept": "application/json"}, None, timeout)
        data = json.loads(raw) if raw else {}
        data["_status"] = status
        return data

    def login(self, mount: str, payload: Mapping[str, Any], *, user: str | None = None,
              **kw: Any) -> dict[str, Any]:
        """POST auth/<mount>/login[/<user>]; returns the ``auth`` block. The client keeps no token."""
        path = f"auth/{mount.strip('/')}/login" + (f"/{user}" if user else "")
        resp = self.request("POST", path, dict(payload), token=None, **kw)
        auth = (resp.data or {}).get("auth")
        if not auth:
            raise EngineError(resp.status, ["login answered without an auth block"], method="POST",
                              path="/" + path, node=resp.node)
        return dict(auth)

    def download(self, path: str, out: BinaryIO, *, token: str | None = _MISSING,
                 nodes: Iterable[str] | None = None, timeout: float = 60.0) -> str:
        """GET ``/v1/<path>`` and write the body to ``out`` as it arrives, never holding it whole (a Raft snapshot
        can be gigabytes); returns the node that sent it. Nodes are tried in turn, each on a connection of its
        own (``timeout`` per socket read), until one answers 2xx; an error answer raises as ``request`` does. A
        body cut off halfway raises ``Unavailable``: ``out`` then holds a part, and the caller discards it."""
        path = path.lstrip("/")
        head = "".join(f"{k}: {v}\r\n" for k, v in self._headers(self.token if token is _MISSING else token, None,
                                                                  False, None, None).items())
        ctx = make_ssl_context(self.ca_file)
        last: dict[str, str] = {}
        for addr in list(nodes) if nodes is not None else self.addrs:
            scheme, host, port = split_addr(addr)
            written = 0
            try:
                conn = Connection(host, port, ctx if scheme == "https" else None, timeout)
                try:
                    conn.sock.sendall(f"GET /v1/{path} HTTP/1.1\r\nHost: {conn.host_header}\r\nConnection: close\r\n"
                                      f"{head}\r\n".encode("latin-1"))
                    parts = conn._line().split(None, 2)
                    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                    rh = conn._headers()
                    chunked = "chunked" in rh.get("transfer-encoding", "").lower()
                    if not 200 <= status < 300:
                        body = conn._chunked() if chunked else conn.rfile.read(int(rh.get("content-length") or 0))
                        if classify(status) != "retry":
                            decode(status, rh, body, addr, "GET", path)  # raises for an error status
                        last[addr] = f"answered {status}"
                        continue
                    left = -1 if chunked else int(rh.get("content-length", -1))  # -1: until it closes
                    while left:
                        size = int(conn._line().split(b";", 1)[0] or b"0", 16) if chunked else left
                        if chunked and not size:
                            break
                        while size:
                            piece = conn.rfile.read(1 << 16 if size < 0 else min(size, 1 << 16))
                            if not piece:
                                if size < 0:
                                    return addr
                                raise RemoteDisconnected("the answer stopped halfway")
                            out.write(piece)
                            written += len(piece)
                            size -= len(piece) if size > 0 else 0
                        if chunked:
                            conn._line()  # the CRLF after a chunk
                        else:
                            left = 0
                    return addr
                finally:
                    conn.close()
            except (OSError, ValueError) as err:
                if written:
                    raise Unavailable(f"the download of /v1/{path} from {addr} stopped after {written} bytes "
                                      f"({err})", hint="try again; check `vaultmesh status`") from None
                last[addr] = f"connection failed ({err})"
        raise Unavailable(f"no OpenBao node could serve GET /v1/{path} ("
                          + "; ".join(f"{a}: {m}" for a, m in last.items()) + ")",
                          hint="check `vaultmesh status`; `vaultmesh up` heals a stopped mesh")

    def close(self) -> None:
        """Revoke what was fetched ahead for nobody, then close every connection."""
        ahead, self._prefetch = self._prefetch, None
        try:
            if ahead is not None:
                ahead.finish()
        finally:
            if self.transport is not None:
                self.transport.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
