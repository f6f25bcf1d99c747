"""The mesh file: lifecycle part (nodes, zones, ports, seal, TLS, Raft, entry).

Every default carries its reason in the field's docstring. The mesh-as-code part (policies, auth, secrets, ...)
lives in ``spec.resources`` and is mixed in by inheritance, so the file stays one flat document.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator, model_validator

from vaultmesh.spec.resources import ResourcesSpec
from vaultmesh.spec.types import Duration

SCHEMA_VERSION = 1
"""The newest mesh-file schema this vaultmesh understands. Bump on incompatible changes only."""

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"

KMS_SEALS = ("awskms", "azurekeyvault", "gcpckms", "ocikms", "alicloudkms", "kmip")


OPTION_KEY = re.compile(r"[a-z_][a-z0-9_]{0,63}\Z")
"""A KMS seal option name as OpenBao spells them (region, kms_key_id, ...): written bare into node HCL."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SealSpec(_Model):
    type: Literal["static", "transit", "shamir", *KMS_SEALS] = "static"  # type: ignore[valid-type]
    """``static``: one 32-byte key file every node reads (embedded default, nothing else to run).
    ``transit``: a small dedicated seal node holds the key (the production shape on one machine).
    ``shamir``: a human unseals with key shares (no auto-unseal; kept for users who must).
    KMS types are passed through to OpenBao with ``options``."""
    options: dict[str, str] = Field(default_factory=dict)
    """Pass-through settings for KMS seals (region, key id, ...). Never put credentials here: use the
    provider's environment variables, which OpenBao reads itself."""
    key_shares: Annotated[int, Field(ge=1, le=10)] = 1
    key_threshold: Annotated[int, Field(ge=1, le=10)] = 1

    @model_validator(mode="after")
    def _check(self) -> SealSpec:
        if self.options and self.type in ("static", "transit", "shamir"):
            raise ValueError(f"seal.options is only for KMS seals ({', '.join(KMS_SEALS)}); "
                             f"vaultmesh manages the {self.type} seal itself")
        for key in self.options:
            if not OPTION_KEY.match(key):
                raise ValueError(f"seal.options key {key!r} is not an option name: use letters, digits and '_' "
                                 "(OpenBao's seal option names, e.g. kms_key_id)")
        if self.key_threshold > self.key_shares:
            raise ValueError("seal.key_threshold cannot exceed seal.key_shares")
        return self


class TLSSpec(_Model):
    ca_days: Annotated[int, Field(ge=1, le=36500)] = 3650
    """The mesh CA lives ten years: rotating a CA means re-trusting it in every client."""
    cert_days: Annotated[int, Field(ge=1, le=825)] = 90
    """Node certificates live 90 days, the common public-CA lifetime; rotation is a day-2 command."""


class AutopilotSpec(_Model):
    server_stabilization_time: str = "500ms"
    """How long a new node must be healthy before autopilot promotes it to voter. OpenBao's default of
    10 s is most of the default bring-up time; on loopback or a LAN 500 ms is plenty (measured: promotion
    then takes ~2.8 s after unseal, bounded by the followers' own heartbeat, not by this). Raise it on WANs."""
    reconcile_interval: str = "500ms"
    """How often autopilot acts on what it sees (default 10 s)."""
    update_interval: str = "250ms"
    """How often autopilot refreshes node health (default 2 s)."""
    cleanup_dead_servers: bool = False
    """Never remove a dead node automatically: a restarted node must find its seat."""


class RaftSpec(_Model):
    performance_multiplier: Annotated[int, Field(ge=1, le=10)] = 1
    """Scales Raft's timeouts. OpenBao's default (5) suits slow networks; 1 gives ~1 s leader election,
    which is what fast failover needs on a LAN or loopback."""
    autopilot: AutopilotSpec = AutopilotSpec()


class PortsSpec(_Model):
    base: Annotated[int, Field(ge=1024, le=65000)] | None = None
    """First port: node i gets api = base + 2i, cluster = base + 2i + 1, entry = base + 2n.
    Unset: free ports are picked at the first ``up`` and kept in the state dir."""
    entry: Annotated[int, Field(ge=1024, le=65535)] | None = None
    """The entry (HAProxy) port; unset: picked with the others."""


