"""What a chaos run does, as a value, and the figures computed from what the probe saw. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from vaultmesh.errors import VaultmeshError

FAULTS: dict[str, str] = {
    "kill-leader": "SIGKILL the active node",
    "kill-node": "SIGKILL one standby (or --target NODE)",
    "stop-zone": "every node of a zone (default: the leader's), SIGKILL or SIGSTOP (--signal)",
    "partition-zone": "cut a zone's nodes off from the other nodes (network-namespace meshes)",
    "lose-quorum": "SIGKILL the leader and one more node: two of three gone, writes stop",
}
"""``slow-disk``/``latency`` are left out: they need tc netem or a device-mapper delay, and this kernel has neither
(``tc qdisc ... netem``: "Specified qdisc kind is unknown")."""
NETNS_FAULTS = frozenset({"partition-zone"})

Signal = Literal["kill", "stop"]


@dataclass(frozen=True)
class Fault:
    fault: str
    at: float = 3.0
    """Seconds after the load starts when the fault is injected."""
    lift_after: float | None = None
    """Seconds after injection when it is lifted: SIGCONT, links mended, or `vaultmesh up`
    restarting killed nodes. None: killed nodes stay dead until the load ends, then `up` heals the mesh;
    stops and partitions are lifted when the load ends."""
    target: str | None = None
    """A node (kill-node) or a zone (stop-zone, partition-zone); None: chosen when the fault is injected."""
    signal: Signal = "kill"
    """stop-zone: SIGKILL (processes gone; `up` restarts them) or SIGSTOP (hung; SIGCONT resumes them)."""

    def check(self, load_seconds: float) -> None:
        if self.fault not in FAULTS:
            raise VaultmeshError(f"unknown fault {self.fault!r}; choose one of {', '.join(FAULTS)}")
        if not 0 <= self.at < max(load_seconds, 0.001):
            raise VaultmeshError(f"the fault must be injected while the load runs (at {self.at:g} s, the load "
                                 f"lasts {load_seconds:g} s)")
        if self.lift_after is not None and not 0 < self.lift_after <= 600:
            raise VaultmeshError("lift-after must be between 0 and 600 s")
        if self.signal not in ("kill", "stop"):
            raise VaultmeshError("signal must be kill or stop")

    @property
    def kills(self) -> bool:
        """The fault leaves dead processes that only a restart (`vaultmesh up`) brings back."""
        return self.fault in ("kill-leader", "kill-node", "lose-quorum") or (
            self.fault == "stop-zone" and self.signal == "kill")

    @property
    def needs_netns(self) -> bool:
        return self.fault in NETNS_FAULTS

    @property
    def heal_how(self) -> str:
        return "`vaultmesh up` restarts the killed nodes" if self.kills else "automatic once the fault is lifted"

    @property
    def loses_quorum(self) -> bool:
        return self.fault == "lose-quorum"

    def steps(self) -> list[tuple[float, str]]:
        """(seconds after the load starts, "inject" | "lift"); a lift not listed happens after the load."""
        out = [(self.at, "inject")]
        if self.lift_after is not None:
            out.append((self.at + self.lift_after, "lift"))
        return out


@dataclass(frozen=True)
class Attempt:
    """One probe write: sequence number, start and end (seconds since t0), acknowledged or not."""

    seq: int
    t_start: float
    t_end: float
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class Recovery:
    recovery_s: float | None
    """From injection until the first acknowledged write that started after it (None: writes never came back)."""
    outage_s: float
    """The longest time without an acknowledged write, from the last ack before injection."""
    failed: int
    """Probe writes that failed (timed out or refused) after injection."""
    acked: int
    attempts: int


def recovery(attempts: Sequence[Attempt], t_fault: float) -> Recovery:
    """Figures for the write path around a fault injected at ``t_fault``."""
    after = [a for a in attempts if a.t_start >= t_fault]
    first_ok = next((a for a in sorted(after, key=lambda a: a.t_start) if a.ok), None)
    acks = sorted(a.t_end for a in attempts if a.ok)
    before = [t for t in acks if t <= t_fault]
    last = before[-1] if before else t_fault
    outage = 0.0
    for t in (t for t in acks if t > last):
        outage = max(outage, t - last)
        last = t
    if first_ok is None and attempts:
        outage = max(outage, max(a.t_end for a in attempts) - last)
    return Recovery(
        recovery_s=None if first_ok is None else first_ok.t_end - t_fault,
        outage_s=outage,
        failed=sum(1 for a in after if not a.ok),
        acked=sum(1 for a in attempts if a.ok),
        attempts=len(attempts),
    )


def lost_writes(acked: Sequence[int], found: Sequence[int]) -> list[int]:
    """Acknowledged writes that are not readable afterwards (must be empty)."""
    have = set(found)
    return sorted(s for s in acked if s not in have)


QUORUM_RECOVERY = ("quorum is lost: no node can commit a write until a majority is back. Recovery: "
                   "`vaultmesh up` restarts the stopped nodes (their data is intact, they rejoin and unseal "
                   "themselves); if a node's data is gone for good, restore the latest `bao operator raft "
                   "snapshot` into a fresh mesh")
