"""A login burst against a mesh, and the mesh's health while it lasts.

``login_burst`` fires JWT logins, each with an ``EngineClient`` of its own (the workload path's client: it
retries 429 and other temporary answers with capped, jittered backoff within its deadline), counts every
HTTP answer the logins got (so the 429s a rate-limit quota sent are seen even when a retry then succeeded),
and samples every node's ``sys/health`` meanwhile. Used by the quota-burst integration test and
``benchmarks/quota_burst.py``; the tokens it obtains are revoked before it returns.
"""

from __future__ import annotations

import collections
import contextlib
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vaultmesh.api.client import EngineClient, RetryPolicy, StdlibTransport, Transport, make_ssl_context
from vaultmesh.errors import VaultmeshError


class CountingTransport:
    """A transport that tallies the status of every answer into a shared counter."""

    def __init__(self, inner: Transport, counts: collections.Counter[int], lock: threading.Lock) -> None:
        self.inner, self.counts, self.lock = inner, counts, lock

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        status, resp_headers, data = self.inner.send(method, addr, target, headers, body, timeout)
        with self.lock:
            self.counts[status] += 1
        return status, resp_headers, data

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class HealthSample:
    """Every node's ``sys/health`` status at one moment (None: unreachable) and the leader's answer time."""

    at: float
    statuses: tuple[int | None, ...]
    leader_seconds: float | None

    @property
    def healthy(self) -> bool:
        """Every node unsealed and answering (200 active, 429 standby) and exactly one leader."""
        return all(s in (200, 429) for s in self.statuses) and self.statuses.count(200) == 1


class HealthWatch:
    """Samples ``GET /v1/sys/health`` on every node (no ``standbyok``: the active answers 200, a standby 429,
    a sealed node 503) every ``interval`` seconds on a thread of its own, until stopped."""

    def __init__(self, addrs: Sequence[str], ca_file: str | None, *, interval: float = 0.1) -> None:
        self.addrs = list(addrs)
        self.transport = StdlibTransport(make_ssl_context(ca_file))
        self.interval = interval
        self.samples: list[HealthSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-watch", daemon=True)

    def sample(self) -> HealthSample:
        statuses: list[int | None] = []
        leader: float | None = None
        for addr in self.addrs:
            t0 = time.monotonic()
            try:
                status, _, _ = self.transport.send("GET", addr, "/v1/sys/health", {"Accept": "application/json"},
                                                   None, 2.0)
            except OSError:
                status = None
            if status == 200:
                leader = time.monotonic() - t0
            statuses.append(status)
        return HealthSample(time.monotonic(), tuple(statuses), leader)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.transport.close()


@dataclass(frozen=True)
class LoginOutcome:
    ok: bool
    seconds: float
    """From the login's scheduled start to its answer (or final error)."""
    error: str | None = None


@dataclass
class BurstResult:
    outcomes: list[LoginOutcome]
    statuses: collections.Counter[int]
    """Every HTTP answer the logins got, retries included."""
    drain_seconds: float
    """From the first login's start to the last one's end."""
    health: list[HealthSample] = field(default_factory=list)

    @property
    def succeeded(self) -> list[LoginOutcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[LoginOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def percentile(self, q: float) -> float | None:
        """Seconds, over the successful logins (nearest rank)."""
        times = sorted(o.seconds for o in self.succeeded)
        if not times:
            return None
        return times[min(len(times) - 1, max(0, round(q / 100 * len(times) + 0.5) - 1))]

    @property
    def healthy_fraction(self) -> float:
        return sum(s.healthy for s in self.health) / len(self.health) if self.health else 0.0

    @property
    def leader_p99(self) -> float | None:
        times = [s.leader_seconds for s in self.health if s.leader_seconds is not None]
        if len(times) < 2:
            return times[0] if times else None
        return statistics.quantiles(times, n=100, method="inclusive")[98]


def login_burst(addrs: Sequence[str], ca_file: str | None, *, mount: str, role: str, jwts: Sequence[str],
                rate: float | None = None, retry: RetryPolicy | None = None,
                watch: HealthWatch | None = None, revoke: bool = True,
                clock: Callable[[], float] = time.monotonic) -> BurstResult:
    """Log in once per JWT in ``jwts``: all at once (``rate`` None) or started at ``rate`` logins per second
    (open loop: a login starts on schedule whether or not earlier ones finished). One thread and one client
    per login. Tokens obtained are revoked afterwards when ``revoke``."""
    counts: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    ctx: ssl.SSLContext = make_ssl_context(ca_file)
    outcomes: list[LoginOutcome | None] = [None] * len(jwts)
    tokens: list[str] = []
    start = clock() + 0.05
    go = threading.Event()

    def one(i: int) -> None:
        due = start + (i / rate if rate else 0.0)
        go.wait()
        delay = due - clock()
        if delay > 0:
            time.sleep(delay)
        client = EngineClient(list(addrs), ca_file=ca_file, retry=retry or RetryPolicy(),
                              transport=CountingTransport(StdlibTransport(ctx), counts, lock))
        try:
            auth = client.login(mount, {"role": role, "jwt": jwts[i]})
            outcomes[i] = LoginOutcome(True, clock() - due)
            with lock:
                tokens.append(str(auth["client_token"]))
        except VaultmeshError as err:
            outcomes[i] = LoginOutcome(False, clock() - due, str(err))
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,), name=f"login-{i}", daemon=True) for i in range(len(jwts))]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    drained = clock() - start
    if revoke:
        _revoke_all(addrs, ca_file, tokens)
    done = [o if o is not None else LoginOutcome(False, 0.0, "the login thread died") for o in outcomes]
    return BurstResult(done, counts, drained, list(watch.samples) if watch is not None else [])


def _revoke_all(addrs: Sequence[str], ca_file: str | None, tokens: Sequence[str]) -> None:
    with EngineClient(list(addrs), ca_file=ca_file) as client:
        for token in tokens:
            with contextlib.suppress(VaultmeshError):  # a token that expired meanwhile is gone anyway
                client.request("POST", "auth/token/revoke-self", {}, token=token)


BURST_AUDIENCE = "vaultmesh-burst"


def burst_mesh_file(*, quotas: str = "", budget: int = 100, extra_auth: str = "") -> str:
    """The burst's mesh file: a JWT mount trusting the mesh's own identity issuer with one role, ``burst``
    (audience ``BURST_AUDIENCE``, claim team=burst, a ``lease_budget``), ``extra_auth`` lines under ``auth:``,
    and the given ``quotas.rate_limit`` lines. Shared by the burst test and ``benchmarks/quota_burst.py``."""
    text = f"""\
policies:
  burst: 'path "secret/data/burst/*" {{ capabilities = ["read"] }}'
auth:
  jwt:
    type: jwt
    config:
      oidc_discovery_url: "{{{{vaultmesh.issuer_url}}}}"
      oidc_discovery_ca_pem: "{{{{vaultmesh.ca_pem}}}}"
      bound_issuer: "{{{{vaultmesh.issuer_url}}}}"
    roles:
      burst:
        bound_audiences: [{BURST_AUDIENCE}]
        bound_claims: {{team: burst}}
        token_policies: [burst]
        lease_budget: {budget}
"""
    return text + extra_auth + ("quotas:\n  rate_limit:\n" + quotas if quotas else "")