class EntrySpec(_Model):
    mode: Literal["auto", "haproxy", "none"] = "auto"
    """``auto``: HAProxy when the binary is installed, else clients are given the node list.
    ``haproxy``: require it. ``none``: no entry process; the address is the first healthy node."""
    hosts: list[str] = Field(default_factory=list)
    """``runtime: ssh``: the hosts (by name) that each run an entry, under their supervisor, on the entry port of
    their own address; clients are given the first. Empty: the entry runs on this machine's loopback."""


class SSHSpec(_Model):
    """How vaultmesh reaches a host: OpenSSH with a key, the host's key checked against ``known_hosts``."""

    user: str = "root"
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    key_file: str = "~/.ssh/id_ed25519"
    """The private key vaultmesh logs in with (no agent, no password)."""
    known_hosts: str = "~/.ssh/known_hosts"
    """The host keys vaultmesh accepts: a host whose key is not in this file is refused (no trust on first use)."""


class HostSpec(_Model):
    """One machine of a ``runtime: ssh`` mesh; node i runs on host i."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    address: Annotated[str, Field(min_length=1)]
    """The address the other hosts, the entry and the clients reach this host's node at (an IP address)."""
    zone: Annotated[str, Field(pattern=NAME_PATTERN)]
    root: str = "/"
    """The host's root for vaultmesh's files (``<root>/var/lib/vaultmesh/<mesh>``, the service files under
    ``<root>/etc``): ``/`` on a real host; a lab host's own folder."""
    service: Literal["auto", "systemd", "supervisor"] = "auto"
    """The host's service manager: ``auto`` takes systemd when it runs the host, else supervisord."""
    engine: str = "/usr/bin/bao"
    """The engine binary on the host (installed there: vaultmesh checks its version, it does not copy it)."""
    run_as: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "openbao"
    """The system user the node runs as (made on the host when missing; it owns the node's folder)."""
    ssh: SSHSpec = SSHSpec()

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"host address {value!r} is not an IP address (node certificates name it as one)") \
                from None
        return value


