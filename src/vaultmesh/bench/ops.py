"""One workload, or one operation, done two ways against the mesh.

``PathOps`` is the workload path: each workload is the same ``workload.session.Session`` that ``vaultmesh run`` and
the SDK use (its client fails over across the entry and every node with backoff within a deadline, reads are
consistent after the login, the lease book records what to revoke, and ``close`` revokes every lease, then the
token), with identity tokens minted in the path from a signing key parsed once. ``RawOps`` is the ceiling: the same
requests with the least client work possible: tokens minted before the clock starts, one kept-alive ``http.client``
connection to the entry, pre-built headers, no retries, and no JSON parsing beyond finding the token and lease id
in the bytes.

Each records ``Sample``s through a callback: ``rec(phase, t_sched, t_start, t_end, error)``. Phases (mint, login,
kv, db, revoke, and ``login-to-secrets`` from login start to credentials in hand) are service times; the
``workload`` sample runs from the workload's scheduled start, so time spent waiting for a thread counts.

A failed operation is a sample with an error, never a silent drop: ``_timed`` records the failure and raises it
on (a workload stops at its first failed phase), ``_sample`` records it and returns. A call that is not an
operation of the bench (an unknown op) is a ValueError, raised, never recorded as a sample.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vaultmesh.api.client import RetryPolicy, make_ssl_context
from vaultmesh.bench.model import OPS, SECRETS, WORKLOAD, error_kind
from vaultmesh.bench.targets import Targets
from vaultmesh.errors import EngineError, VaultmeshError
from vaultmesh.identity.tokens import mint
from vaultmesh.workload.session import Session, make_client
from vaultmesh.workload.spec import Source

Rec = Callable[[str, float, float, float, str | None], None]
Clock = Callable[[], float]

TOKEN_TTL = 900.0
"""Identity tokens minted for bench workloads live 15 minutes: longer than any bounded run."""

SINGLE_OPS: tuple[str, ...] = tuple(op for op in OPS if op != WORKLOAD)
"""The operations ``single`` does, one request each."""


@dataclass
class Holding:
    """A workload holding its secrets until it revokes them."""

    seq: int
    token: str
    lease_id: str | None
    session: Session | None = None
    """The workload path's session (its book knows every lease); None on the raw path."""


def identity_token(signer: Any, targets: Targets, seq: int) -> str:
    return mint(signer, issuer=targets.issuer, workload=f"bench-{seq}", audience=targets.audience,
                ttl=TOKEN_TTL, now=time.time())


def check_op(op: str, allowed: tuple[str, ...] = OPS) -> None:
    """ValueError unless ``op`` is one of ``allowed``: a caller's bug, not a failed sample."""
    if op not in allowed:
        raise ValueError(f"unknown bench operation {op!r}; expected one of {', '.join(allowed)}")


class Sampler:
    """Times one call as one sample. ``failures``: what a failed operation raises (recorded as the sample's
    error); anything else is a bug and goes up unrecorded."""

    clock: Clock
    failures: tuple[type[Exception], ...] = (Exception,)

    def kind(self, err: Exception) -> str:
        return error_kind(err)

    def _timed(self, rec: Rec, phase: str, t_sched: float, fn: Callable[[], Any]) -> Any:
        """``fn()`` as one sample; a failure is recorded, then raised on."""
        t_start = self.clock()
        try:
            out = fn()
        except self.failures as err:  # every failure is a counted sample
            rec(phase, t_sched, t_start, self.clock(), self.kind(err))
            raise
        rec(phase, t_sched, t_start, self.clock(), None)
        return out

    def _sample(self, rec: Rec, phase: str, t_sched: float, fn: Callable[[], Any]) -> bool:
        """``fn()`` as one sample; a failure is recorded and not raised. True when it succeeded."""
        try:
            self._timed(rec, phase, t_sched, fn)
        except self.failures:  # recorded by _timed as this sample's error
            return False
        return True


