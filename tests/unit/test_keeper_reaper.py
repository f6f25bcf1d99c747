"""The reaper's decision: which tokens nobody renews any more. Pure: token facts and times in."""

from __future__ import annotations

import pytest

from vaultmesh.keeper.loop import parse_time
from vaultmesh.keeper.reaper import LeaseInfo, abandoned, silent_leases, watched, whole_mounts
from vaultmesh.workload.reap import TokenInfo

NOW = 10_000.0


def token(accessor: str = "a1", *, issued: float = NOW - 100, renewed: float | None = None, role: str = "batch",
          path: str = "auth/jwt/login", renewable: bool = True) -> TokenInfo:
    return TokenInfo(accessor, "jwt-nightly", path, {"role": role}, None, "", issued, renewed, renewable)


def decide(tokens: list[TokenInfo], *, healthy_since: float = 0.0, roles: tuple[str, ...] = ("jwt/batch",)
           ) -> list[str]:
    return [r.accessor for r in abandoned(tokens, now=NOW, healthy_since=healthy_since, stale_after=15,
                                          roles=roles, jwt_mounts={"jwt"})]


def test_a_token_that_heartbeats_is_kept_and_a_silent_one_is_revoked() -> None:
    assert decide([token("live", renewed=NOW - 4), token("dead", renewed=NOW - 16)]) == ["dead"]


def test_a_ghost_login_never_renewed_goes_once_older_than_stale_after_and_a_fresh_login_stays() -> None:
    assert decide([token("ghost", issued=NOW - 20), token("new", issued=NOW - 3)]) == ["ghost"]


def test_time_only_counts_while_the_mesh_answers_so_an_outage_or_a_keeper_restart_revokes_nothing() -> None:
    silent = [token("t", renewed=NOW - 600)]
    assert decide(silent, healthy_since=NOW - 5) == []  # the mesh came back 5 s ago: renewals get their chance
    assert decide(silent, healthy_since=NOW - 15) == ["t"]


@pytest.mark.parametrize(("roles", "expected"), [
    (("*",), True), (("jwt/*",), True), (("jwt/batch",), True), (("jwt/other",), False), ((), False),
    (("other/*",), False),
])
def test_only_logins_at_watched_roles_are_reaped(roles: tuple[str, ...], expected: bool) -> None:
    assert watched(token(), roles, {"jwt"}) is expected


def test_star_means_jwt_and_oidc_mounts_only_and_tokens_that_cannot_heartbeat_are_left_to_their_ttl() -> None:
    assert not watched(token(path="auth/userpass/login/vaultmesh-admin"), ("*",), {"jwt"})
    assert watched(token(path="auth/userpass/login/x"), ("userpass/*",), {"jwt"})
    assert not watched(token(renewable=False), ("*",), {"jwt"})
    assert not watched(token(path="auth/token/create"), ("*",), {"jwt"})


def test_the_reason_names_the_login_and_the_silence_oldest_first() -> None:
    found = abandoned([token("b", renewed=NOW - 20), token("a", issued=NOW - 90)], now=NOW, healthy_since=0,
                      stale_after=15, roles=["jwt/batch"], jwt_mounts={"jwt"})
    assert [r.accessor for r in found] == ["a", "b"]
    assert found[0].reason == ("token of jwt-nightly (auth/jwt role batch) never renewed (a login nobody "
                               "received, or a run killed at once)")
    assert found[1].reason == "token of jwt-nightly (auth/jwt role batch) not renewed for 20 s"


def test_mounts_watched_as_a_whole_go_by_their_login_leases_and_their_tokens_are_not_judged_twice() -> None:
    assert whole_mounts(["*"], {"jwt", "oidc"}) == {"jwt", "oidc"}
    assert whole_mounts(["ci/*", "jwt/batch"], {"jwt"}) == {"ci"}
    assert decide([token("dead", renewed=NOW - 60)], roles=("*",)) == []  # left to silent_leases
    assert decide([token("dead", renewed=NOW - 60)], roles=("jwt/batch",)) == ["dead"]


def test_a_silent_login_lease_is_revoked_a_heartbeating_or_fresh_one_kept_and_a_fixed_one_left_to_its_ttl() -> None:
    leases = [LeaseInfo("auth/jwt/login/hlive", NOW - 300, NOW - 3), LeaseInfo("auth/jwt/login/hnew", NOW - 2),
              LeaseInfo("auth/jwt/login/hdead", NOW - 300, NOW - 40), LeaseInfo("auth/jwt/login/hghost", NOW - 30),
              LeaseInfo("auth/jwt/login/hfixed", NOW - 300, None, renewable=False)]
    found = silent_leases(leases, now=NOW, healthy_since=0, stale_after=15)
    assert [(r.accessor, r.lease) for r in found] == [("auth/jwt/login/hdead", True), ("auth/jwt/login/hghost", True)]
    assert found[0].reason == "login lease of auth/jwt not renewed for 40 s"
    assert found[1].reason == "login lease of auth/jwt never renewed"
    assert silent_leases(leases, now=NOW, healthy_since=NOW - 10, stale_after=15) == []


def test_lease_times_are_read_to_the_sub_second_from_openbaos_rfc3339_with_nanoseconds() -> None:
    assert parse_time("2026-12-02T14:48:14.170139443Z") == pytest.approx(1796222894.170139443)
    assert parse_time("2026-12-02T14:48:14Z") == pytest.approx(1796222894.0)
    assert parse_time(None) is None and parse_time("") is None and parse_time("soon") is None



def test_a_silent_login_lease_in_a_namespace_is_revoked_there_and_named_with_it() -> None:
    (found,) = silent_leases([LeaseInfo("auth/jwt/login/hx", NOW - 30, namespace="team-a")], now=NOW,
                             healthy_since=0, stale_after=15)
    assert (found.namespace, found.accessor) == ("team-a", "auth/jwt/login/hx")
    assert found.reason == "login lease of team-a/auth/jwt never renewed"
    assert whole_mounts(["team-a/jwt/*"], {"jwt", "team-a/jwt"}) == {"team-a/jwt"}
