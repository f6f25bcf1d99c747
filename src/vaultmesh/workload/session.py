"""The edge between the lease book and OpenBao: log in, read secrets, do what the book says, revoke on close.

``Session`` performs the book's actions with an ``EngineClient`` (fail-over across every node, capped backoff)
and reports each outcome back to the book; ``Renewer`` is its thread driver. Shared by ``vaultmesh run`` and the
SDK. Reads are sent with ``consistent=True``: the client carries the ``X-Vault-Index`` of our last write (the
login) and asks a standby that has not caught up to forward to the active node, so a token or lease we were
just given is never "unknown" on the node that serves the next read.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vaultmesh.api.client import (
    EngineClient,
    Response,
    RetryPolicy,
    StdlibTransport,
    Transport,
    make_ssl_context,
    require_https,
)
from vaultmesh.errors import EngineError, VaultmeshError, WorkloadError
from vaultmesh.workload.book import (
    TOKEN,
    LeaseBook,
    Notify,
    Poll,
    Refetch,
    Relogin,
    RenewLease,
    RenewToken,
    RevokeLease,
    RevokeToken,
    SleepUntil,
    Timing,
    Work,
)
from vaultmesh.workload.spec import Source

Log = Callable[[str, str], None]
"""``log(level, message)``; level is ``"info"`` or ``"warning"``. Messages never carry secret values."""


def _quiet(level: str, message: str) -> None:
    pass


def describe_failure(what: str, err: VaultmeshError) -> str:
    """One line: what was refused and why, in OpenBao's words, and which node said so."""
    if isinstance(err, EngineError):
        words = "; ".join(" ".join(e.split()) for e in err.errors if e) or "no reason given"
        return f"{what} refused: {words} ({err.status} from {err.node})" if err.node else \
            f"{what} refused: {words} ({err.status})"
    return f"{what} failed: {err}"


def permanent(err: BaseException) -> bool:
    """A refusal (4xx) will not change by retrying the same request; unavailability (or a 5xx) may."""
    return isinstance(err, EngineError) and 400 <= err.status < 500


class IdentityFile:
    """The workload's identity token, read from a file on every login (a sidecar may rotate it)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> str:
        return read_token_file(self.path, cannot=f"cannot read the identity token {self.path}",
                               empty=f"the identity token file {self.path} is empty")


def read_token_file(path: str, *, cannot: str, empty: str) -> str:
    """The stripped content of ``path``; ``WorkloadError`` "<cannot>: <why>" or ``empty`` otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as err:
        raise WorkloadError(f"{cannot}: {err.strerror or err}") from None
    if not value:
        raise WorkloadError(empty)
    return value


def read_wrapping_token(ref: str, environ: Mapping[str, str] | None = None) -> str:
    """``env:VAR`` or ``file:PATH`` -> the wrapping token."""
    how, _, where = ref.partition(":")
    if how == "env":
        value = (os.environ if environ is None else environ).get(where, "").strip()
        if not value:
            raise WorkloadError(f"unwrap {ref}: the environment variable {where} is not set")
        return value
    return read_token_file(where, cannot=f"unwrap {ref}: cannot read {where}", empty=f"unwrap {ref}: {where} is empty")


