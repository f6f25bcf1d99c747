"""The values a bench run produces: samples (one per operation), events (chaos), and the run's config."""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from vaultmesh.errors import EngineError, Unavailable, VaultmeshError

Scenario = Literal["rollout", "steady", "kv-read", "jwt-login", "db-creds"]
Op = Literal["workload", "kv-read", "jwt-login", "db-creds"]

SCENARIOS: tuple[str, ...] = ("rollout", "steady", "kv-read", "jwt-login", "db-creds")
OPS: tuple[str, ...] = ("workload", "kv-read", "jwt-login", "db-creds")

WORKLOAD = "workload"
"""The phase name of a whole workload: from its scheduled start to secrets in hand (login, KV, database)."""
SECRETS = "login-to-secrets"
"""From the start of the login to database credentials in hand (service time, no queueing)."""
WORKLOAD_PHASES = (SECRETS, "mint", "login", "kv", "db", "revoke")

MAX_COUNT = 100_000
"""No run sends more than this many jobs: loops here are bounded in count as well as in time."""
MAX_DURATION = 900.0
"""Seconds: the longest a run's schedule may span (window, duration, hold)."""
MAX_RATE = 5_000.0
"""Arrivals per second: well above what 2 cores serve, low enough that a typo cannot flood anything."""
MAX_CONCURRENCY = 1_024
MAX_PROCESSES = 16


@dataclass(frozen=True)
class Sample:
    """One operation. Times are seconds since the run's start (t0); ``t_sched`` is when it was due.

    Open-loop latency is ``t_end - t_sched``: a request that waited for a free thread counts its wait, so
    latency is not hidden by coordinated omission. For closed-loop runs ``t_sched == t_start``.
    """

    phase: str
    seq: int
    t_sched: float
    t_start: float
    t_end: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency(self) -> float:
        return self.t_end - self.t_sched

    def row(self) -> list[Any]:
        return [self.phase, self.seq, round(self.t_sched, 6), round(self.t_start, 6), round(self.t_end, 6),
                self.error]

    @classmethod
    def from_row(cls, row: list[Any]) -> Sample:
        return cls(str(row[0]), int(row[1]), float(row[2]), float(row[3]), float(row[4]),
                   None if row[5] is None else str(row[5]))


@dataclass(frozen=True)
class Event:
    """Something that happened to the mesh during the run (a fault injected or lifted), at ``t`` since t0."""

    t: float
    kind: str
    detail: str = ""


