"""One typed client for the OpenBao/Vault HTTP API, with failover across the mesh's nodes.

Sync (``EngineClient``) and async (``engine.aio.AsyncEngineClient``) share the pure parts here: which
answers are retried on another node (``classify``), how long to wait between tries (``RetryPolicy``), and
how an answer becomes a value or an ``EngineError`` (``decode``).

Transport: the sync client's default transport is the standard library's ``http.client`` with one kept-alive
TLS connection per node. Measured on this machine, ``import httpx`` costs ~120 ms and ``http.client`` ~30 ms;
the workload path (``vaultmesh run``, the SDK) has a 300 ms budget from process start to child start, so the
client stays off httpx there. ``HttpxTransport`` (control plane, tests with ``httpx.MockTransport``) and the
async client use httpx.
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from vaultmesh.errors import EngineError, Unavailable, VaultmeshError


class InsecureAddress(VaultmeshError):
    """A node address that is not https: the identity JWT and tokens would travel in clear."""


class MissingCA(VaultmeshError):
    """The CA file named by --ca-cert / BAO_CACERT does not exist or cannot be read."""


def require_https(addrs: Iterable[str], source: str = "the address") -> None:
    """Refuse any address whose scheme is not https, before a request is made."""
    for a in addrs:
        if urllib.parse.urlsplit(a.strip()).scheme.lower() != "https":
            raise InsecureAddress(f"refusing OpenBao address {a!r} from {source}: it is not https, so tokens "
                                  "and identity tokens would be sent in clear",
                                  hint="use the mesh's https:// address (`eval \"$(vaultmesh env)\"` sets it)")

Outcome = Literal["ok", "retry", "fail"]

RETRY_STATUSES = frozenset({307, 412, 429, 500, 502, 503, 504})
"""Answers worth trying again, maybe on another node: 307 (a standby that cannot forward redirects to the
active node; during an election there is none yet, so it means "ask again", never success), 412 (the node
has not caught up with the X-Vault-Index we sent), 429 (standby asked for the active node), 500 during a
leader election ("local node not active but active cluster node not found"), 502/504 (forwarding failed),
503 (sealed, or no leader)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter, within a deadline.

    Once the backoff reaches ``cap``, a client that finds the mesh down sends on average ~2/cap requests per
    second (full jitter), so a fleet of workloads retrying cannot storm it back down when it returns.
    """

    deadline: float = 15.0
    """Seconds to keep trying. Leader election with performance_multiplier 1 takes ~1-2 s; 15 s also
    covers a node restart."""
    base: float = 0.05
    """First wait: small, because the next node is usually healthy."""
    cap: float = 1.0
    """Longest wait between tries."""

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        """Seconds to wait before try ``attempt`` (1-based count of failed tries so far)."""
        return rng() * min(self.cap, self.base * (2 ** min(attempt, 16)))


def classify(status: int | None) -> Outcome:
    """``None`` means the connection failed."""
    if status is None or status in RETRY_STATUSES:
        return "retry"
    if 200 <= status < 400 or status == 404:
        return "ok"
    return "fail"


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    data: dict[str, Any] | None
    node: str

    @property
    def index(self) -> str | None:
        return self.headers.get("x-vault-index")


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


class Transport(Protocol):
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


class StdlibTransport:
    """Kept-alive ``http.client`` connections, one per node, guarded by a lock per node."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ctx = ssl_context
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, addr: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(addr, threading.Lock())

    def _connect(self, addr: str, timeout: float) -> http.client.HTTPConnection:
        u = urllib.parse.urlsplit(addr)
        if u.scheme == "https":
            return http.client.HTTPSConnection(u.hostname or "", u.port or 443, timeout=timeout,
                                               context=self._ctx)
        return http.client.HTTPConnection(u.hostname or "", u.port or 80, timeout=timeout)

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        with self._lock(addr):
            for fresh in (False, True):
                conn = self._conns.get(addr)
                if conn is None or fresh:
                    if conn is not None:
                        conn.close()
                    conn = self._conns[addr] = self._connect(addr, timeout)
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                try:
                    conn.request(method, target, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    # A kept-alive connection the server closed: reconnect once, then give up on the node.
                    conn.close()
                    self._conns.pop(addr, None)
                    if fresh:
                        raise
                    continue
                except (OSError, http.client.HTTPException) as err:
                    conn.close()
                    self._conns.pop(addr, None)
                    raise OSError(str(err) or type(err).__name__) from err
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise OSError("unreachable")  # pragma: no cover

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


_MISSING: Any = object()


@dataclass
class EngineClient:
    """Talks to every node of a mesh; a request that meets a dead, sealed or leaderless node moves on.

    ``addrs`` are node (or entry) addresses. The node that answered last is asked first next time.
    """

    addrs: list[str]
    ca_file: str | None = None
    token: str | None = None
    namespace: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 5.0
    """Per-try socket timeout; a hung node (SIGSTOP) costs at most this much before the next node."""
    transport: Transport | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random
    last_index: str | None = None
    """The newest X-Vault-Index seen on a write; sent back on consistent reads."""
    addr_source: str = "the address"
    """Where ``addrs`` came from (``--addr``, ``BAO_ADDR``, ...), named in the refusal of a non-https one."""

    def __post_init__(self) -> None:
        if not self.addrs:
            raise ValueError("EngineClient needs at least one address")
        self.addrs = [a.strip().rstrip("/") for a in self.addrs]
        require_https(self.addrs, self.addr_source)
        if self.transport is None:
            self.transport = StdlibTransport(make_ssl_context(self.ca_file))
        self._preferred = 0

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
        """Send ``method /v1/<path>``; fail over across nodes on connection errors and retryable answers."""
        path = path.lstrip("/")
        policy = retry or self.retry
        hdrs = self._headers(self.token if token is _MISSING else token, wrap_ttl, consistent, headers,
                             namespace)
        body = None
        if data is not None:
            body = json.dumps(data).encode()
            hdrs["Content-Type"] = "application/json"
        target = "/v1/" + path + ("?" + urllib.parse.urlencode(params) if params else "")
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

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