class LifecycleSpec(_Model):
    version: Literal[1] = SCHEMA_VERSION
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "vaultmesh"
    dev: bool = False
    """Allows ``nodes: 1``: no fault tolerance at all."""
    nodes: StrictInt = 3
    """3 tolerates one failure, 5 tolerates two. 1 is a dev-only choice (``dev: true``)."""
    zones: Annotated[list[Annotated[str, Field(pattern=NAME_PATTERN)]], Field(min_length=1)] = Field(
        default_factory=lambda: ["zone-a", "zone-b", "zone-c"])
    """Failure domains; nodes are spread round-robin so no zone holds a majority where possible."""
    ports: PortsSpec = PortsSpec()
    seal: SealSpec = SealSpec()
    tls: TLSSpec = TLSSpec()
    raft: RaftSpec = RaftSpec()
    entry: EntrySpec = EntrySpec()
    log_level: Literal["trace", "debug", "info", "warn", "error"] = "info"
    runtime: Literal["local", "netns", "ssh"] = "local"
    """``local``: every node is a process on this machine's loopback. ``netns``: every node runs in a network
    namespace of its own with its own address (root and iproute2 needed), so links between zones can be cut
    (``vaultmesh chaos partition-zone``). PostgreSQL and the identity issuer on 127.0.0.1 are then out of the
    nodes' reach. ``ssh``: node i runs on ``hosts[i]``, reached over SSH and run by its service manager."""
    hosts: list[HostSpec] = Field(default_factory=list)
    """``runtime: ssh``: the machines, one node on each; with fewer hosts than ``nodes``, node i runs on host
    ``i mod len(hosts)`` (``up`` warns: one host failing takes several nodes)."""
    issuer_address: str = "127.0.0.1"
    """The address of this machine the workload identity issuer listens on. Nodes fetch its keys (OIDC
    discovery) from there: on ``runtime: ssh`` give an address of this machine the hosts reach."""

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, n: int, info: ValidationInfo) -> int:
        if n == 1 and not info.data.get("dev"):
            raise ValueError("nodes: 1 has no fault tolerance; set dev: true to allow it for development")
        if n < 1 or n > 7:
            raise ValueError("nodes must be 3 or 5 (1 with dev: true); more than 7 makes Raft chatty")
        if n % 2 == 0:
            raise ValueError(f"nodes: {n} is even; an even count tolerates no more failures than {n - 1} "
                             f"nodes and makes split votes possible; use {n - 1} or {n + 1}")
        return n

    @model_validator(mode="after")
    def _check_runtime(self) -> LifecycleSpec:
        if self.runtime == "netns" and self.seal.type == "transit":
            raise ValueError("runtime: netns works with the static or shamir seal; the transit seal node listens "
                             "on loopback, out of the namespaces' reach")
        if self.runtime != "ssh":
            if self.entry.hosts:
                raise ValueError("entry.hosts is only read with runtime: ssh")
            if self.hosts:
                raise ValueError("hosts: is only read with runtime: ssh; add runtime: ssh or drop hosts:")
            return self
        if self.seal.type == "transit":
            raise ValueError("runtime: ssh works with the static, shamir or a KMS seal; the transit seal node "
                             "runs on this machine's loopback, out of the hosts' reach")
        if not self.hosts or len(self.hosts) > self.nodes:
            raise ValueError(f"runtime: ssh runs one node per host: nodes is {self.nodes} but hosts names "
                             f"{len(self.hosts)}; name as many hosts as nodes (fewer only to share hosts)")
        unknown = sorted(set(self.entry.hosts) - {h.name for h in self.hosts})
        if unknown:
            raise ValueError(f"entry.hosts names {', '.join(unknown)}, which hosts: does not name")
        for what in ("name", "address"):
            seen = [getattr(h, what) for h in self.hosts]
            dup = sorted({v for v in seen if seen.count(v) > 1})
            if dup:
                raise ValueError(f"hosts: {what} {', '.join(dup)} appears twice; each host has its own")
        return self

    @field_validator("issuer_address")
    @classmethod
    def _check_issuer_address(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"issuer_address {value!r} is not an IP address") from None
        return value

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[str]) -> list[str]:
        if len(set(zones)) != len(zones):
            raise ValueError("zone names must be unique")
        return zones


ROLE_PATTERN = re.compile(r"\*\Z|[A-Za-z0-9][A-Za-z0-9_./-]*/(\*|[a-z0-9][a-z0-9_.-]{0,62})\Z")


class ReaperSpec(_Model):
    """The keeper's reaper: revokes the tokens (and with them the leases) of workloads that are gone."""

    every: Duration = 5
    """Seconds between two scans of the token store (one LIST and one lookup per live token)."""
    stale_after: Duration = 15
    """A watched token not renewed for this long is abandoned: its ``run`` was SIGKILLed, or it is a login whose
    answer was lost in an election. ``run`` and the SDK renew every 5 s, so 15 s lets two heartbeats be lost
    to a leader election. Worst case from a SIGKILL to the revocation: ``stale_after + every`` (20 s)."""
    roles: list[str] = Field(default_factory=lambda: ["*"])
    """Logins watched: ``"<auth mount>/<role>"``, ``"<auth mount>/*"``, or ``"*"`` for every JWT/OIDC role.
    Tokens of watched roles must heartbeat (``vaultmesh run`` and the SDK do); a client that renews only near
    its TTL (``bao agent``, hvac) belongs on a role that is not watched. ``[]``: nothing is reaped."""

    @field_validator("roles")
    @classmethod
    def _check_roles(cls, roles: list[str]) -> list[str]:
        for role in roles:
            if not ROLE_PATTERN.match(role):
                raise ValueError(f"reaper.roles entry {role!r}: write '<auth mount>/<role>', '<auth mount>/*' "
                                 "or '*'")
        return roles

    @model_validator(mode="after")
    def _check_times(self) -> ReaperSpec:
        if self.every < 1 or self.stale_after < 10:
            raise ValueError("reaper: every must be at least 1s and stale_after at least 10s (two heartbeats "
                             "of 5 s must be allowed to fail)")
        return self