@dataclass(frozen=True)
class BenchConfig:
    """What to run. Validated by ``check``: every run is bounded in count and in time."""

    scenario: str = "rollout"
    count: int = 100
    """rollout: workloads; closed-loop single-op: requests (0: until ``duration``)."""
    window: float = 5.0
    """rollout: seconds over which the workloads start, evenly spread (0: all at once)."""
    rate: float = 0.0
    """steady (and single-op with a rate): arrivals per second, scheduled in advance (open loop)."""
    duration: float = 10.0
    """steady and single-op: seconds of load."""
    hold: float = 1.0
    """Seconds a workload holds its secrets before it revokes them and exits."""
    concurrency: int = 32
    """Threads in all (split across processes): jobs in flight at once, not counting held workloads."""
    processes: int = 2
    """Worker processes: 2 on this 2-core machine; each has its own threads and connections."""
    op: str = "workload"
    """steady: the operation that arrives (workload, kv-read, jwt-login, db-creds)."""
    raw: bool = False
    """Ceiling mode: the same requests with the least client work (pre-minted tokens, raw http.client to the
    entry, no retries, no JSON parsing beyond the token and lease id)."""
    retry_deadline: float = 15.0
    """The workload path's retry deadline per request (EngineClient's default)."""
    grace: float = 60.0
    """Seconds past the schedule's end after which unfinished jobs are abandoned (and counted as errors)."""

    def check(self) -> None:
        if self.scenario not in SCENARIOS:
            raise VaultmeshError(f"unknown scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}")
        if self.op not in OPS:
            raise VaultmeshError(f"unknown operation {self.op!r}; choose one of {', '.join(OPS)}")
        if not 0 <= self.count <= MAX_COUNT:
            raise VaultmeshError(f"count must be between 0 and {MAX_COUNT}, got {self.count}")
        if self.scenario == "rollout" and self.count < 1:
            raise VaultmeshError("a rollout needs at least one workload (-n)")
        if not 0 <= self.rate <= MAX_RATE:
            raise VaultmeshError(f"rate must be between 0 and {MAX_RATE:g}/s, got {self.rate:g}")
        if self.scenario == "steady" and self.rate <= 0:
            raise VaultmeshError("steady needs an arrival rate (--rate)")
        if self.raw and self.hold > RAW_HOLD_MAX:
            raise VaultmeshError(f"--raw holds at most {RAW_HOLD_MAX:g} s, got {self.hold:g}: a raw workload never "
                                 "renews its token, and the mesh's reaper revokes a watched token silent for "
                                 "reaper.stale_after (15 s)", hint="use the workload path (no --raw) for long holds")
        for name in ("window", "duration", "hold"):
            v = getattr(self, name)
            if not 0 <= v <= MAX_DURATION:
                raise VaultmeshError(f"{name} must be between 0 and {MAX_DURATION:g} s, got {v:g}")
        if self.scenario != "rollout" and self.duration <= 0 and self.count <= 0:
            raise VaultmeshError("give a duration or a count: a run must end")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise VaultmeshError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise VaultmeshError(f"processes must be between 1 and {MAX_PROCESSES}")
        if self.open_loop and self.expected_jobs > MAX_COUNT:
            raise VaultmeshError(f"{self.expected_jobs} arrivals exceed the cap of {MAX_COUNT}; lower the rate "
                                 "or the duration")

    @property
    def open_loop(self) -> bool:
        return self.scenario in ("rollout", "steady") or self.rate > 0

    @property
    def job_op(self) -> str:
        """The operation each job performs."""
        if self.scenario == "rollout":
            return "workload"
        if self.scenario == "steady":
            return self.op
        return self.scenario

    @property
    def expected_jobs(self) -> int:
        if self.scenario == "rollout":
            return self.count
        if self.open_loop:
            n = int(self.rate * self.duration + 1e-9)
            return min(n, self.count) if self.count else n
        return self.count

    @property
    def schedule_span(self) -> float:
        """Seconds from t0 until the last job is due (closed loop: the duration)."""
        if self.scenario == "rollout":
            return self.window
        return self.duration

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Counts:
    """The mesh's token and lease counts (admin view)."""

    tokens: int
    leases: int


RAW_HOLD_MAX = 10.0
"""The longest hold of the raw path, whose workloads do not heartbeat (the workload path's do)."""


@dataclass
class BenchResult:
    config: BenchConfig
    samples: list[Sample]
    events: list[Event] = field(default_factory=list)
    wall: float = 0.0
    """Seconds from t0 until the last worker finished."""
    before: Counts | None = None
    after: Counts | None = None
    returned_after: float | None = None
    """Seconds after the run until the counts were back at the baseline (None: they were not)."""
    cleanup: str = ""
    """What was revoked by the bench itself after the run (single-op scenarios), if anything."""
    notes: list[str] = field(default_factory=list)
    abandoned: int = 0
    """Jobs never finished before the run's hard deadline."""

    @property
    def returned(self) -> bool:
        return self.returned_after is not None


def error_kind(err: BaseException) -> str:
    """A short, stable name for what went wrong, used to count errors by kind."""
    if isinstance(err, EngineError):
        return f"http-{err.status}"
    if isinstance(err, Unavailable):
        return "unavailable"
    if isinstance(err, TimeoutError):
        return "timeout"
    if isinstance(err, ConnectionRefusedError):
        return "refused"
    if isinstance(err, OSError):
        return "connection"
    return type(err).__name__


def check_loopback(addrs: Iterable[str], allowed_hosts: Iterable[str] = ()) -> None:
    """Refuse any target that is not on loopback or one of ``allowed_hosts`` (this mesh's own namespace hosts)."""
    allowed = set(allowed_hosts)
    for addr in addrs:
        host = urllib.parse.urlsplit(addr).hostname or ""
        if host == "localhost" or host in allowed:
            continue
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            pass
        raise VaultmeshError(f"refusing to load {addr}: bench and chaos only target loopback addresses or the "
                             "mesh's own network-namespace hosts")
