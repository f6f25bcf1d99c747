"""The session edge against a fake OpenBao transport: request order, consistency headers, errors, revocation."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.errors import InvalidRequest, WorkloadError
from vaultmesh.workload.book import Timing
from vaultmesh.workload.session import Session, WorkloadTransport
from vaultmesh.workload.spec import Source, parse_flags


@dataclass
class FakeBao:
    """Just enough of OpenBao: JWT login, KV v2, leased creds, renew/revoke, a denied path."""

    lease_ttl: int = 60
    renew_status: int = 200
    revoke_status: int = 204
    kv: dict[str, Any] = field(default_factory=lambda: {"version": 1, "data": {"token": "t0k"}})
    calls: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    index: itertools.count = field(default_factory=lambda: itertools.count(100))
    ids: itertools.count = field(default_factory=itertools.count)

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        data = json.loads(body) if body else None
        path = target.split("?")[0].removeprefix("/v1/")
        self.calls.append((method, path, headers, data))
        status, out = self.answer(method, path, headers, data)
        hdrs = {"x-vault-index": f"idx-{next(self.index)}"} if method != "GET" else {}
        return status, hdrs, json.dumps(out).encode()

    def answer(self, method: str, path: str, headers: dict[str, str], data: Any) -> tuple[int, dict[str, Any]]:
        n = next(self.ids)
        if path == "auth/jwt/login":
            if data["jwt"] == "expired":
                why = "error validating token: invalid expiration time (exp) claim: token is expired"
                return 400, {"errors": [why]}
            if data["role"] != "batch":
                return 400, {"errors": [f'role "{data["role"]}" could not be found']}
            return 200, {"auth": {"client_token": f"s.tok{n}", "accessor": f"acc{n}", "lease_duration": 30,
                                  "renewable": True}}
        if path == "secret/data/app":
            return 200, {"data": {"data": dict(self.kv["data"]), "metadata": {"version": self.kv["version"]}}}
        if path.startswith("database/creds/"):
            return 200, {"lease_id": f"{path}/l{n}", "lease_duration": self.lease_ttl, "renewable": True,
                         "data": {"username": f"v-{n}", "password": "pw"}}
        if path.startswith("denied/"):
            return 403, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}
        if path == "sys/leases/renew":
            if self.renew_status != 200:
                return self.renew_status, {"errors": ["lease not found"]}
            return 200, {"lease_id": data["lease_id"], "lease_duration": self.lease_ttl, "renewable": True}
        if path == "sys/leases/revoke" and self.revoke_status == 403:
            return 403, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}
        if path in ("sys/leases/revoke", "auth/token/revoke-self"):
            return 204, {}
        if path == "auth/token/renew-self":
            return 200, {"auth": {"lease_duration": 30, "renewable": True}}
        return 404, {"errors": []}

    def close(self) -> None:
        pass

    def paths(self) -> list[str]:
        return [f"{m} {p}" for m, p, _, _ in self.calls]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def session(fake: FakeBao, flags: list[str], *, jwt: str = "good", role: str = "batch",
            clock: Clock | None = None, timing: Timing | None = None) -> Session:
    plan = parse_flags(flags)
    client = EngineClient(["https://a"], transport=fake, retry=RetryPolicy(deadline=0.1), sleep=lambda s: None)
    labels = {s.key: "for " + ", ".join(t.label for t in plan.targets_of(s.key)) for s in plan.sources}
    return Session(client, role=role, identity=lambda: jwt, sources=plan.sources, labels=labels,
                   timing=timing or Timing(jitter=0.0, heartbeat=None), clock=clock or Clock(), rng=lambda: 0.0)


def test_start_logs_in_then_reads_each_source_once_at_least_as_new_as_the_login() -> None:
    fake = FakeBao()
    s = session(fake, ["A=kv:secret/app#token", "U=db:database/creds/ro#username", "P=db:database/creds/ro#password"])
    s.start()
    assert fake.paths() == ["POST auth/jwt/login", "GET secret/data/app", "GET database/creds/ro"]
    for _, _, headers, _ in fake.calls[1:]:
        assert headers["X-Vault-Index"] == "idx-100"  # the login's
        assert headers["X-Vault-Inconsistent"] == "forward-active-node"
        assert headers["X-Vault-Token"] == "s.tok0"
    assert s.values["kv:secret/app"] == {"token": "t0k"}
    assert list(s.book.leases) == ["db:database/creds/ro"]


@pytest.mark.parametrize(("jwt", "role", "message"), [
    ("expired", "batch", "login as role 'batch' at auth/jwt refused: error validating token: invalid expiration "
                         "time (exp) claim: token is expired (400 from https://a)"),
    ("good", "nope", "login as role 'nope' at auth/jwt refused: role \"nope\" could not be found (400 from https://a)"),
])
def test_a_refused_login_is_one_line_in_openbao_words_and_nothing_else_is_sent(jwt: str, role: str,
                                                                              message: str) -> None:
    fake = FakeBao()
    s = session(fake, ["A=kv:secret/app#token"], jwt=jwt, role=role)
    with pytest.raises(WorkloadError) as exc:
        s.start()
    assert str(exc.value) == message
    assert fake.paths() == ["POST auth/jwt/login"]


def test_a_denied_read_revokes_what_was_obtained_before_and_the_token() -> None:
    fake = FakeBao()
    s = session(fake, ["U=db:database/creds/ro#username", "X=read:denied/thing#x"])
    with pytest.raises(WorkloadError) as exc:
        s.start()
    assert str(exc.value) == "reading denied/thing (for X) refused: 1 error occurred: * permission denied (403 from " \
                             "https://a)"
    assert fake.paths() == ["POST auth/jwt/login", "GET database/creds/ro", "GET denied/thing",
                            "PUT sys/leases/revoke", "POST auth/token/revoke-self"]
    assert fake.calls[3][3] == {"lease_id": "database/creds/ro/l1"}


def test_close_revokes_each_lease_then_the_token_once() -> None:
    fake = FakeBao()
    s = session(fake, ["U=db:database/creds/ro#username"])
    s.start()
    s.close()
    s.close()
    assert fake.paths()[-2:] == ["PUT sys/leases/revoke", "POST auth/token/revoke-self"]
    assert len(fake.calls) == 4
    assert s.values == {}


def test_a_policy_without_lease_revoke_leaves_the_leases_to_the_token_and_logs_no_refusal() -> None:
    fake = FakeBao(revoke_status=403)
    s = session(fake, ["U=db:database/creds/ro#username", "P=db:database/creds/ro#password", "K=db:database/creds/x#a"])
    logged: list[tuple[str, str]] = []
    s.log = lambda level, message: logged.append((level, message))
    s.start()
    s.close()
    revokes = [p for p in fake.paths() if p.endswith("sys/leases/revoke")]
    assert len(revokes) == 1  # asked once, then left to the token's revocation
    assert fake.paths()[-1] == "POST auth/token/revoke-self"
    assert not [m for level, m in logged if level == "warning" or "refused" in m]


def test_renewals_happen_when_the_book_says_so() -> None:
    fake, clock = FakeBao(), Clock()
    s = session(fake, ["U=db:database/creds/ro#username"], clock=clock)
    s.start()
    assert s.step() == pytest.approx(1020.0)  # the token at 2/3 of 30 s
    clock.t = 1020.0
    assert s.step() == pytest.approx(1040.0)  # renewed (and the lease is due at 1040)
    clock.t = 1040.01
    s.step()
    assert fake.paths()[2:] == ["POST auth/token/renew-self", "POST auth/token/renew-self", "PUT sys/leases/renew"]


def test_a_lease_that_cannot_be_renewed_is_read_again_and_the_change_reported() -> None:
    fake, clock = FakeBao(renew_status=400), Clock()
    s = session(fake, ["U=db:database/creds/ro#username"], clock=clock)
    changes: list[tuple[str, ...]] = []
    s.on_change = changes.append
    s.start()
    first = s.values["db:database/creds/ro"]["username"]
    clock.t = 1040.0
    s.step()
    assert s.values["db:database/creds/ro"]["username"] != first
    assert changes == [("db:database/creds/ro",)]
    assert "GET database/creds/ro" in fake.paths()[-3:]


class Scripted:
    """A transport answering from a list, recording which node was asked."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        self.asked.append(addr)
        return self.answers.pop(0)

    def close(self) -> None:
        pass


