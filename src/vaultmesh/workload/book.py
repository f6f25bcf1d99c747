"""The lease book: what a workload holds, and what to do about it next. Sans-IO (h11 style).

The book never talks to OpenBao and never reads a clock. Its driver tells it what happened
(``logged_in``, ``token_renewed``, ``lease_granted``, ``lease_renewed``, ``renew_failed``, ``replace_failed``,
``close``) and asks it what to do (``tick(now)``), which answers a list of actions ending in ``SleepUntil``::

    RenewToken(accessor)     RenewLease(key, lease_id)      renew before the TTL runs out
    Relogin()                Refetch(key)                   replace: the token or lease cannot be renewed further
    RevokeLease(lease_id)    RevokeToken(accessor)          a replaced credential after its grace, or on close
    Poll(key)                read a watched secret without a lease (KV) again: has its version moved?
    Notify(keys)             the values of these sources changed: tell the child
    SleepUntil(at)           ask again at ``at`` (None: nothing will ever be due); after work it is ``now``:
                             report the outcomes, then tick again

Every credential (the token, each lease) is in one *step*; the table ``NEXT_STEP`` says where an outcome
leads::

    step      outcome              next step   when
    renew     renewed              renew       at 2/3 of the new TTL (minus up to 10 % jitter)
    renew     renewed, capped      replace     at 2/3 of what is left: the max TTL is near
    renew     not renewable        replace     at 2/3 of the TTL
    renew     failed (temporary)   renew       backoff; if the credential has expired: replace now
    renew     failed (permanent)   replace     now (revoked, max TTL reached, lease gone)
    replace   replaced             renew       the new credential starts its own cycle
    replace   failed               replace     backoff

The token is renewed at least every ``heartbeat`` seconds whatever its TTL: the mesh's reaper takes a
watched token that has not been renewed for a while as abandoned (its run was SIGKILLed, or it is a login whose
answer was lost in a leader election, known to nobody) and revokes it with its leases.

Secrets without a lease (KV) are *watched*: polled every ``poll_every`` seconds, and a new version read is
reported by the driver with ``value_changed`` (then a ``Notify``); an unchanged version changes nothing.

"Replace" means logging in again for the token and reading the secret again for a lease. A token's leases
die with it, so a new login replaces every lease the old token owns; the old token and its leases are
revoked ``retire_grace`` seconds after the last of them was replaced, so the child has time to switch.
Leases that are not ours to re-read (unwrapped ones) are renewed while possible and otherwise left to run
out. On ``close`` every lease is revoked, then every token, the current one last.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


@dataclass(frozen=True)
class Timing:
    """When to renew and how to retry. Every default has its reason."""

    renew_fraction: float = 2 / 3
    """Renew when this fraction of the TTL has passed: a third of the TTL is left to retry in (a leader
    election takes ~2 s, a failed node costs one client timeout)."""
    jitter: float = 0.1
    """Renew up to this fraction of the TTL *earlier*, at random, so a fleet that started together does not
    renew together; never later than ``renew_fraction``."""
    retry_min: float = 0.25
    """First wait after a failed renewal or re-fetch (the client has already failed over across nodes)."""
    retry_max: float = 30.0
    """Longest wait between retries: a mesh that is down sees at most one try per credential per 30 s."""
    retire_grace: float = 2.0
    """Seconds a replaced credential stays valid after its successor was delivered, so the child can
    switch before the old database role is dropped."""
    heartbeat: float | None = 5.0
    """Renew the token at least this often (None: only at ``renew_fraction``). The reaper revokes a watched
    token not renewed for ``reaper.stale_after`` (15 s by default: three heartbeats, so two can be lost to an
    election); one renewal costs one request and one Raft write."""
    poll_every: float = 2.0
    """Seconds between two reads of a watched KV secret: a change reaches the child within ~2 s (plus
    jitter), under the 5 s the workload contract promises; 0.5 req/s per watched secret."""


class Stage(StrEnum):
    RENEW = "renew"
    REPLACE = "replace"


Outcome = Literal["renewed", "capped", "not_renewable", "failed_temporary", "failed_permanent", "replaced",
                  "replace_failed"]

NEXT_STEP: dict[tuple[Stage, Outcome], Stage] = {
    (Stage.RENEW, "renewed"): Stage.RENEW,
    (Stage.RENEW, "capped"): Stage.REPLACE,
    (Stage.RENEW, "not_renewable"): Stage.REPLACE,
    (Stage.RENEW, "failed_temporary"): Stage.RENEW,
    (Stage.RENEW, "failed_permanent"): Stage.REPLACE,
    (Stage.REPLACE, "replaced"): Stage.RENEW,
    (Stage.REPLACE, "replace_failed"): Stage.REPLACE,
}
"""The transition table (see the module docstring); anything not in it is a bug in the driver."""


# -- actions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OnToken:
    """Work on one token, named by its accessor (never by the token itself)."""

    accessor: str


class RenewToken(_OnToken):
    """Renew the token before its TTL runs out."""


@dataclass(frozen=True)
class Relogin:
    """Log in again for a new token: this one cannot be renewed further."""


class RevokeToken(_OnToken):
    """Revoke a replaced token after its grace, or every token on close."""


@dataclass(frozen=True)
class _OnSource:
    """Work on one source of the delivery, by its key."""

    key: str


@dataclass(frozen=True)
class RenewLease(_OnSource):
    """Renew the source's lease before its TTL runs out."""

    lease_id: str