class PathOps(Sampler):
    """The workload path, one per thread (an EngineClient has one connection per node)."""

    def __init__(self, targets: Targets, signer: Any, *, clock: Clock, retry_deadline: float = 15.0) -> None:
        self.t = targets
        self.signer = signer
        self.clock = clock
        self.client = make_client([targets.entry, *targets.nodes], ca_file=targets.ca_file,
                                  retry=RetryPolicy(deadline=retry_deadline))
        self.own_token: str | None = None

    def close(self) -> None:
        if self.own_token:
            # cleanup: a token the mesh did not revoke is left behind, and the bench's count check reports it
            with contextlib.suppress(VaultmeshError, OSError):
                self.client.write("auth/token/revoke-self", {}, token=self.own_token)
        self.client.close()

    def prepare(self, op: str) -> None:
        """Single-op scenarios that need a token (kv-read, db-creds) log in once per thread, off the clock.
        ValueError for an operation the bench does not know (before any sample)."""
        check_op(op)
        if op in ("kv-read", "db-creds"):
            self.own_token = self._login(identity_token(self.signer, self.t, 0))

    def _call(self, method: str, path: str, data: Any = None, *, token: str | None,
              consistent: bool = False) -> dict[str, Any] | None:
        """One request through the client. A redirect is not a success: a standby that cannot forward answers
        307, and the client does not follow it, so the request was not performed."""
        resp = self.client.request(method, path, data, token=token, consistent=consistent)
        if 300 <= resp.status < 400:
            raise EngineError(resp.status, ["redirected to the active node: the request was not performed"],
                              method=method, path="/" + path, node=resp.node)
        return resp.data

    def _login(self, jwt: str) -> str:
        data = self._call("POST", self.t.login_path, {"role": self.t.role, "jwt": jwt}, token=None)
        auth = (data or {}).get("auth") or {}
        if not auth.get("client_token"):
            raise EngineError(200, ["login answered without a token"], method="POST", path="/" + self.t.login_path)
        return str(auth["client_token"])

    def _read(self, path: str, token: str) -> dict[str, Any]:
        """A consistent read (the X-Vault-Index of this client's last write: the login) that must exist."""
        data = self._call("GET", path, token=token, consistent=True)
        if data is None:
            raise EngineError(404, ["not found"], method="GET", path="/" + path)
        return data

    def start(self, seq: int, t_sched: float, rec: Rec) -> Holding | None:
        """Mint, log in, read KV, get database creds, through a workload Session; records each phase and the
        whole (``workload``)."""
        t = self.t
        session: Session | None = None
        try:
            jwt = self._timed(rec, "mint", self.clock(), lambda: identity_token(self.signer, t, seq))
            session = Session(self.client, role=t.role, identity=lambda: jwt, auth_mount=t.auth_mount)
            t_login = self.clock()
            self._timed(rec, "login", t_login, session.login)
            self._timed(rec, "kv", self.clock(), lambda: session.add(Source("kv", f"{t.kv_mount}/{t.kv_path}")))
            if t.database:
                self._timed(rec, "db", self.clock(), lambda: session.add(Source("db", t.creds_path)))
        except Exception as err:
            rec(WORKLOAD, t_sched, t_sched, self.clock(), error_kind(err.__cause__ or err))
            if session is not None:
                session.close()
            return None
        t_end = self.clock()
        rec(SECRETS, t_login, t_login, t_end, None)
        rec(WORKLOAD, t_sched, t_sched, t_end, None)
        return Holding(seq, session.token or "", None, session)

    def revoke(self, held: Holding, t_sched: float, rec: Rec) -> None:
        """Close the session: revoke every lease, then the token."""
        if held.session is not None:
            self._sample(rec, "revoke", self.clock(), held.session.close)

    def single(self, op: str, seq: int, t_sched: float, rec: Rec) -> None:
        """One operation of a single-op scenario as one sample (a failure is its error); ValueError for an
        operation that is not one of ``SINGLE_OPS``."""
        check_op(op, SINGLE_OPS)
        t, own = self.t, self.own_token or ""
        calls: dict[str, Callable[[], Any]] = {
            "kv-read": lambda: self._read(t.kv_read_path, own),
            "db-creds": lambda: self._read(t.creds_path, own),
            "jwt-login": lambda: self._login(identity_token(self.signer, t, seq)),
        }
        self._sample(rec, op, t_sched, calls[op])


def _find(body: bytes, key: bytes) -> str | None:
    """The string value of ``"key":"..."`` in a JSON body, without parsing it."""
    marker = b'"' + key + b'":"'
    i = body.find(marker)
    if i < 0:
        return None
    i += len(marker)
    return body[i:body.index(b'"', i)].decode()