def test_a_standby_redirect_makes_the_client_ask_the_next_node() -> None:
    inner = Scripted([(307, {"location": "https://b/v1/auth/token/renew-self"}, b""),
                      (200, {}, b'{"auth": {"lease_duration": 30, "renewable": true}}')])
    client = EngineClient(["https://a", "https://b"], transport=WorkloadTransport(inner), sleep=lambda s: None)
    resp = client.request("POST", "auth/token/renew-self", {}, token="t")
    assert (resp.status, inner.asked) == (200, ["https://a", "https://b"])


def test_a_token_past_its_max_ttl_is_a_refusal_not_a_retry() -> None:
    why = b'{"errors": ["1 error occurred:\\n\\t* past the max TTL, cannot renew\\n\\n"]}'
    inner = Scripted([(500, {}, why)])
    client = EngineClient(["https://a", "https://b"], transport=WorkloadTransport(inner), sleep=lambda s: None)
    with pytest.raises(InvalidRequest, match="past the max TTL"):
        client.request("POST", "auth/token/renew-self", {}, token="t")
    assert inner.asked == ["https://a"]


def test_a_wrapped_secret_is_unwrapped_last_and_not_burnt_when_another_source_fails(tmp_path: Path) -> None:
    wrapped = tmp_path / "wrapped"
    wrapped.write_text("s.wrapping\n")
    fake = FakeBao()
    s = session(fake, [f"W=unwrap:file:{wrapped}#v", "D=kv:denied/thing#x"])
    with pytest.raises(WorkloadError):
        s.start()
    assert "POST sys/wrapping/unwrap" not in fake.paths()