class KeeperSpec(_Model):
    """The keeper: one more managed process ``up`` starts, acting on the mesh with nobody at the keyboard."""

    enabled: bool = True
    """``keeper: false`` turns it off (then nothing reaps what a SIGKILLed run left: ``vaultmesh leases reap``)."""
    reaper: ReaperSpec = ReaperSpec()
    heal: bool = True
    """Restart a dead node (it rejoins and unseals), unseal a sealed one, restart the entry and the issuer,
    with nobody at the keyboard. ``false``: the keeper only reaps, snapshots and drills (a test that needs a
    node to stay dead, or an operator who wants every restart to be a human's)."""

    @property
    def reap_within(self) -> float | None:
        """Seconds within which a token nobody renews is revoked, leases included (the *reap interval*:
        ``stale_after``, one cycle to see it, one more for a cycle's own work and the leases' asynchronous
        revocation); None when the keeper is off."""
        if not self.enabled or not self.reaper.roles:
            return None
        return float(self.reaper.stale_after + 2 * self.reaper.every)

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: object) -> object:
        return {"enabled": value} if isinstance(value, bool) else value


class RetentionSpec(_Model):
    """How many snapshots are kept: the newest ``count``, and none older than ``age`` (either may be absent;
    the newest snapshot is always kept)."""

    count: Annotated[int, Field(ge=1)] | None = 96
    age: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, value: object) -> object:
        return {"count": value} if isinstance(value, int) and not isinstance(value, bool) else value


class SnapshotsSpec(_Model):
    """Raft snapshots the keeper takes on a schedule (``vaultmesh snapshot save`` takes one by hand)."""

    every: Duration | None = 900
    """Seconds between two scheduled snapshots (``15m``); ``null``: none on a schedule."""
    keep: RetentionSpec = RetentionSpec()
    dir: Path | None = None
    """Where snapshots go: default ``<state dir>/snapshots``; any other folder (a mounted volume) for an
    off-cluster copy. Relative paths are taken from the mesh file's folder."""
    ship: list[str] | None = None
    """A command run with each new snapshot's path as its last argument (``["rclone", "copyto", ...]``):
    the user's own tool ships it elsewhere; a non-zero exit is reported and retried at the next schedule."""

    @model_validator(mode="after")
    def _check(self) -> SnapshotsSpec:
        if self.every is not None and self.every < 10:
            raise ValueError("snapshots.every must be at least 10s")
        if self.ship is not None and not self.ship:
            raise ValueError("snapshots.ship: give the command as a list of words, or leave it out")
        return self


class DrillsSpec(_Model):
    """Restore drills the keeper runs on a schedule (``vaultmesh drill`` runs one by hand)."""

    every: Duration | None = None
    """Seconds between two scheduled drills (``24h``); ``null`` (default): none on a schedule."""
    isolation: bool = True
    """The scratch mesh runs in network namespaces with no route out; ``false`` runs it on the machine's own
    network (then it could reach the databases the snapshot's roles name)."""


class AlertsSpec(_Model):
    """Where firing alerts go: Alertmanager, run by the keeper beside Prometheus, sends each group of alerts to one
    receiver, ``webhook`` (Alertmanager's webhook JSON, POSTed) or ``command`` (run with that JSON on stdin)."""

    webhook: str | None = None
    """A URL the alerts are POSTed to: ``https://`` (verified with the system's CAs), plain ``http://`` only to
    a loopback address (127.0.0.1, ::1, localhost), where nothing leaves the machine."""
    command: list[str] | None = None
    """A command run (no shell; the program first, then its arguments) once per notification, with the
    webhook JSON on its stdin; killed after 10 s; a non-zero exit makes Alertmanager send it again."""
    group_wait: Duration = 30
    """How long Alertmanager waits for more alerts of a new group before the first notification (``30s``)."""
    group_interval: Duration = 300
    """How long before a group that changed (an alert joined or resolved) is notified again (``5m``)."""
    repeat_interval: Duration = 4 * 3600
    """How long before a group still firing unchanged is notified again (``4h``)."""

    @model_validator(mode="after")
    def _check(self) -> AlertsSpec:
        import ipaddress
        from urllib.parse import urlsplit

        if (self.webhook is None) == (self.command is None):
            raise ValueError("monitoring.alerts: give exactly one receiver, webhook: URL or command: [words]")
        if self.command is not None and (not self.command or not all(w.strip() for w in self.command)):
            raise ValueError("monitoring.alerts.command: give the command as a list of non-empty words, "
                             "the program first")
        if self.webhook is not None:
            url = urlsplit(self.webhook)
            host = url.hostname or ""
            try:
                loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if url.scheme not in ("http", "https") or not host:
                raise ValueError("monitoring.alerts.webhook is not an http(s) URL with a host")
            if url.scheme == "http" and not loopback:
                raise ValueError("monitoring.alerts.webhook must be https:// (plain http:// only to a loopback "
                                 "address: 127.0.0.1, ::1 or localhost), so alerts are not sent in the clear")
        if min(self.group_wait, self.group_interval) < 1:
            raise ValueError("monitoring.alerts: group_wait and group_interval must be at least 1s")
        if self.repeat_interval < self.group_interval:
            raise ValueError("monitoring.alerts.repeat_interval must be at least group_interval")
        return self


