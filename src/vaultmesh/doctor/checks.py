"""The doctor's checks: plain functions from ``Facts`` (what ``gather`` read from the live mesh and its files) to
``Finding``s. Pure: every check is tested by breaking its fact on purpose.

The checks follow the seed's production checklist (nodes over zones, Raft on a data disk with room, auto-unseal,
TLS with days left and renewal on, auth roles per workload, least-privilege policies, short TTLs, audit on and a
second device, monitoring, recent verified snapshots, a passed drill, a load test) and the hardening items of
the existing readiness tools (no root token, no ``token_ttl=0``, file modes, unauthenticated metrics only on
loopback, the same-disk static-seal warning, core dumps off, one version across nodes).

A check that cannot be answered (the mesh did not answer, no admin token) says so as a ``warn``, never a
``pass``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["pass", "warn", "fail"]

TLS_FAIL_DAYS = 30.0
"""A certificate with fewer days left fails (the issue's threshold; renewal runs at two thirds of a lifetime)."""
MAX_TOKEN_TTL = 3600.0
"""A workload role's token TTL above this is a warning (the seed: TTLs of an hour or less)."""
DISK_FAIL, DISK_WARN = 0.10, 0.20
"""Free fractions of a Raft data filesystem under which the disk check fails / warns."""
SNAPSHOT_STALE_FACTOR = 2.0
"""The newest snapshot may be this many intervals old before the snapshot check fails."""
DRILL_MAX_AGE = 7 * 86400.0
"""Without a drill schedule, a passed drill older than this is a warning."""
WORKLOAD_AUTH = ("jwt", "oidc", "approle", "kubernetes", "cert")
SECRET_MODE, DIR_MODE = 0o600, 0o700


@dataclass(frozen=True)
class Finding:
    id: str
    status: Status
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "status": self.status, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class NodeFacts:
    name: str
    zone: str
    host: str
    """The address its listener binds (loopback, or a network namespace's own)."""
    healthy: bool
    version: str | None = None
    core_limit: int | None = None
    """The process's RLIMIT_CORE soft limit (None: not running, or not readable)."""
    data_free: float | None = None
    """Free fraction of the filesystem under its Raft data dir."""
    data_fstype: str | None = None
    data_device: int | None = None


@dataclass(frozen=True)
class Role:
    mount: str
    type: str
    name: str
    token_ttl: float
    """Seconds; 0: unset, so the mount's or the system's default (768 h) applies."""
    token_max_ttl: float = 0.0


@dataclass(frozen=True)
class Cert:
    name: str
    days_left: float


@dataclass(frozen=True)
class Facts:
    now: float
    nodes: tuple[NodeFacts, ...]
    dev: bool = False
    answering: bool = True
    """The mesh answered an admin request (False: the API checks below are warnings)."""
    failure_tolerance: int | None = None
    autopilot_healthy: bool | None = None
    seal: str = "static"
    seal_key_device: int | None = None
    """The device of the static seal key's filesystem."""
    certs: tuple[Cert, ...] = ()
    keeper_running: bool = False
    keeper_heal: bool = False
    auth_mounts: Mapping[str, str] = field(default_factory=dict)
    """Path → type of every auth method."""
    roles: tuple[Role, ...] = ()
    lint: tuple[str, ...] = ()
    """One line per lint warning on the live ACL policies."""
    root_tokens: int | None = None
    """Tokens with the root policy (None: not counted)."""
    audit_devices: Mapping[str, str] = field(default_factory=dict)
    """Path → type of every enabled audit device."""
    monitoring: str | None = None
    """Where alerting rules for this mesh are loaded (None: nowhere vaultmesh knows of)."""
    snapshot_every: float | None = None
    mesh_age: float = 0.0
    """Seconds since the mesh was created."""
    newest_snapshot: float | None = None
    """When the newest snapshot was taken (None: none)."""
    snapshot_problem: str | None = None
    """Why the newest snapshot failed its offline check (None: it passed, or there is none)."""
    drill_every: float | None = None
    drill_time: float | None = None
    drill_ok: bool | None = None
    drill_detail: str = ""
    load_test: float | None = None
    """When the last recorded ``bench`` or ``chaos`` run ended (None: no record)."""
    load_ok: bool = True
    load_run: str = ""
    modes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Path → (its mode, the most it may be) for the state dir and every secret file in it."""


Check = Callable[[Facts], Finding]


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def nodes_count(f: Facts) -> Finding:
    n = len(f.nodes)
    if n in (3, 5, 7):
        return Finding("nodes.count", "pass", f"{n} nodes: tolerates {(n - 1) // 2} failure(s)")
    return Finding("nodes.count", "warn" if f.dev else "fail",
                   f"{n} node(s): {'no' if n < 3 else 'no more'} fault tolerance" + (" (dev: true)" if f.dev else ""),
                   "run 3 or 5 nodes (nodes: 3 in the mesh file)")


def nodes_zones(f: Facts) -> Finding:
    count: dict[str, int] = {}
    for n in f.nodes:
        count[n.zone] = count.get(n.zone, 0) + 1
    zone, most = max(count.items(), key=lambda kv: kv[1], default=("", 0))
    if len(f.nodes) >= 3 and most > (len(f.nodes) - 1) // 2:
        return Finding("nodes.zones", "fail", f"zone {zone} holds {most} of {len(f.nodes)} nodes: losing it loses "
                       "the quorum", "name at least 3 zones (zones: [a, b, c]) so no zone holds a majority")
    return Finding("nodes.zones", "pass", f"{len(f.nodes)} nodes over {len(count)} zones, none holds a majority")


def nodes_hosts(f: Facts) -> Finding:
    hosts = {n.host for n in f.nodes}
    if len(hosts) <= 1 or all(h.startswith("127.") for h in hosts):
        return Finding("nodes.hosts", "warn", "every node runs on this one machine: its zones are labels, and the "
                       "machine is a single point of failure", "run the nodes on separate hosts for production")
    return Finding("nodes.hosts", "pass", f"nodes on {len(hosts)} addresses")


def nodes_healthy(f: Facts) -> Finding:
    bad = [n.name for n in f.nodes if not n.healthy]
    if bad:
        return Finding("nodes.healthy", "fail", f"not healthy: {', '.join(bad)}",
                       "vaultmesh status shows why; vaultmesh up heals a stopped or sealed node")
    return Finding("nodes.healthy", "pass", "every node is unsealed, a voter and healthy")


def raft_tolerance(f: Facts) -> Finding:
    if f.failure_tolerance is None or f.autopilot_healthy is None:
        return Finding("raft.tolerance", "warn", "autopilot's state could not be read",
                       "check vaultmesh status and the admin login")
    if not f.autopilot_healthy or f.failure_tolerance < 1:
        return Finding("raft.tolerance", "fail", f"autopilot {'healthy' if f.autopilot_healthy else 'unhealthy'}, "
                       f"failure tolerance {f.failure_tolerance}: one more failure loses the quorum",
                       "bring every node back (vaultmesh up) before any change")
    return Finding("raft.tolerance", "pass", f"autopilot healthy, failure tolerance {f.failure_tolerance}")


def raft_disk(f: Facts) -> Finding:
    known = [n for n in f.nodes if n.data_free is not None]
    if not known:
        return Finding("raft.disk", "warn", "the Raft data folders could not be read", "check the state dir")
    low = min(known, key=lambda n: n.data_free or 0.0)
    free = low.data_free or 0.0
    if free < DISK_FAIL:
        return Finding("raft.disk", "fail", f"{low.name}'s Raft data filesystem is {100 * (1 - free):.0f}% full",
                       "free space or move the state dir to a larger data disk: Raft stops at a full disk")
    tmp = [n.name for n in known if n.data_fstype in ("tmpfs", "ramfs")]
    if tmp:
        return Finding("raft.disk", "warn", f"Raft data of {', '.join(tmp)} is in memory (tmpfs): lost on reboot",
                       "put the state dir on a persistent disk")
    if free < DISK_WARN:
        return Finding("raft.disk", "warn", f"{low.name}'s Raft data filesystem is {100 * (1 - free):.0f}% full",
                       "free space before it fills")
    return Finding("raft.disk", "pass", f"Raft data on disk, at least {100 * free:.0f}% free")


def seal_auto(f: Facts) -> Finding:
    if f.seal == "shamir":
        return Finding("seal.auto", "warn", "Shamir seal: a restarted node waits for a human's key shares",
                       "use seal.type: transit (or a KMS) for auto-unseal")
    if f.seal == "static":
        same = f.seal_key_device is not None and any(n.data_device == f.seal_key_device for n in f.nodes)
        if same:
            return Finding("seal.auto", "warn", "static seal: the unseal key is on the same disk as the data it "
                           "protects (whoever reads the state dir can decrypt it)",
                           "use seal.type: transit with the seal node on another host, or a KMS")
        return Finding("seal.auto", "pass", "static seal, its key on another disk than the data")
    return Finding("seal.auto", "pass", f"auto-unseal with the {f.seal} seal")


def tls_expiry(f: Facts) -> Finding:
    if not f.certs:
        return Finding("tls.expiry", "warn", "no certificate could be read", "check the state dir's pki/ and tls/")
    soonest = min(f.certs, key=lambda c: c.days_left)
    if soonest.days_left < TLS_FAIL_DAYS:
        return Finding("tls.expiry", "fail", f"{soonest.name}'s certificate expires in {soonest.days_left:.0f} days",
                       "renew it (vaultmesh certs rotate) before nodes stop talking to each other")
    return Finding("tls.expiry", "pass", f"{len(f.certs)} certificates, the soonest ({soonest.name}) has "
                   f"{soonest.days_left:.0f} days left")


def tls_renewal(f: Facts) -> Finding:
    if f.keeper_running:
        return Finding("tls.renewal", "pass", "the keeper runs (it watches the mesh around the clock)")
    return Finding("tls.renewal", "warn", "the keeper is not running: nothing renews certificates or heals nodes "
                   "while nobody is at the keyboard", "keeper: true in the mesh file, then vaultmesh up")


def auth_roles(f: Facts) -> Finding:
    if not f.answering:
        return _unanswered("auth.roles")
    mounts = [p for p, t in f.auth_mounts.items() if t in WORKLOAD_AUTH]
    if not mounts:
        return Finding("auth.roles", "warn", "no workload auth method (jwt, approle, kubernetes, cert) is enabled",
                       "declare one with roles per workload in the mesh file and vaultmesh apply")
    empty = [p for p in mounts if not any(r.mount == p for r in f.roles)]
    if empty:
        return Finding("auth.roles", "warn", f"auth method(s) without a role: {', '.join(empty)}",
                       "declare a role per workload, or remove the method")
    return Finding("auth.roles", "pass", f"{len(f.roles)} role(s) on {len(mounts)} workload auth method(s)")


def policies_lint(f: Facts) -> Finding:
    if not f.answering:
        return _unanswered("policies.lint")
    if f.lint:
        return Finding("policies.lint", "warn", f"{len(f.lint)} policy finding(s): " + "; ".join(f.lint[:3])
                       + ("; ..." if len(f.lint) > 3 else ""), "narrow the policies (vaultmesh lint -f FILE)")
    return Finding("policies.lint", "pass", "no policy grants a whole engine, a near-root glob or sys/")


def tokens_ttl(f: Facts) -> Finding:
    if not f.answering:
        return _unanswered("tokens.ttl")
    unset = [f"{r.mount}role/{r.name}" for r in f.roles if r.token_ttl <= 0]
    if unset:
        return Finding("tokens.ttl", "fail", f"token_ttl unset (0: 768 h by default) on {', '.join(unset[:5])}",
                       "set token_ttl (e.g. 15m) and token_max_ttl on every role")
    long = [f"{r.mount}role/{r.name} ({r.token_ttl / 3600:g} h)" for r in f.roles if r.token_ttl > MAX_TOKEN_TTL]
    if long:
        return Finding("tokens.ttl", "warn", f"token TTL over 1 h: {', '.join(long[:5])}",
                       "shorten token_ttl: workloads renew, a leaked token should die soon")
    return Finding("tokens.ttl", "pass", f"every role's token TTL is 1 h or less ({len(f.roles)} role(s))")


def tokens_root(f: Facts) -> Finding:
    if not f.answering or f.root_tokens is None:
        return _unanswered("tokens.root")
    if f.root_tokens:
        return Finding("tokens.root", "fail", f"{f.root_tokens} token(s) with the root policy exist",
                       "revoke them (bao token revoke -accessor ...); vaultmesh needs none after bootstrap")
    return Finding("tokens.root", "pass", "no token with the root policy")


def audit_enabled(f: Facts) -> Finding:
    if not f.answering:
        return _unanswered("audit.enabled")
    if not f.audit_devices:
        return Finding("audit.enabled", "fail", "no audit device is enabled: no record of who read what",
                       "declare an audit device in the mesh file (audit: ...) and vaultmesh apply")
    return Finding("audit.enabled", "pass", f"audit devices: {', '.join(sorted(f.audit_devices))}")


def audit_second(f: Facts) -> Finding:
    if not f.answering:
        return _unanswered("audit.second")
    if len(f.audit_devices) < 2:
        return Finding("audit.second", "warn", "one audit device: if it fails, OpenBao refuses every request",
                       "add a second device, streamed off the machine (type: socket or syslog)")
    if all(t == "file" for t in f.audit_devices.values()):
        return Finding("audit.second", "warn", "every audit device writes a local file: nothing is streamed to a "
                       "central system", "make one device socket or syslog")
    return Finding("audit.second", "pass", f"{len(f.audit_devices)} audit devices, one streamed off the node")


def monitoring_alerts(f: Facts) -> Finding:
    if f.monitoring:
        return Finding("monitoring.alerts", "pass", f"Prometheus with the mesh's alert rules: {f.monitoring}")
    return Finding("monitoring.alerts", "warn", "no Prometheus with alert rules for this mesh is known",
                   "install prometheus (monitoring: auto runs it), or load `vaultmesh monitoring config` "
                   "and `rules` into your own")


def snapshots_recent(f: Facts) -> Finding:
    if f.snapshot_problem:
        return Finding("snapshots.recent", "fail", f"the newest snapshot fails its offline check: {f.snapshot_problem}",
                       "take a new one (vaultmesh snapshot save) and find what damaged it")
    if f.newest_snapshot is None:
        if f.snapshot_every is not None and f.mesh_age < SNAPSHOT_STALE_FACTOR * f.snapshot_every:
            return Finding("snapshots.recent", "warn", "no snapshot yet; the keeper takes the first within "
                           f"{f.snapshot_every / 60:g} min of its start", "or take one now: vaultmesh snapshot save")
        return Finding("snapshots.recent", "fail", "no snapshot of this mesh exists",
                       "set snapshots.every in the mesh file, or run vaultmesh snapshot save")
    return _recent("snapshots.recent", "the newest snapshot, verified offline,", f.now - f.newest_snapshot,
                   SNAPSHOT_STALE_FACTOR * (f.snapshot_every or 86400.0), "fail",
                   "check the keeper (vaultmesh status) and its log; vaultmesh snapshot save")


def _recent(check: str, what: str, age: float, limit: float, stale: Status, fix: str) -> Finding:
    """``what`` happened ``age`` seconds ago: a pass within ``limit``, else ``stale``."""
    if age > limit:
        return Finding(check, stale, f"{what} is from {_ago(age)}: stale", fix)
    return Finding(check, "pass", f"{what} is from {_ago(age)}")


def drill_passed(f: Facts) -> Finding:
    if f.drill_time is None:
        return Finding("drill.passed", "warn", "no restore drill has run: the snapshots are untested",
                       "vaultmesh drill; and drills.every: 24h in the mesh file")
    if not f.drill_ok:
        return Finding("drill.passed", "fail", f"the last drill ({_ago(f.now - f.drill_time)}) failed: "
                       f"{f.drill_detail}", "read drills/last.json; fix what the failed check names")
    return _recent("drill.passed", "the last drill, passed,", f.now - f.drill_time,
                   SNAPSHOT_STALE_FACTOR * f.drill_every if f.drill_every else DRILL_MAX_AGE, "warn",
                   "vaultmesh drill, or drills.every in the mesh file")


def load_tested(f: Facts) -> Finding:
    if f.load_test is None:
        return Finding("load.tested", "warn", "no load test of this mesh is on record",
                       "vaultmesh bench steady (its verdict is recorded)")
    if not f.load_ok:
        return Finding("load.tested", "warn", f"the last load test ({f.load_run}, {_ago(f.now - f.load_test)}) "
                       "failed its verdict", "read its report; vaultmesh bench steady again once fixed")
    return Finding("load.tested", "pass", f"the last load test ({f.load_run}) passed {_ago(f.now - f.load_test)}")


def files_modes(f: Facts) -> Finding:
    loose = [f"{p} ({mode:o})" for p, (mode, most) in sorted(f.modes.items()) if mode & ~most & 0o777]
    if loose:
        return Finding("files.modes", "fail", f"readable by others: {', '.join(loose[:4])}",
                       "chmod 600 each secret file and 700 the state dir")
    return Finding("files.modes", "pass", f"{len(f.modes)} secret files and folders readable by their owner only")


def metrics_loopback(f: Facts) -> Finding:
    exposed = [n.name for n in f.nodes if not _private(n.host)]
    if exposed:
        return Finding("metrics.loopback", "fail", f"unauthenticated /v1/sys/metrics on a public address: "
                       f"{', '.join(exposed)}", "bind listeners to loopback or a private network")
    return Finding("metrics.loopback", "pass", "unauthenticated metrics only on loopback or private addresses")


def core_dumps(f: Facts) -> Finding:
    on = [n.name for n in f.nodes if n.core_limit not in (None, 0)]
    if on:
        return Finding("core.dumps", "fail", f"core dumps allowed for {', '.join(on)}: a crash writes unsealed "
                       "keys to disk", "restart them with vaultmesh (it starts nodes with RLIMIT_CORE 0)")
    if all(n.core_limit is None for n in f.nodes):
        return Finding("core.dumps", "warn", "no node process could be inspected", "vaultmesh status")
    return Finding("core.dumps", "pass", "core dumps off on every node")


def versions_match(f: Facts) -> Finding:
    versions = {n.version for n in f.nodes if n.version}
    if len(versions) > 1:
        return Finding("versions.match", "fail", "nodes run different versions: " + ", ".join(
            f"{n.name} {n.version}" for n in f.nodes if n.version), "finish the upgrade (vaultmesh upgrade)")
    if not versions:
        return Finding("versions.match", "warn", "no node reported its version", "vaultmesh status")
    return Finding("versions.match", "pass", f"every node runs {versions.pop()}")


def _unanswered(check: str) -> Finding:
    return Finding(check, "warn", "not checked: the mesh did not answer the admin login",
                   "vaultmesh status; vaultmesh up heals a stopped mesh")


def _private(host: str) -> bool:
    import ipaddress

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return ip.is_loopback or ip.is_private


CHECKS: Sequence[Check] = (
    nodes_count, nodes_zones, nodes_hosts, nodes_healthy, raft_tolerance, raft_disk, seal_auto, tls_expiry,
    tls_renewal, auth_roles, policies_lint, tokens_ttl, tokens_root, audit_enabled, audit_second,
    monitoring_alerts, snapshots_recent, drill_passed, load_tested, files_modes, metrics_loopback, core_dumps,
    versions_match,
)


def evaluate(facts: Facts) -> list[Finding]:
    """Every check on ``facts``, in the checklist's order."""
    return [check(facts) for check in CHECKS]


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(x.status == "fail" for x in findings) else 0