def test_a_missing_wrapping_token_fails_before_login(tmp_path: Path) -> None:
    fake = FakeBao()
    s = session(fake, [f"W=unwrap:file:{tmp_path / 'absent'}#v", "A=kv:secret/app#token"])
    with pytest.raises(WorkloadError, match="cannot read"):
        s.start()
    assert fake.paths() == []


# -- KV refresh and the heartbeat ----------------------------------------------------------------------------------


def test_a_watched_kv_secret_is_polled_and_only_a_new_version_with_new_values_is_reported() -> None:
    fake, clock = FakeBao(), Clock()
    s = session(fake, ["A=kv:secret/app#token"], clock=clock, timing=Timing(jitter=0.0, heartbeat=None,
                                                                             poll_every=2.0))
    changes: list[tuple[str, ...]] = []
    s.on_change = changes.append
    s.start()
    assert s.step() == pytest.approx(1002.0)  # the first poll, before the token's renewal at 1020
    clock.t = 1002.0
    s.step()  # same version: nothing
    fake.kv["version"] = 2  # a new version with the same values (e.g. metadata only): nothing either
    clock.t = 1004.0
    s.step()
    assert changes == [] and s.values["kv:secret/app"] == {"token": "t0k"}
    fake.kv.update(version=3, data={"token": "n3w"})
    clock.t = 1006.0
    s.step()
    assert changes == [("kv:secret/app",)] and s.values["kv:secret/app"] == {"token": "n3w"}
    assert fake.paths()[1:] == ["GET secret/data/app"] * 4


def test_a_pinned_kv_version_is_never_polled() -> None:
    fake, clock = FakeBao(), Clock()
    client = EngineClient(["https://a"], transport=fake, retry=RetryPolicy(deadline=0.1), sleep=lambda s: None)
    s = Session(client, role="batch", identity=lambda: "good", sources=[Source("kv", "secret/app", version=1)],
                timing=Timing(jitter=0.0, heartbeat=None), clock=clock, rng=lambda: 0.0)
    s.start()
    assert fake.calls[1][1] == "secret/data/app"
    assert s.step() == pytest.approx(1020.0)  # only the token's renewal is ever due
    assert s.book.watched == {}


def test_a_failed_poll_is_retried_at_the_next_poll_and_changes_nothing() -> None:
    fake, clock = FakeBao(), Clock()
    s = session(fake, ["A=kv:secret/app#token"], clock=clock, timing=Timing(jitter=0.0, heartbeat=None))
    s.start()
    real = fake.answer
    fake.answer = lambda *a: (503, {"errors": ["sealed"]})  # type: ignore[method-assign]
    clock.t = 1002.0
    assert s.step() == pytest.approx(1004.0)
    fake.answer = real  # type: ignore[method-assign]
    assert s.values["kv:secret/app"] == {"token": "t0k"}


def test_the_token_is_renewed_every_heartbeat_whatever_its_ttl() -> None:
    fake, clock = FakeBao(), Clock()
    s = session(fake, ["U=db:database/creds/ro#username"], clock=clock, timing=Timing(jitter=0.0, heartbeat=5.0))
    s.start()
    assert s.step() == pytest.approx(1005.0)  # not 1020 (2/3 of 30 s): the heartbeat comes first
    clock.t = 1005.0
    assert s.step() == pytest.approx(1010.0)
    assert fake.paths()[2:] == ["POST auth/token/renew-self"]
