"""The pure core of ``certs rotate-ca``: a staged CA rotation as a plan of steps, each with the invariant that
must hold after it (the shape of ``change.plan``). Facts in, plan out: no files, sockets or clocks.

The CA file (``pki/ca.pem``) is what every client and node reads to trust the mesh (the nodes' ``retry_join``
``leader_ca_cert_file``, the transit seal's ``tls_ca_cert``, HAProxy's ``ca-file`` for its checks, ``vaultmesh
env``'s ``BAO_CACERT``, the keeper's, the workload SDK's and ``run``'s clients); ``pki/ca-key.pem`` signs, and it is
the key of the file's *first* certificate, always (every issuer reads the pair so). The stages:

    make-ca   a new CA (its key 0600) beside the old one, and ``pki/rotation.json`` naming both (by serial)
    trust     the CA file holds old + new (the old one first: it still signs); the entry reloads its checks' CA
    restart   transit seal only, one step per node (standbys first, the leader last): the node is restarted, so
              its seal client reads the file (OpenBao reads ``tls_ca_cert`` at start only), and settles
    sign      the new CA signs: its key becomes ``ca-key.pem`` and it goes first in the file (new + old)
    reissue   one step per listener: a leaf from the new CA, loaded with no restart, read back
    drop      the CA file holds the new CA alone; the entry reloads
    finish    the record and the old CA are gone

Every invariant is "this stage or a later one is reached", read off the files and the listeners, so ``resume``
(the first step whose invariant does not hold) picks an interrupted run up where the mesh really is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["make-ca", "trust", "restart", "sign", "reissue", "drop", "finish"]
Check = Literal["ca-made", "trusted", "reads-new", "signs-new", "issued-by-new", "dropped", "finished"]

STAGES: tuple[Action, ...] = ("make-ca", "trust", "restart", "sign", "reissue", "drop", "finish")
"""The stages in order (``--stop-after`` names one)."""

_CHECK: dict[Action, Check] = {"make-ca": "ca-made", "trust": "trusted", "restart": "reads-new",
                               "sign": "signs-new", "reissue": "issued-by-new", "drop": "dropped",
                               "finish": "finished"}


@dataclass(frozen=True)
class Listener:
    """One leaf of the mesh: whether its process runs, and the serial of the CA that issued what it serves (its
    file's when it does not run); None: neither CA of the rotation (or it could not be read)."""

    name: str
    running: bool
    issued_by: str | None


@dataclass(frozen=True)
class Reader:
    """A node whose seal client reads the CA file at start only (transit seal): whether the process running
    now started after the file first held the new CA, and whether it leads."""

    name: str
    read_new: bool
    leader: bool = False


@dataclass(frozen=True)
class CAView:
    """The mesh's trust, frozen at one moment."""

    bundle: tuple[str, ...]
    """The serials of the CA file's certificates, in order."""
    signer: str | None
    """The serial of the CA file's certificate ``ca-key.pem`` is the key of (None: none of them)."""
    listeners: tuple[Listener, ...] = ()
    old: str | None = None
    """The CA being replaced, from ``pki/rotation.json`` (None: no rotation under way)."""
    new: str | None = None
    """The CA replacing it, from the same record."""
    new_ready: bool = False
    """The new CA's certificate and key are on disk beside the old one (before ``sign`` moves them in)."""
    entry_current: bool = True
    """No entry runs, or it was started after the CA file was last written (so its checks trust that file)."""
    readers: tuple[Reader, ...] = ()
    """The nodes that must be restarted to trust the new CA (transit seal: all of them; else none)."""
    stale_mounts: tuple[str, ...] = ()
    """Auth mounts (jwt/oidc) whose configured CA PEM lacks the new CA: the issuer's new leaf would not verify
    for them (``vaultmesh apply`` renders ``{{vaultmesh.ca_pem}}`` from the CA file again)."""

    @property
    def rotating(self) -> bool:
        return self.old is not None and self.new is not None

    def listener(self, name: str) -> Listener | None:
        return next((x for x in self.listeners if x.name == name), None)

    def reader(self, name: str) -> Reader | None:
        return next((x for x in self.readers if x.name == name), None)


@dataclass(frozen=True)
class CAStep:
    action: Action
    check: Check
    target: str = ""
    """The listener of a ``reissue`` step."""

    def __str__(self) -> str:
        return f"{self.action} {self.target}".strip()


@dataclass(frozen=True)
class CAPlan:
    steps: tuple[CAStep, ...]

    @property
    def done(self) -> bool:
        return not self.steps

    def lines(self) -> list[str]:
        return [f"{i + 1}. {s} (then: {s.check})" for i, s in enumerate(self.steps)]


def plan_rotation(view: CAView) -> CAPlan:
    """Every stage of a rotation: a ``restart`` step per reader (by name, the leader last, so leadership moves
    once), a ``reissue`` step per listener (as ``view`` lists them)."""
    steps = [CAStep(a, _CHECK[a]) for a in ("make-ca", "trust")]
    readers = sorted(view.readers, key=lambda x: (x.leader, x.name))
    steps += [CAStep("restart", "reads-new", x.name) for x in readers]
    steps.append(CAStep("sign", "signs-new"))
    steps += [CAStep("reissue", "issued-by-new", x.name) for x in view.listeners]
    steps += [CAStep(a, _CHECK[a]) for a in ("drop", "finish")]
    return CAPlan(tuple(steps))


def holds(step: CAStep, view: CAView) -> str | None:
    """None when the invariant after ``step`` holds in ``view`` (this stage or a later one is reached), else what
    is missing (one phrase)."""
    new, old = view.new, view.old
    match step.check:
        case "ca-made":
            if not view.rotating:
                return "no rotation recorded"
            return None if view.new_ready or view.signer == new else "the new CA's files are missing"
        case "trusted":
            if new not in view.bundle:
                return "the CA file does not hold the new CA"
            # past ``sign`` the file was written again with the same CAs: the entry reloaded for ``trust``
            return None if view.entry_current or view.signer == new else "the entry has not reloaded the CA file"
        case "reads-new":
            r = view.reader(step.target)
            if r is None:
                return "not found"
            return None if r.read_new else "runs since before the CA file held the new CA"
        case "signs-new":
            if view.signer != new:
                return "the old CA still signs"
            return None if view.bundle[:1] == (new,) else "the new CA is not first in the CA file"
        case "issued-by-new":
            x = view.listener(step.target)
            if x is None:
                return "not found"
            return None if x.issued_by == new else (
                "serves a leaf of the old CA" if x.issued_by == old else "serves a leaf of neither CA")
        case "dropped":
            if view.bundle != (new,):
                return "the CA file still holds the old CA" if old in view.bundle else "the CA file is not the new CA"
            return None if view.entry_current else "the entry has not reloaded the CA file"
        case "finished":
            return None if not view.rotating else "the rotation is still recorded"
    raise AssertionError(step.check)


def resume(plan: CAPlan, view: CAView) -> int:
    """The index of the step a run picks up at: the first whose invariant does not hold (``len``: none)."""
    for i, step in enumerate(plan.steps):
        if holds(step, view) is not None:
            return i
    return len(plan.steps)


def stop_index(plan: CAPlan, stop_after: Action | None) -> int:
    """How many steps a run with ``--stop-after`` does at most: through the last step of that stage."""
    if stop_after is None:
        return len(plan.steps)
    last = STAGES.index(stop_after)
    return sum(1 for s in plan.steps if STAGES.index(s.action) <= last)


def refusal(view: CAView) -> str | None:
    """Why a rotation must not start or go on, in one line (None: it may). The mesh's own health (a node down,
    no failure tolerance, autopilot unhealthy) is ``change.plan.refusal``'s."""
    if not view.bundle:
        return "the CA file pki/ca.pem holds no certificate; nothing was changed (restore pki/ from a backup)"
    if not view.rotating:
        if len(view.bundle) != 1:
            return (f"the CA file holds {len(view.bundle)} certificates but no rotation is recorded in "
                    "pki/rotation.json; nothing was changed (put the mesh CA alone in pki/ca.pem)")
        if view.signer != view.bundle[0]:
            return "pki/ca-key.pem is not the key of the CA in pki/ca.pem; nothing was changed"
        return None
    known = {view.old, view.new}
    if view.signer not in known:
        return "pki/ca-key.pem is the key of neither CA of the recorded rotation; nothing more was changed"
    if view.signer != view.new and not view.new_ready:
        return ("the new CA recorded in pki/rotation.json has no key on disk (pki/ca-next-key.pem); delete "
                "pki/rotation.json and run `vaultmesh certs rotate-ca` again to start over")
    strangers = [s for s in view.bundle if s not in known]
    if strangers:
        return f"the CA file holds a CA of neither side of the rotation ({strangers[0][:12]}); nothing more was changed"
    return None


def sign_refusal(view: CAView) -> str | None:
    """Why the new CA must not sign yet: an auth mount that would no longer verify the identity issuer."""
    if view.stale_mounts:
        return (f"auth mount {', '.join(view.stale_mounts)} trusts only the old CA (its CA PEM): run `vaultmesh "
                "apply -f <mesh file>` ({{vaultmesh.ca_pem}} is now both CAs), then `vaultmesh certs rotate-ca` "
                "again; stopped before the new CA signs anything")
    return None