class WorkloadTransport:
    """Transport wrapper correcting two answers the engine client would otherwise misread:

    - ``3xx``: during and after a leader election a standby that cannot forward answers ``307`` with the active
      node in ``Location``. Mapped to 503, the client's own failover and backoff find the node that serves.
      (The client retries 307 itself since it learnt it; this also covers 308 and keeps the workload path
      independent of that.)
    - ``500 past the max TTL, cannot renew``: OpenBao's answer to ``auth/token/renew-self`` once a token reached
      its max TTL (leases answer 400 for the same). 500 is retried by the client until its deadline, by which
      time the token has expired; mapped to 400, the book logs in again at once.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        status, rh, raw = self.inner.send(method, addr, target, headers, body, timeout)
        if 300 <= status < 400:
            where = rh.get("location", "?")
            return 503, rh, json.dumps({"errors": [f"redirected ({status}) to {where}"]}).encode()
        if status == 500 and b"past the max TTL" in raw:
            return 400, rh, raw
        return status, rh, raw

    def close(self) -> None:
        self.inner.close()


def make_client(addrs: list[str], *, ca_file: str | None = None, namespace: str | None = None,
                retry: RetryPolicy | None = None, addr_source: str = "the address") -> EngineClient:
    """The workload's client: every node, the mesh CA, and the answers ``WorkloadTransport`` corrects.

    A non-https address is refused first (``InsecureAddress``), then a missing CA file (``MissingCA``)."""
    require_https(addrs, addr_source)
    transport = WorkloadTransport(StdlibTransport(make_ssl_context(ca_file), ca_file))
    return EngineClient(addrs, ca_file=ca_file, namespace=namespace, retry=retry or RetryPolicy(),
                        transport=transport, addr_source=addr_source)


class Session:
    """One workload's token and leases. Thread-safe: every request runs under ``lock``."""

    def __init__(self, client: EngineClient, *, role: str, identity: Callable[[], str], auth_mount: str = "jwt",
                 sources: Iterable[Source] = (), labels: Mapping[str, str] | None = None,
                 timing: Timing | None = None, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random, log: Log = _quiet,
                 on_change: Callable[[tuple[str, ...]], None] | None = None,
                 close_deadline: float = 10.0) -> None:
        self.client = client
        self.role = role
        self.identity = identity
        self.auth_mount = auth_mount.strip("/")
        self.sources: dict[str, Source] = {s.key: s for s in sources}
        self.labels = dict(labels or {})
        self.book = LeaseBook(timing or Timing(), rng)
        self.clock = clock
        self.log = log
        self.on_change = on_change
        self.close_deadline = close_deadline
        self.values: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}
        """Watched KV source key -> the version held (a poll that reads the same version changes nothing)."""
        self.lock = threading.RLock()
        self.logins = 0
        self._tokens: dict[str, str] = {}
        self._lease_revoke_allowed = True
        """False once OpenBao answered 403 to ``sys/leases/revoke``: the role's policy does not grant it (the
        recommended policy does not: lint warns on it), and revoking the token revokes its leases."""
        self._accessor: str | None = None
        self._closed = False

    # -- the current token ------------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self._tokens.get(self._accessor) if self._accessor else None

    @property
    def accessor(self) -> str | None:
        return self._accessor

    # -- start --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Log in and read every source; on any failure revoke what was obtained and raise ``WorkloadError``."""
        try:
            with self.lock:
                # A wrapped secret is single-use: check every wrapping token is there, and read everything
                # else first, so that a failure elsewhere does not burn it for nothing.
                ordered = sorted(self.sources.values(), key=lambda src: src.kind == "unwrap")
                for source in ordered:
                    if source.kind == "unwrap":
                        read_wrapping_token(source.path)
                self.login()
                for source in ordered:
                    self.fetch(source)
        except BaseException:
            self.close()
            raise

    def login(self) -> None:
        what = f"login as role {self.role!r} at auth/{self.auth_mount}"
        jwt = self.identity()
        t0 = self.clock()
        try:
            auth = self.client.login(self.auth_mount, {"role": self.role, "jwt": jwt})
        except VaultmeshError as err:
            raise WorkloadError(describe_failure(what, err)) from err
        accessor = str(auth.get("accessor") or "")
        self._tokens[accessor] = str(auth["client_token"])
        self._accessor = accessor
        self.logins += 1
        self.book.logged_in(t0, accessor, float(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
        self.log("info", f"logged in as role {self.role!r} (token ttl {auth.get('lease_duration')} s)")

    def add(self, source: Source, label: str | None = None) -> dict[str, Any]:
        """Read ``source`` unless it is already held (the SDK's on-demand reads); return its fields."""
        with self.lock:
            if label:
                self.labels.setdefault(source.key, label)
            if source.key not in self.values:
                self.sources[source.key] = source
                self.fetch(source)
            return self.values[source.key]

    def fetch(self, source: Source) -> dict[str, Any]:
        """Read one source now and record its lease in the book (a KV secret at its latest version is watched:
        the book polls it)."""
        fields, version = self._read(source)
        self.values[source.key] = fields
        if source.kind == "kv" and source.version is None and version is not None:
            if source.key not in self.versions:
                self.book.watch(source.key, self.clock())
            self.versions[source.key] = version
        return fields

    def poll(self, source: Source) -> bool:
        """Read a watched KV secret again; True when a new version with other values was delivered to
        ``values`` (an unchanged version, or a new version with the same values, changes nothing)."""
        fields, version = self._read(source)
        if version is None or version == self.versions.get(source.key):
            return False
        self.versions[source.key] = version
        if fields == self.values.get(source.key):
            return False
        self.values[source.key] = fields
        self.book.value_changed(source.key)
        return True

    def _read(self, source: Source) -> tuple[dict[str, Any], int | None]:
        """One read of ``source``: its fields and (KV v2) the version read; leases are recorded in the book."""
        label = self.labels.get(source.key)
        what = f"reading {source.path}" + (f" ({label})" if label else "")
        token = self.token
        t0 = self.clock()
        try:
            if source.kind == "unwrap":
                wrapping = read_wrapping_token(source.path)
                resp = self.client.request("POST", "sys/wrapping/unwrap", {}, token=wrapping)
            else:
                params = {"version": str(source.version)} if source.version is not None else None
                resp = self.client.request("GET", source.api_path(), token=token, consistent=True, params=params)
        except VaultmeshError as err:
            raise WorkloadError(describe_failure(what, err)) from err
        body = resp.data or {}
        if resp.status == 404:
            hint = " (is it a KV version 2 mount?)" if source.kind == "kv" else ""
            raise WorkloadError(f"{what} failed: {source.path} does not exist{hint}")
        try:
            _expect(resp, "data")
        except EngineError as err:
            raise WorkloadError(describe_failure(what, err)) from err
        fields = body.get("data")
        version: int | None = None
        if source.kind == "kv" or (source.kind == "unwrap" and _kv2_shaped(fields)):
            version = ((fields or {}).get("metadata") or {}).get("version")
            fields = (fields or {}).get("data")
            if fields is None:
                raise WorkloadError(f"{what} failed: the current version of {source.path} is deleted")
        if not isinstance(fields, dict):
            fields = {}
        self.book.lease_granted(source.key, t0, body.get("lease_id") or None, float(body.get("lease_duration") or 0),
                                bool(body.get("renewable")), owner=None if source.kind == "unwrap" else self._accessor,
                                replaceable=source.refetchable)
        return fields, version if isinstance(version, int) else None

    # -- the driver's step --------------------------------------------------------------------------------

    def step(self) -> float | None:
        """Do whatever is due; return when to come back (clock time), or None for never."""
        with self.lock:
            # Ask again after acting: the outcomes change the schedule (a login makes leases due, a renewal
            # moves the next deadline), and a tick's SleepUntil was computed before its actions ran.
            for _ in range(100):
                if self._closed:
                    return None
                actions = self.book.tick(self.clock())
                for action in actions:
                    if not isinstance(action, SleepUntil):
                        self._do(action)
                sleep = actions[-1]
                assert isinstance(sleep, SleepUntil)
                if len(actions) == 1:
                    return sleep.at
            return self.clock()  # pragma: no cover - a hundred rounds of due work: yield, then go on

    def _do(self, action: Work) -> None:
        now = self.clock()
        if isinstance(action, RenewToken):
            token = self._tokens.get(action.accessor)
            try:
                resp = self.client.request("POST", "auth/token/renew-self", {}, token=token)
                auth = _expect(resp, "auth")
                self.book.token_renewed(now, float(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
                self.log("info", f"renewed the token for {auth.get('lease_duration')} s")
            except VaultmeshError as err:
                self.log("warning", describe_failure("renewing the token", err))
                self.book.renew_failed(TOKEN, now, permanent=permanent(err))
        elif isinstance(action, Relogin):
            try:
                self.login()
            except VaultmeshError as err:
                self.log("warning", str(err))
                self.book.replace_failed(TOKEN, now)
        elif isinstance(action, RenewLease):
            try:
                resp = self.client.request("PUT", "sys/leases/renew", {"lease_id": action.lease_id},
                                           token=self.token)
                _expect(resp, "lease_id")
                body = resp.data or {}
                self.book.lease_renewed(action.key, now, float(body.get("lease_duration") or 0),
                                        bool(body.get("renewable")))
                self.log("info", f"renewed {self.sources[action.key].path} for {body.get('lease_duration')} s")
            except VaultmeshError as err:
                self.log("warning", describe_failure(f"renewing the lease of {self.sources[action.key].path}",
                                                     err))
                self.book.renew_failed(action.key, now, permanent=permanent(err))
        elif isinstance(action, Refetch):
            try:
                self.fetch(self.sources[action.key])
                self.log("info", f"read {self.sources[action.key].path} again (new lease)")
            except VaultmeshError as err:
                self.log("warning", str(err))
                self.book.replace_failed(action.key, now)
        elif isinstance(action, Poll):
            source = self.sources[action.key]
            try:
                if self.poll(source):
                    self.log("info", f"{source.path} has a new version ({self.versions[action.key]})")
            except VaultmeshError as err:
                self.log("warning", str(err))  # the next poll is the retry
            self.book.polled(action.key, self.clock())
        elif isinstance(action, RevokeLease):
            self._revoke_lease(action.lease_id, RetryPolicy())
        elif isinstance(action, RevokeToken):
            self._revoke_token(action.accessor, RetryPolicy())
        elif isinstance(action, Notify):
            self.log("info", f"changed: {', '.join(self.sources[k].path for k in action.keys if k in self.sources)}")
            if self.on_change is not None:
                self.on_change(action.keys)

    def _revoke_lease(self, lease_id: str, retry: RetryPolicy) -> None:
        """Revoke one lease first when the policy allows it; otherwise leave it to the token's revocation
        (``revoke-self`` revokes every lease the token made, before it answers), without a refusal logged."""
        if not self._lease_revoke_allowed:
            return
        try:
            self.client.request("PUT", "sys/leases/revoke", {"lease_id": lease_id}, token=self.token, retry=retry)
        except EngineError as err:
            if err.status == 403:
                self._lease_revoke_allowed = False
                self.log("debug", "the role may not revoke single leases; revoking its token revokes them")
                return
            self.log("warning", describe_failure(f"revoking lease {lease_id}", err))
        except VaultmeshError as err:
            self.log("warning", describe_failure(f"revoking lease {lease_id}", err))

    def _revoke_token(self, accessor: str, retry: RetryPolicy) -> None:
        token = self._tokens.pop(accessor, None)
        if token is None:
            return
        try:
            self.client.request("POST", "auth/token/revoke-self", {}, token=token, retry=retry)
        except VaultmeshError as err:
            self.log("warning", describe_failure("revoking the token", err))

    # -- close --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Revoke every lease, then every token (the current one last). Idempotent; bounded in time."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.book.close()
            deadline = self.clock() + self.close_deadline
            for action in self.book.tick(self.clock()):
                left = deadline - self.clock()
                retry = RetryPolicy(deadline=max(0.5, min(5.0, left)))
                if isinstance(action, RevokeLease):
                    self._revoke_lease(action.lease_id, retry)
                elif isinstance(action, RevokeToken):
                    self._revoke_token(action.accessor, retry)
            self._accessor = None
            self.values.clear()
            self.versions.clear()


def _expect(resp: Response, key: str) -> dict[str, Any]:
    """The block ``key`` of a 200 answer. Anything else (seen during leader elections: a 2xx/3xx answer with no
    body) raises an ``EngineError`` with that status, which counts as temporary: the book retries."""
    body = resp.data or {}
    block = body.get(key)
    if resp.status != 200 or not block:
        raise EngineError(resp.status if resp.status != 200 else 502, [f"answer {resp.status} without {key!r}"],
                          node=resp.node)
    return block if isinstance(block, dict) else body


def _kv2_shaped(fields: Any) -> bool:
    return isinstance(fields, dict) and set(fields) == {"data", "metadata"} and isinstance(fields["data"], dict | None)


class Renewer:
    """The thread driver: ``session.step()``, sleep until the book's next deadline, repeat until ``stop``."""

    MIN_SLEEP = 0.005
    """Never spin: at least this long between steps."""

    def __init__(self, session: Session, *, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.session = session
        self.on_error = on_error
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="vaultmesh-renewer", daemon=True)

    def start(self) -> Renewer:
        self._thread.start()
        return self

    def poke(self) -> None:
        """Re-read the book now (a source was added)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stopping:
                at = self.session.step()
                timeout = None if at is None else max(self.MIN_SLEEP, at - self.session.clock())
                self._wake.wait(timeout)
                self._wake.clear()
        except BaseException as err:  # a bug: tell the owner, who revokes and stops
            if self.on_error is not None:
                self.on_error(err)
            else:
                raise