class Refetch(_OnSource):
    """Read the source again for a new lease: its lease cannot be renewed further."""


class Poll(_OnSource):
    """Read a watched secret without a lease (KV) again: has its version moved?"""


@dataclass(frozen=True)
class RevokeLease:
    """Revoke a replaced lease after its grace, or on close."""

    lease_id: str


@dataclass(frozen=True)
class Notify:
    """The values of these sources changed: tell the child."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class SleepUntil:
    """Ask again at ``at`` (None: nothing will ever be due)."""

    at: float | None


Work = RenewToken | Relogin | RenewLease | Refetch | RevokeLease | RevokeToken | Poll | Notify | SleepUntil


# -- state --------------------------------------------------------------------------------------------------


@dataclass
class Held:
    """One credential: the token (``key`` = ``"token"``) or a lease."""

    key: str
    ident: str
    """Accessor of a token; lease id of a lease."""
    granted_at: float
    ttl: float
    renewable: bool
    owner: str | None = None
    """Accessor of the token the lease dies with (None: not ours, e.g. unwrapped)."""
    replaceable: bool = True
    step: Stage = Stage.RENEW
    due: float | None = None
    busy: bool = False
    failures: int = 0
    full_ttl: float = 0.0
    """The TTL at grant: a renewal that answers less has hit the max TTL."""

    @property
    def expires_at(self) -> float:
        return self.granted_at + self.ttl


@dataclass
class Retiring:
    """A replaced credential awaiting revocation: ``at`` None while leases it owns are still current."""

    kind: Literal["token", "lease"]
    ident: str
    expires_at: float
    at: float | None = None


TOKEN = "token"


@dataclass
class LeaseBook:
    timing: Timing = field(default_factory=Timing)
    rng: Callable[[], float] = random.random
    token: Held | None = None
    leases: dict[str, Held] = field(default_factory=dict)
    retiring: list[Retiring] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    watched: dict[str, float | None] = field(default_factory=dict)
    """Watched source key -> when to poll it next (None: a poll is in flight)."""
    closing: bool = False
    closed: bool = False

    # -- events -----------------------------------------------------------------------------------------

    def logged_in(self, now: float, accessor: str, ttl: float, renewable: bool) -> None:
        """A login succeeded. A previous token retires; every lease it owns is due to be replaced now."""
        old = self.token
        self.token = self._new(TOKEN, accessor, now, ttl, renewable)
        if old is None:
            return
        self.retiring.append(Retiring("token", old.ident, old.expires_at))
        for lease in self.leases.values():
            if lease.owner == old.ident and lease.replaceable:
                lease.step, lease.due, lease.failures = Stage.REPLACE, now, 0

    def token_renewed(self, now: float, ttl: float, renewable: bool = True) -> None:
        self._renewed(self.token, now, ttl, renewable)

    def lease_granted(self, key: str, now: float, lease_id: str | None, ttl: float, renewable: bool, *,
                      owner: str | None = None, replaceable: bool = True) -> None:
        """A secret was read (first time or again). A replaced lease retires; the change is noted."""
        old = self.leases.pop(key, None)
        if old is not None:
            self.changed.add(key)
            expires = min(old.expires_at, self._owner_expiry(old.owner))  # a lease dies with its token
            self.retiring.append(Retiring("lease", old.ident, expires, at=now + self.timing.retire_grace))
        if lease_id:
            self.leases[key] = self._new(key, lease_id, now, ttl, renewable, owner=owner, replaceable=replaceable)

    def value_changed(self, key: str) -> None:
        """A secret without a lease was read again and differs (it is reported with the next ``Notify``)."""
        self.changed.add(key)

    def watch(self, key: str, now: float) -> None:
        """Poll ``key`` (a secret without a lease) every ``poll_every`` seconds from now on."""
        self.watched[key] = now + self._poll_interval()

    def polled(self, key: str, now: float) -> None:
        """A poll of ``key`` came back (changed or not, or failed: the next poll is the retry)."""
        if key in self.watched:
            self.watched[key] = now + self._poll_interval()

    def lease_renewed(self, key: str, now: float, ttl: float, renewable: bool = True) -> None:
        self._renewed(self.leases.get(key), now, ttl, renewable)

    def renew_failed(self, key: str, now: float, *, permanent: bool) -> None:
        """Renewing the token (``key="token"``) or a lease failed; permanent means it cannot be renewed."""
        held = self._get(key)
        if held is None or self._stale(held, Stage.RENEW):
            return
        if permanent or now >= held.expires_at:
            self._move(held, "failed_permanent", now)
        else:
            held.failures += 1
            self._move(held, "failed_temporary", min(now + self._backoff(held.failures),
                                                     now + (held.expires_at - now) / 2))

    def replace_failed(self, key: str, now: float) -> None:
        """Logging in again (``key="token"``) or re-reading a lease failed; try again after a backoff."""
        held = self._get(key)
        if held is None or self._stale(held, Stage.REPLACE):
            return
        held.failures += 1
        self._move(held, "replace_failed", now + self._backoff(held.failures))

    def close(self) -> None:
        """From now on ``tick`` answers the revocations, then nothing."""
        self.closing = True

    # -- decisions ----------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Work]:
        """What to do now, ending with when to ask again. Actions answered here are marked in flight."""
        if self.closed:
            return [SleepUntil(None)]
        if self.closing:
            return self._close_actions()
        actions: list[Work] = []
        token = self.token
        if token is not None and not token.busy and token.due is not None and token.due <= now:
            token.busy = True
            actions.append(RenewToken(token.ident) if token.step is Stage.RENEW else Relogin())
        relogging = token.ident if token is not None and token.busy and token.step is Stage.REPLACE else None
        for lease in self.leases.values():
            if lease.busy or lease.due is None or lease.due > now:
                continue
            if relogging is not None and lease.owner == relogging:
                continue  # the new login makes it due for replacement anyway
            lease.busy = True
            actions.append(RenewLease(lease.key, lease.ident) if lease.step is Stage.RENEW else Refetch(lease.key))
        for key, due in self.watched.items():
            if due is not None and due <= now:
                self.watched[key] = None
                actions.append(Poll(key))
        actions.extend(self._retire_actions(now))
        if self.changed and not any(a for a in actions if isinstance(a, Refetch | Relogin)) and \
                not any(h.step is Stage.REPLACE and h.due is not None and h.due <= now for h in self._all()):
            actions.append(Notify(tuple(sorted(self.changed))))
            self.changed.clear()
        # Work changes the schedule (answers come back through the events): after it, ask again right away.
        actions.append(SleepUntil(now if actions else self._next_due()))
        return actions

    @property
    def lease_ids(self) -> list[str]:
        return [h.ident for h in self.leases.values()]

    # -- internals ----------------------------------------------------------------------------------------

    def _all(self) -> list[Held]:
        return ([self.token] if self.token else []) + list(self.leases.values())

    def _owner_expiry(self, owner: str | None) -> float:
        if self.token is not None and owner == self.token.ident:
            return self.token.expires_at
        return min((r.expires_at for r in self.retiring if r.kind == "token" and r.ident == owner),
                   default=float("inf"))

    def _get(self, key: str) -> Held | None:
        return self.token if key == TOKEN else self.leases.get(key)

    def _new(self, key: str, ident: str, now: float, ttl: float, renewable: bool, *, owner: str | None = None,
             replaceable: bool = True) -> Held:
        held = Held(key, ident, now, ttl, renewable, owner=owner, replaceable=replaceable, full_ttl=ttl)
        self._schedule(held, Stage.RENEW if renewable else Stage.REPLACE, now)
        return held

    def _renewed(self, held: Held | None, now: float, ttl: float, renewable: bool) -> None:
        if held is None or self._stale(held, Stage.RENEW):
            return
        held.failures = 0
        if ttl <= 0 < held.full_ttl:  # renewed to nothing: it is gone, replace it
            self._move(held, "failed_permanent", now)
            return
        capped = ttl < held.full_ttl
        held.granted_at, held.ttl = now, ttl
        outcome: Outcome = "renewed" if renewable and not capped else ("capped" if capped else "not_renewable")
        self._move(held, outcome, None)

    @staticmethod
    def _stale(held: Held, expected: Stage) -> bool:
        """Mark ``held`` no longer in flight; True when the answer is for a step it has left meanwhile (a
        lease renewed while a new login made it due for replacement): such an answer changes nothing."""
        held.busy = False
        return held.step is not expected

    def _move(self, held: Held, outcome: Outcome, at: float | None) -> None:
        step = NEXT_STEP[(held.step, outcome)]
        if at is None:
            self._schedule(held, step, held.granted_at)
        else:
            held.step, held.due = step, at
        if held.step is Stage.REPLACE and not held.replaceable:
            held.due = None  # an unwrapped lease cannot be read again: it runs out

    def _schedule(self, held: Held, step: Stage, start: float) -> None:
        held.step = step
        if held.ttl <= 0:
            held.due = None  # no expiry: nothing to renew
            return
        t = self.timing
        fraction = max(0.05, t.renew_fraction - t.jitter * self.rng())
        held.due = start + held.ttl * fraction
        if held.key == TOKEN and step is Stage.RENEW and t.heartbeat is not None:
            held.due = min(held.due, start + t.heartbeat)
        if not held.replaceable and step is Stage.REPLACE:
            held.due = None

    def _backoff(self, failures: int) -> float:
        t = self.timing
        cap = min(t.retry_max, t.retry_min * 2 ** min(failures - 1, 16))
        return cap * (0.5 + 0.5 * self.rng())

    def _poll_interval(self) -> float:
        return self.timing.poll_every * (1 - self.timing.jitter * self.rng())

    def _retire_actions(self, now: float) -> list[Work]:
        actions: list[Work] = []
        current_owners = {h.owner for h in self.leases.values()}
        for r in self.retiring:
            if r.kind == "token" and r.at is None and r.ident not in current_owners:
                r.at = now + self.timing.retire_grace
        keep: list[Retiring] = []
        for r in self.retiring:
            if now >= r.expires_at:
                continue  # OpenBao has already revoked it
            if r.at is not None and now >= r.at:
                actions.append(RevokeLease(r.ident) if r.kind == "lease" else RevokeToken(r.ident))
            else:
                keep.append(r)
        # leases before tokens: revoking a token revokes its leases only asynchronously
        actions.sort(key=lambda a: isinstance(a, RevokeToken))
        self.retiring = keep
        return actions

    def _next_due(self) -> float | None:
        times = [h.due for h in self._all() if h.due is not None and not h.busy]
        times += [min(r.at, r.expires_at) if r.at is not None else r.expires_at for r in self.retiring]
        times += [due for due in self.watched.values() if due is not None]
        return min(times) if times else None

    def _close_actions(self) -> list[Work]:
        actions: list[Work] = [RevokeLease(h.ident) for h in self.leases.values()]
        actions += [RevokeLease(r.ident) for r in self.retiring if r.kind == "lease"]
        actions += [RevokeToken(r.ident) for r in self.retiring if r.kind == "token"]
        if self.token is not None:
            actions.append(RevokeToken(self.token.ident))
        self.leases.clear()
        self.retiring.clear()
        self.watched.clear()
        self.token = None
        self.closed = True
        actions.append(SleepUntil(None))
        return actions
