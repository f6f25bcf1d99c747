"""Requests sent ahead (``EngineClient.prefetch``): the first identical request takes the answer, once; a
refusal is handed over as it is; anything else is asked again; and ``close`` revokes what nobody took."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import pytest

from vaultmesh.api.client import Ahead, EngineClient
from vaultmesh.errors import PermissionDenied

A = "https://127.0.0.1:8200"
LOGIN = Ahead("POST", "auth/jwt/login", {"role": "batch", "jwt": "eyJ"})
KV = Ahead("GET", "secret/data/jobs/nightly", consistent=True)
DB = Ahead("GET", "database/creds/ro", consistent=True)


@dataclass
class Mesh:
    """Answers a login with token ``t-<n>``, the KV read, a database credential with lease ``db/<n>``."""

    login_status: int = 200
    kv_status: int = 200
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    logins: int = 0
    leases: int = 0

    def __post_init__(self) -> None:
        self.gate.set()

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        path = target.removeprefix("/v1/").split("?")[0]
        self.calls.append((method, path, headers.get("X-Vault-Token", "")))
        if path == "auth/jwt/login":
            self.gate.wait(5)
            if self.login_status != 200:
                return self.login_status, {}, json.dumps({"errors": ["permission denied"]}).encode()
            self.logins += 1
            auth = {"client_token": f"t-{self.logins}", "accessor": "acc", "lease_duration": 60}
            return 200, {"x-vault-index": "idx"}, json.dumps({"auth": auth}).encode()
        if path == "secret/data/jobs/nightly":
            if self.kv_status != 200:
                return self.kv_status, {}, b'{"errors": []}'
            return 200, {}, json.dumps({"data": {"data": {"api_token": "x"}, "metadata": {"version": 1}}}).encode()
        if path == "database/creds/ro":
            self.leases += 1
            return 200, {}, json.dumps({"lease_id": f"db/{self.leases}", "lease_duration": 60,
                                        "data": {"username": "v-1"}}).encode()
        return 204, {}, b""

    def close(self) -> None:
        pass

    def paths(self) -> list[str]:
        return [f"{m} {p}" for m, p, _ in self.calls]


def client(mesh: Mesh) -> EngineClient:
    return EngineClient([A], transport=mesh)


def test_the_session_s_requests_take_the_answers_sent_ahead() -> None:
    mesh = Mesh()
    c = client(mesh)
    c.prefetch(LOGIN, [KV, DB])
    auth = c.login("jwt", {"role": "batch", "jwt": "eyJ"})
    assert auth["client_token"] == "t-1"
    assert c.read("secret/data/jobs/nightly", token="t-1", consistent=True) is not None
    db = c.read("database/creds/ro", token="t-1", consistent=True)
    assert db is not None and db["lease_id"] == "db/1"
    c.close()
    assert mesh.paths() == ["POST auth/jwt/login", "GET secret/data/jobs/nightly", "GET database/creds/ro"]


def test_an_answer_is_taken_once() -> None:
    mesh = Mesh()
    c = client(mesh)
    c.prefetch(LOGIN, [])
    c.login("jwt", {"role": "batch", "jwt": "eyJ"})
    assert c.login("jwt", {"role": "batch", "jwt": "eyJ"})["client_token"] == "t-2"  # sent for real
    c.close()


def test_a_request_that_differs_is_sent_and_the_untaken_login_is_revoked_at_close() -> None:
    mesh = Mesh()
    c = client(mesh)
    c.prefetch(LOGIN, [DB])
    auth = c.login("jwt", {"role": "batch", "jwt": "another identity"})
    assert auth["client_token"] == "t-2"
    c.close()
    assert ("POST", "auth/token/revoke-self", "t-1") in mesh.calls  # revoking the token revokes db/1 with it
    assert mesh.leases == 1


def test_a_lease_read_ahead_for_nobody_is_revoked_when_its_login_was_taken() -> None:
    mesh = Mesh()
    c = client(mesh)
    c.prefetch(LOGIN, [KV, DB])
    c.login("jwt", {"role": "batch", "jwt": "eyJ"})
    c.read("secret/data/jobs/nightly", token="t-1", consistent=True)
    c.close()  # the database credential was never asked for
    assert ("PUT", "sys/leases/revoke", "t-1") in mesh.calls
    assert ("POST", "auth/token/revoke-self", "t-1") not in mesh.calls  # the session owns the token


def test_a_refused_login_is_handed_over_as_it_is_and_not_sent_twice() -> None:
    mesh = Mesh(login_status=403)
    c = client(mesh)
    c.prefetch(LOGIN, [KV])
    with pytest.raises(PermissionDenied, match="permission denied"):
        c.login("jwt", {"role": "batch", "jwt": "eyJ"})
    c.close()
    assert mesh.paths() == ["POST auth/jwt/login"]


def test_a_404_read_ahead_is_asked_again_by_its_caller() -> None:
    mesh = Mesh(kv_status=404)
    c = client(mesh)
    c.prefetch(LOGIN, [KV])
    c.login("jwt", {"role": "batch", "jwt": "eyJ"})
    assert c.read("secret/data/jobs/nightly", token="t-1", consistent=True) is None
    c.close()
    assert mesh.paths().count("GET secret/data/jobs/nightly") == 2


def test_close_waits_for_the_login_in_flight_and_revokes_it() -> None:
    mesh = Mesh()
    mesh.gate.clear()
    c = client(mesh)
    c.prefetch(LOGIN, [DB])
    threading.Timer(0.05, mesh.gate.set).start()
    c.close()
    assert ("POST", "auth/token/revoke-self", "t-1") in mesh.calls
    assert mesh.leases == 0  # nothing is read after close began


def test_one_prefetch_per_client() -> None:
    c = client(Mesh())
    c.prefetch(LOGIN, [])
    with pytest.raises(RuntimeError):
        c.prefetch(LOGIN, [])
    c.close()


def test_the_first_request_not_sent_ahead_revokes_what_nobody_took_before_it_is_sent() -> None:
    """A session whose first read failed revokes its token: the credential read ahead with that token must be
    revoked before (a lease made while the token is being revoked could outlive it)."""
    mesh = Mesh(kv_status=403)
    c = client(mesh)
    c.prefetch(LOGIN, [KV, DB])
    c.login("jwt", {"role": "batch", "jwt": "eyJ"})
    with pytest.raises(PermissionDenied):
        c.read("secret/data/jobs/nightly", token="t-1", consistent=True)
    c.request("POST", "auth/token/revoke-self", {}, token="t-1")
    assert mesh.paths()[-2:] == ["PUT sys/leases/revoke", "POST auth/token/revoke-self"]
    c.close()
    assert mesh.paths().count("PUT sys/leases/revoke") == 1
