"""The lease book: a sans-IO state machine, driven here with time passed in and a fixed random source."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from vaultmesh.workload.book import (
    NEXT_STEP,
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
    Stage,
    Timing,
)

DB = "db:database/creds/jobs-ro"


def book(rng: float = 0.0, **timing: float | None) -> LeaseBook:
    """A book without the heartbeat unless asked: these tests are about TTL fractions."""
    return LeaseBook(Timing(**{"heartbeat": None, **timing}), rng=lambda: rng)  # type: ignore[arg-type]


def work(actions: list) -> list:
    return [a for a in actions if not isinstance(a, SleepUntil)]


def sleep_of(actions: list) -> float | None:
    assert isinstance(actions[-1], SleepUntil)
    return actions[-1].at


def logged_in_book(rng: float = 0.0, ttl: float = 30.0, **timing: float | None) -> LeaseBook:
    b = book(rng, **timing)
    b.logged_in(0.0, "acc-1", ttl, True)
    return b


# -- scheduling ----------------------------------------------------------------------------------------------


def test_token_renewal_is_due_at_two_thirds_of_its_ttl_without_jitter() -> None:
    b = logged_in_book(rng=0.0, ttl=30.0)
    assert b.tick(0.0) == [SleepUntil(20.0)]
    assert b.tick(19.99) == [SleepUntil(20.0)]
    assert work(b.tick(20.0)) == [RenewToken("acc-1")]


@pytest.mark.parametrize("r", [0.0, 0.25, 0.5, 0.999])
def test_jitter_only_ever_renews_earlier_by_at_most_a_tenth_of_the_ttl(r: float) -> None:
    b = logged_in_book(rng=r, ttl=300.0)
    due = sleep_of(b.tick(0.0))
    assert due is not None
    assert 300 * (2 / 3 - 0.1) - 1e-9 <= due <= 300 * 2 / 3
    assert due == pytest.approx(300 * (2 / 3 - 0.1 * r))


def test_an_action_in_flight_is_not_asked_for_twice() -> None:
    b = logged_in_book()
    assert work(b.tick(20.0)) == [RenewToken("acc-1")]
    assert work(b.tick(21.0)) == []


def test_a_renewal_schedules_the_next_one_from_the_new_ttl() -> None:
    b = logged_in_book()
    b.tick(20.0)
    b.token_renewed(20.0, 30.0)
    assert sleep_of(b.tick(20.0)) == pytest.approx(40.0)


def test_a_capped_token_renewal_means_log_in_again_at_two_thirds_of_what_is_left() -> None:
    b = logged_in_book()
    b.tick(20.0)
    b.token_renewed(20.0, 9.0)  # the max TTL is near: less than the 30 s asked for
    assert sleep_of(b.tick(20.0)) == pytest.approx(26.0)
    assert work(b.tick(26.0)) == [Relogin()]


def test_a_token_that_is_not_renewable_is_replaced_by_a_new_login() -> None:
    b = book()
    b.logged_in(0.0, "acc-1", 30.0, False)
    assert work(b.tick(20.0)) == [Relogin()]


def test_a_lease_is_renewed_at_two_thirds_and_refetched_when_its_renewal_is_capped() -> None:
    b = logged_in_book(ttl=3600)
    b.lease_granted(DB, 0.0, "lease-1", 60.0, True, owner="acc-1")
    assert work(b.tick(40.0)) == [RenewLease(DB, "lease-1")]
    b.lease_renewed(DB, 40.0, 15.0)  # capped by the role's max_ttl
    assert work(b.tick(49.9)) == []
    assert work(b.tick(50.0)) == [Refetch(DB)]


def test_a_secret_without_a_lease_is_not_tracked() -> None:
    b = logged_in_book()
    b.lease_granted("kv:secret/app", 0.0, None, 0.0, False, owner="acc-1")
    assert b.leases == {}


def test_a_lease_without_ttl_is_never_due_but_revoked_on_close() -> None:
    b = logged_in_book()
    b.lease_granted(DB, 0.0, "lease-1", 0.0, False, owner="acc-1")
    assert sleep_of(b.tick(0.0)) == 20.0  # only the token
    b.close()
    assert RevokeLease("lease-1") in b.tick(1.0)


# -- failures ------------------------------------------------------------------------------------------------


def test_a_temporary_renewal_failure_retries_with_backoff_before_the_expiry() -> None:
    b = logged_in_book(retry_min=1.0)
    b.tick(20.0)
    b.renew_failed(TOKEN, 20.0, permanent=False)
    first = sleep_of(b.tick(20.0))
    assert first is not None and 20.5 <= first <= 21.0
    b.tick(first)
    b.renew_failed(TOKEN, first, permanent=False)
    second = sleep_of(b.tick(first))
    assert second is not None and second - first >= 1.0  # doubled
    assert second < 30.0


def test_retries_close_in_on_the_expiry_instead_of_sleeping_past_it() -> None:
    b = logged_in_book(retry_min=20.0)
    b.tick(20.0)
    b.renew_failed(TOKEN, 20.0, permanent=False)
    assert sleep_of(b.tick(20.0)) == pytest.approx(25.0)  # half of the 10 s left, not 10-20 s


def test_a_renewal_failing_after_the_expiry_means_log_in_again() -> None:
    b = logged_in_book()
    b.tick(29.0)
    b.renew_failed(TOKEN, 30.5, permanent=False)
    assert work(b.tick(30.5)) == [Relogin()]


def test_a_permanent_lease_renewal_failure_refetches_now_and_then_tells_the_child() -> None:
    b = logged_in_book(ttl=3600)
    b.lease_granted(DB, 0.0, "lease-1", 60.0, True, owner="acc-1")
    b.tick(40.0)
    b.renew_failed(DB, 40.0, permanent=True)  # e.g. "lease not found"
    assert work(b.tick(40.0)) == [Refetch(DB)]
    b.lease_granted(DB, 40.1, "lease-2", 60.0, True, owner="acc-1")
    assert work(b.tick(40.1)) == [Notify((DB,))]
    assert work(b.tick(40.2)) == []


def test_replaced_lease_is_revoked_after_the_grace_period() -> None:
    b = logged_in_book(ttl=3600, retire_grace=2.0)
    b.lease_granted(DB, 0.0, "lease-1", 60.0, True, owner="acc-1")
    b.tick(40.0)
    b.renew_failed(DB, 40.0, permanent=True)
    b.tick(40.0)
    b.lease_granted(DB, 40.0, "lease-2", 60.0, True, owner="acc-1")
    assert RevokeLease("lease-1") not in b.tick(41.0)
    assert RevokeLease("lease-1") in b.tick(42.0)
    assert RevokeLease("lease-1") not in b.tick(43.0)


def test_a_failed_refetch_backs_off_up_to_the_cap() -> None:
    b = logged_in_book(ttl=3600, rng=1.0, retry_min=1.0, retry_max=8.0, jitter=0.0)
    b.lease_granted(DB, 0.0, "lease-1", 60.0, False, owner="acc-1")
    now, waits = 40.0, []
    for _ in range(6):
        assert work(b.tick(now)) == [Refetch(DB)]
        b.replace_failed(DB, now)
        nxt = sleep_of(b.tick(now))
        assert nxt is not None
        waits.append(nxt - now)
        now = nxt
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_failing_refetch_does_not_hold_back_the_news_of_another_change() -> None:
    b = logged_in_book(ttl=3600, retry_min=5.0)
    other = "db:database/creds/other"
    b.lease_granted(DB, 0.0, "lease-1", 60.0, False, owner="acc-1")
    b.lease_granted(other, 0.0, "lease-9", 60.0, False, owner="acc-1")
    assert set(work(b.tick(40.0))) == {Refetch(DB), Refetch(other)}
    b.lease_granted(DB, 40.0, "lease-2", 60.0, False, owner="acc-1")
    b.replace_failed(other, 40.0)
    assert Notify((DB,)) in b.tick(40.0)


def test_an_answer_for_a_step_the_credential_has_left_changes_nothing() -> None:
    b = logged_in_book(ttl=30.0)
    b.lease_granted(DB, 0.0, "lease-1", 30.0, True, owner="acc-1")
    assert set(work(b.tick(20.0))) == {RenewToken("acc-1"), RenewLease(DB, "lease-1")}
    b.token_renewed(20.0, 1.0)  # capped
    b.tick(20.7)  # relogin
    b.logged_in(20.7, "acc-2", 30.0, True)  # the lease is now due for replacement
    b.lease_renewed(DB, 20.8, 10.0)  # the renewal answer arrives late: ignored
    assert work(b.tick(20.8)) == [Refetch(DB)]


def test_table_has_an_entry_for_every_outcome_of_every_step() -> None:
    assert {s for s, _ in NEXT_STEP} == set(Stage)
    assert NEXT_STEP[(Stage.RENEW, "failed_permanent")] is Stage.REPLACE
    assert NEXT_STEP[(Stage.REPLACE, "replaced")] is Stage.RENEW


# -- re-login ------------------------------------------------------------------------------------------------


def test_a_new_login_replaces_every_lease_of_the_old_token_then_retires_it() -> None:
    b = logged_in_book(ttl=6.0, retire_grace=0.3)
    b.lease_granted(DB, 0.0, "lease-1", 60.0, True, owner="acc-1")
    b.lease_granted("kv:secret/app", 0.0, None, 0, False, owner="acc-1")
    b.tick(4.0)
    b.token_renewed(4.0, 2.0)  # capped
    assert work(b.tick(5.4)) == [Relogin()]
    b.logged_in(5.4, "acc-2", 6.0, True)
    assert work(b.tick(5.4)) == [Refetch(DB)]
    b.lease_granted(DB, 5.45, "lease-2", 60.0, True, owner="acc-2")
    assert work(b.tick(5.45)) == [Notify((DB,))]
    # the old lease and then the old token, a grace period after the last replacement, leases first
    assert work(b.tick(5.7)) == []
    assert work(b.tick(5.75)) == [RevokeLease("lease-1"), RevokeToken("acc-1")]


def test_what_expired_before_its_grace_ended_is_left_to_openbao() -> None:
    b = logged_in_book(ttl=6.0, retire_grace=1.0)
    b.lease_granted(DB, 0.0, "lease-1", 60.0, True, owner="acc-1")
    b.tick(4.0)
    b.token_renewed(4.0, 2.0)
    b.tick(5.4)
    b.logged_in(5.4, "acc-2", 6.0, True)
    b.tick(5.4)
    b.lease_granted(DB, 5.45, "lease-2", 60.0, True, owner="acc-2")
    b.tick(5.45)
    assert work(b.tick(6.45)) == []  # the old token expired at 6.0 and took lease-1 with it
    assert b.retiring == []


def test_the_old_token_is_revoked_only_after_its_leases_were_replaced() -> None:
    b = logged_in_book(ttl=600.0, retire_grace=1.0, retry_min=5.0)
    b.lease_granted(DB, 0.0, "lease-1", 900.0, True, owner="acc-1")
    b.logged_in(100.0, "acc-2", 600.0, True)  # e.g. the token was revoked under us
    assert work(b.tick(100.0)) == [Refetch(DB)]
    b.replace_failed(DB, 100.0)
    assert work(b.tick(102.0)) == []  # no RevokeToken("acc-1"): its lease still serves the child
    assert work(b.tick(102.5)) == [Refetch(DB)]  # backoff 5 s * (0.5 + 0.5 * rng)
    b.lease_granted(DB, 102.5, "lease-2", 900.0, True, owner="acc-2")
    b.tick(102.5)
    assert work(b.tick(103.4)) == []
    assert work(b.tick(103.5)) == [RevokeLease("lease-1"), RevokeToken("acc-1")]


def test_an_unwrapped_lease_is_renewed_but_never_read_again() -> None:
    b = logged_in_book(ttl=3600)
    b.lease_granted("unwrap:env:W", 0.0, "lease-w", 60.0, True, owner=None, replaceable=False)
    assert work(b.tick(40.0)) == [RenewLease("unwrap:env:W", "lease-w")]
    b.lease_renewed("unwrap:env:W", 40.0, 10.0)  # capped
    assert work(b.tick(100.0)) == []  # left to run out
    b.logged_in(200.0, "acc-2", 3600, True)
    assert not any(isinstance(a, Refetch) for a in b.tick(200.0))


# -- close ---------------------------------------------------------------------------------------------------


def test_close_revokes_every_lease_then_every_token_the_current_one_last() -> None:
    b = logged_in_book(ttl=600.0, retire_grace=100.0)
    b.lease_granted(DB, 0.0, "lease-1", 900.0, True, owner="acc-1")
    b.lease_granted("kv:x", 0.0, "lease-k", 900.0, True, owner="acc-1")
    b.logged_in(10.0, "acc-2", 600.0, True)
    b.tick(10.0)
    b.lease_granted(DB, 10.0, "lease-2", 900.0, True, owner="acc-2")
    b.close()
    actions = b.tick(11.0)
    assert actions == [RevokeLease("lease-k"), RevokeLease("lease-2"), RevokeLease("lease-1"),
                       RevokeToken("acc-1"), RevokeToken("acc-2"), SleepUntil(None)]
    assert b.tick(12.0) == [SleepUntil(None)]


def test_close_before_any_login_has_nothing_to_revoke() -> None:
    b = book()
    b.close()
    assert b.tick(0.0) == [SleepUntil(None)]


# -- a simulated server: nothing expires, nothing piles up -------------------------------------------------


@dataclass
class ModelServer:
    """Tokens and leases with TTL and max TTL, as OpenBao treats them (integer TTLs, leases die with tokens)."""

    token_ttl: float
    token_max: float
    lease_ttl: float
    lease_max: float
    now: float = 0.0
    tokens: dict[str, tuple[float, float]] = field(default_factory=dict)  # accessor -> (created, expires)
    leases: dict[str, tuple[str, float, float]] = field(default_factory=dict)  # id -> (owner, created, expires)
    ids: itertools.count = field(default_factory=itertools.count)
    fail: bool = False

    def alive_token(self, acc: str) -> bool:
        return acc in self.tokens and self.tokens[acc][1] > self.now

    def alive_lease(self, lid: str) -> bool:
        return lid in self.leases and self.leases[lid][2] > self.now and self.alive_token(self.leases[lid][0])

    def login(self) -> tuple[str, float]:
        acc = f"acc-{next(self.ids)}"
        self.tokens[acc] = (self.now, self.now + self.token_ttl)
        return acc, self.token_ttl

    def renew_token(self, acc: str) -> float:
        created, _ = self.tokens[acc]
        ttl = int(min(self.token_ttl, created + self.token_max - self.now))
        self.tokens[acc] = (created, self.now + ttl)
        return ttl

    def grant(self, owner: str) -> tuple[str, float]:
        lid = f"lease-{next(self.ids)}"
        self.leases[lid] = (owner, self.now, self.now + self.lease_ttl)
        return lid, self.lease_ttl

    def renew_lease(self, lid: str) -> float:
        owner, created, _ = self.leases[lid]
        ttl = int(min(self.lease_ttl, created + self.lease_max - self.now))
        self.leases[lid] = (owner, created, self.now + ttl)
        return ttl


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("token", "lease"), [((3, 6), (4, 8)), ((30, 300), (60, 90)), ((3, 6), (3600, 3600))])
def test_under_churn_credentials_never_lapse_and_the_book_stays_bounded(
        seed: int, token: tuple[int, int], lease: tuple[int, int]) -> None:
    rnd = random.Random(seed)
    server = ModelServer(*token, *lease)
    b = LeaseBook(Timing(retire_grace=1.0, heartbeat=None), rng=rnd.random)
    acc, ttl = server.login()
    b.logged_in(0.0, acc, ttl, True)
    lid, lttl = server.grant(acc)
    b.lease_granted(DB, 0.0, lid, lttl, True, owner=acc)
    notified = 0
    while server.now < 600:
        for action in b.tick(server.now):
            if isinstance(action, SleepUntil):
                assert action.at is not None
                server.now = max(server.now + 0.01, action.at)
                break
            server.now += rnd.uniform(0.001, 0.03)  # each request takes a little time
            if isinstance(action, RenewToken):
                b.token_renewed(server.now, server.renew_token(action.accessor))
            elif isinstance(action, Relogin):
                acc, ttl = server.login()
                b.logged_in(server.now, acc, ttl, True)
            elif isinstance(action, RenewLease):
                assert server.alive_lease(action.lease_id)
                b.lease_renewed(action.key, server.now, server.renew_lease(action.lease_id))
            elif isinstance(action, Refetch):
                assert b.token is not None
                lid, lttl = server.grant(b.token.ident)
                b.lease_granted(action.key, server.now, lid, lttl, True, owner=b.token.ident)
            elif isinstance(action, RevokeLease):
                server.leases.pop(action.lease_id, None)
            elif isinstance(action, RevokeToken):
                server.tokens.pop(action.accessor, None)
            elif isinstance(action, Notify):
                notified += 1
        # invariants after every round: the current token and lease are alive; little is kept
        assert b.token is not None and server.alive_token(b.token.ident), server.now
        assert server.alive_lease(b.leases[DB].ident), server.now
        assert len(b.retiring) <= 4
        alive_tokens = [a for a in server.tokens if server.alive_token(a)]
        assert len(alive_tokens) <= 2
    if token[1] < 600:
        assert notified > 0  # re-logins replaced the lease and the child was told
    b.close()
    for action in b.tick(server.now):
        if isinstance(action, RevokeLease):
            server.leases.pop(action.lease_id, None)
        elif isinstance(action, RevokeToken):
            server.tokens.pop(action.accessor, None)
    assert not [a for a in server.tokens if server.alive_token(a)]
    assert not [lid for lid in server.leases if server.alive_lease(lid)]


# -- the heartbeat and watched secrets -----------------------------------------------------------------------------


def test_the_heartbeat_renews_a_long_lived_token_often_and_leaves_a_short_one_at_two_thirds() -> None:
    long = logged_in_book(ttl=3600.0, heartbeat=5.0)
    assert sleep_of(long.tick(0.0)) == 5.0
    assert work(long.tick(5.0)) == [RenewToken("acc-1")]
    long.token_renewed(5.0, 3600.0)
    assert sleep_of(long.tick(5.0)) == 10.0
    short = logged_in_book(ttl=3.0, heartbeat=5.0)
    assert sleep_of(short.tick(0.0)) == 2.0


def test_a_watched_secret_is_polled_every_interval_one_poll_at_a_time_and_forgotten_on_close() -> None:
    b = logged_in_book(ttl=3600.0, poll_every=2.0)
    b.watch("kv:secret/app", 0.0)
    assert sleep_of(b.tick(0.0)) == 2.0
    assert work(b.tick(2.0)) == [Poll("kv:secret/app")]
    assert work(b.tick(3.0)) == []  # in flight: not asked twice
    b.polled("kv:secret/app", 3.0)
    assert sleep_of(b.tick(3.0)) == 5.0
    b.value_changed("kv:secret/app")
    assert work(b.tick(3.5)) == [Notify(("kv:secret/app",))]
    b.close()
    assert not any(isinstance(a, Poll) for a in b.tick(10.0))
    assert b.watched == {}