class RawConn:
    """One kept-alive HTTPS connection to one address; reconnects after a failure, never retries."""

    def __init__(self, addr: str, ctx: ssl.SSLContext, timeout: float = 30.0) -> None:
        u = urllib.parse.urlsplit(addr)
        self.host, self.port, self.ctx, self.timeout = u.hostname or "", u.port or 443, ctx, timeout
        self.conn: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, body: bytes | None, token: str | None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ctx)
        headers = {"X-Vault-Token": token} if token else {}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except BaseException:
            self.conn.close()
            self.conn = None
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class RawError(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class RawOps(Sampler):
    """The ceiling: same requests as ``PathOps``, least client work, to the entry only, no retries."""

    failures = (RawError,)

    def __init__(self, targets: Targets, tokens: list[str], *, clock: Clock) -> None:
        self.t = targets
        self.tokens = tokens
        """Identity tokens minted before the clock started, used in turn."""
        self.clock = clock
        self.conn = RawConn(targets.entry, make_ssl_context(targets.ca_file))
        self.own_token: str | None = None
        self._kv = "/v1/" + targets.kv_read_path
        self._creds = "/v1/" + targets.creds_path
        self._login = "/v1/" + targets.login_path

    def close(self) -> None:
        if self.own_token:
            # cleanup: a token the mesh did not revoke is left behind, and the bench's count check reports it
            with contextlib.suppress(OSError, http.client.HTTPException):
                self.conn.request("POST", "/v1/auth/token/revoke-self", b"", self.own_token)
        self.conn.close()

    def _jwt(self, seq: int) -> str:
        return self.tokens[seq % len(self.tokens)]

    def prepare(self, op: str) -> None:
        check_op(op)
        if op in ("kv-read", "db-creds"):
            self.own_token = self._do_login(0)

    def _call(self, method: str, path: str, body: bytes | None, token: str | None) -> bytes:
        try:
            status, data = self.conn.request(method, path, body, token)
        except Exception as err:
            raise RawError(error_kind(err)) from None
        if status not in (200, 204):
            raise RawError(f"http-{status}")
        return data

    def _do_login(self, seq: int) -> str:
        body = b'{"role":"' + self.t.role.encode() + b'","jwt":"' + self._jwt(seq).encode() + b'"}'
        data = self._call("POST", self._login, body, None)
        token = _find(data, b"client_token")
        if token is None:
            raise RawError("no-token")
        return token

    def kind(self, err: Exception) -> str:
        return err.kind if isinstance(err, RawError) else error_kind(err)

    def start(self, seq: int, t_sched: float, rec: Rec) -> Holding | None:
        held: Holding | None = None
        try:
            t_login = self.clock()
            token = self._timed(rec, "login", t_login, lambda: self._do_login(seq))
            held = Holding(seq, token, None)
            self._timed(rec, "kv", self.clock(), lambda: self._call("GET", self._kv, None, token))
            if self.t.database:
                data = self._timed(rec, "db", self.clock(), lambda: self._call("GET", self._creds, None, token))
                held.lease_id = _find(data, b"lease_id")
        except RawError as err:
            rec(WORKLOAD, t_sched, t_sched, self.clock(), err.kind)
            if held is not None:
                self.revoke(held, self.clock(), rec)
            return None
        t_end = self.clock()
        rec(SECRETS, t_login, t_login, t_end, None)
        rec(WORKLOAD, t_sched, t_sched, t_end, None)
        return held

    def revoke(self, held: Holding, t_sched: float, rec: Rec) -> None:
        def go() -> None:
            if held.lease_id:
                self._call("PUT", "/v1/sys/leases/revoke", json.dumps({"lease_id": held.lease_id}).encode(),
                           held.token)
            self._call("POST", "/v1/auth/token/revoke-self", b"", held.token)

        self._sample(rec, "revoke", self.clock(), go)

    def single(self, op: str, seq: int, t_sched: float, rec: Rec) -> None:
        """As ``PathOps.single``, on the raw connection."""
        check_op(op, SINGLE_OPS)
        calls: dict[str, Callable[[], Any]] = {
            "kv-read": lambda: self._call("GET", self._kv, None, self.own_token),
            "db-creds": lambda: self._call("GET", self._creds, None, self.own_token),
            "jwt-login": lambda: self._do_login(seq),
        }
        self._sample(rec, op, t_sched, calls[op])