class MonitoringSpec(_Model):
    """Prometheus, run by the keeper beside the mesh, scraping every node, the keeper and the entry with the
    mesh's alert rules loaded."""

    mode: Literal["auto", "prometheus", "none"] = "auto"
    """``auto``: run Prometheus when the ``prometheus`` binary is installed (Debian package ``prometheus``);
    ``prometheus``: run it, and say so in ``status`` when it cannot be; ``none``: never."""
    retention: Duration = 86400 * 7
    """How long Prometheus keeps samples (``7d``)."""
    alerts: AlertsSpec | None = None
    """The receiver of firing alerts; with one, the keeper also runs Alertmanager (Debian package
    ``prometheus-alertmanager``) and points Prometheus at it. None (default): alerts only show in Prometheus."""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        return {"mode": value} if isinstance(value, str) else value


class MeshSpec(ResourcesSpec, LifecycleSpec):
    """The whole mesh file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keeper: KeeperSpec = KeeperSpec()
    """Not part of the mesh's shape: the keeper's settings may change on a running mesh."""
    snapshots: SnapshotsSpec = SnapshotsSpec()
    drills: DrillsSpec = DrillsSpec()
    monitoring: MonitoringSpec = MonitoringSpec()


def zone_layout(spec: LifecycleSpec) -> list[tuple[str, str]]:
    """Node names and their zones, spread round-robin: [("node-1", "zone-a"), ...]; on ``runtime: ssh`` each
    node takes its host's zone."""
    if spec.runtime == "ssh" and spec.hosts:
        return [(f"node-{i + 1}", node_host(spec, i).zone) for i in range(spec.nodes)]
    return [(f"node-{i + 1}", spec.zones[i % len(spec.zones)]) for i in range(spec.nodes)]


def node_host(spec: LifecycleSpec, i: int) -> HostSpec:
    """The host node i (from 0) of a ``runtime: ssh`` mesh runs on: host i, round robin when hosts are fewer."""
    return spec.hosts[i % len(spec.hosts)]


def zone_warnings(spec: LifecycleSpec) -> list[str]:
    """Say when a single zone's loss would take quorum with it, or one host runs several nodes."""
    counts: dict[str, int] = {}
    for _, zone in zone_layout(spec):
        counts[zone] = counts.get(zone, 0) + 1
    quorum = spec.nodes // 2 + 1
    warnings = []
    if spec.nodes == 1:
        warnings.append("nodes: 1 is a development mesh: any failure is an outage, and data has one copy")
    for zone, count in sorted(counts.items()):
        if spec.nodes > 1 and spec.nodes - count < quorum:
            warnings.append(f"zone {zone} holds {count} of {spec.nodes} nodes: losing it loses quorum; "
                            f"declare at least 3 zones")
    if spec.runtime == "ssh" and spec.hosts and len(spec.hosts) < spec.nodes:
        shared = sorted({node_host(spec, i).name for i in range(len(spec.hosts), spec.nodes)})
        they = f"hosts {', '.join(shared)} each run" if len(shared) > 1 else f"host {shared[0]} runs"
        warnings.append(f"{they} more than one node: a host failing takes several nodes with it; give each "
                        "node its own host")
    return warnings
