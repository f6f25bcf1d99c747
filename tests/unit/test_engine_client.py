"""The engine client: failover across nodes, retries within a deadline, errors that keep the server's words.

A fake transport answers from a script; a fake clock moves only when the client sleeps (or a node is slow),
so nothing here waits for real.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultmesh.api.client import RETRY_STATUSES, EngineClient, RetryPolicy, classify
from vaultmesh.api.env import export_lines, from_env
from vaultmesh.errors import EngineError, InvalidRequest, PermissionDenied, Unavailable

A, B, C = "https://127.0.0.1:8200", "https://127.0.0.1:8202", "https://127.0.0.1:8204"

Answer = tuple[int, dict[str, str], bytes] | Exception
Script = Callable[[str, str, str], Answer]


def ok(data: dict[str, Any] | None = None, headers: dict[str, str] | None = None, status: int = 200) -> Answer:
    return status, headers or {}, json.dumps(data if data is not None else {"data": {}}).encode()


def error(status: int, *words: str) -> Answer:
    return status, {}, json.dumps({"errors": list(words)}).encode()


@dataclass
class Call:
    method: str
    addr: str
    target: str
    headers: dict[str, str]
    body: bytes | None
    timeout: float


@dataclass
class FakeClock:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class FakeTransport:
    """Answers by node: ``answers[addr]`` is one answer or a list consumed in order (the last one repeats)."""

    answers: dict[str, Answer | list[Answer]]
    clock: FakeClock
    cost: float = 0.0
    """Seconds each request takes on the fake clock."""
    calls: list[Call] = field(default_factory=list)
    closed: bool = False

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        self.calls.append(Call(method, addr, target, dict(headers), body, timeout))
        self.clock.now += self.cost
        script = self.answers.get(addr, ConnectionRefusedError("connection refused"))
        answer = script if not isinstance(script, list) else script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True

    @property
    def addrs(self) -> list[str]:
        return [c.addr for c in self.calls]


def client(answers: dict[str, Answer | list[Answer]], *, addrs: tuple[str, ...] = (A, B, C), cost: float = 0.0,
           retry: RetryPolicy | None = None, rng: float = 1.0, **kw: Any) -> tuple[EngineClient, FakeTransport]:
    clock = FakeClock()
    transport = FakeTransport(answers, clock, cost)
    c = EngineClient(list(addrs), transport=transport, clock=clock, sleep=clock.sleep, rng=lambda: rng,
                     retry=retry or RetryPolicy(), **kw)
    return c, transport


# -- failover ------------------------------------------------------------------------------------------------

def test_a_connection_error_on_one_node_fails_over_to_the_next():
    c, t = client({A: ConnectionRefusedError("refused"), B: ok({"data": {"v": 1}})})
    assert c.read("secret/x") == {"data": {"v": 1}}
    assert t.addrs == [A, B]


def test_failing_over_within_the_first_pass_does_not_sleep():
    c, t = client({A: TimeoutError("timed out"), B: ConnectionResetError("reset"), C: ok()})
    c.read("secret/x")
    assert t.addrs == [A, B, C]
    assert t.clock.sleeps == []


@pytest.mark.parametrize("status", [503, 500])
def test_a_sealed_or_leaderless_answer_is_retried_on_another_node(status: int):
    c, t = client({A: error(status, "Vault is sealed"), B: ok({"data": {"v": 2}})})
    assert c.read("secret/x") == {"data": {"v": 2}}
    assert t.addrs == [A, B]


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
def test_every_retryable_status_moves_on_to_the_next_node(status: int):
    c, t = client({A: error(status, "try elsewhere"), B: ok()})
    c.read("x")
    assert t.addrs == [A, B]


def test_a_node_that_recovers_is_tried_again_after_a_backoff():
    c, t = client({A: [error(503, "sealed"), ok({"data": {"back": True}})]}, addrs=(A,))
    assert c.read("x") == {"data": {"back": True}}
    assert t.addrs == [A, A]
    assert len(t.clock.sleeps) == 1


def test_the_node_that_answered_is_asked_first_next_time():
    c, t = client({A: ConnectionRefusedError("refused"), B: ok()})
    c.read("x")
    t.calls.clear()
    c.read("y")
    assert t.addrs == [B]


def test_pinned_nodes_are_used_in_order_and_do_not_change_the_preference():
    c, t = client({A: ok(), B: ConnectionRefusedError("refused"), C: ok()})
    c.read("x", nodes=[B, C])
    assert t.addrs == [B, C]
    t.calls.clear()
    c.read("y")
    assert t.addrs == [A]


# -- errors --------------------------------------------------------------------------------------------------

def test_a_400_raises_invalid_request_with_the_server_s_words_and_is_not_retried():
    c, t = client({A: error(400, "missing client token"), B: ok()})
    with pytest.raises(InvalidRequest) as info:
        c.write("auth/userpass/login/x", {"password": "p"})
    assert info.value.status == 400
    assert info.value.errors == ["missing client token"]
    assert "missing client token" in str(info.value)
    assert "400" in str(info.value)
    assert t.addrs == [A]


def test_a_403_raises_permission_denied_with_the_server_s_words_and_is_not_retried():
    c, t = client({A: error(403, "permission denied"), B: ok()})
    with pytest.raises(PermissionDenied) as info:
        c.read("sys/raw/x")
    assert info.value.status == 403
    assert info.value.errors == ["permission denied"]
    assert info.value.node == A
    assert info.value.path == "/sys/raw/x"
    assert t.addrs == [A]


def test_other_client_errors_raise_engine_error_keeping_the_status():
    c, _ = client({A: error(405, "unsupported operation")})
    with pytest.raises(EngineError) as info:
        c.delete("x")
    assert type(info.value) is EngineError
    assert info.value.status == 405


def test_a_404_read_returns_none():
    c, t = client({A: (404, {}, b'{"errors":[]}')})
    assert c.read("secret/missing") is None
    assert t.addrs == [A]


def test_a_404_list_returns_no_keys():
    c, _ = client({A: (404, {}, b"")})
    assert c.list("secret/metadata") == []


def test_list_returns_the_keys_and_asks_with_list_true():
    c, t = client({A: ok({"data": {"keys": ["a", "b/"]}})})
    assert c.list("secret/metadata") == ["a", "b/"]
    assert t.calls[0].target == "/v1/secret/metadata?list=true"


def test_an_exhausted_deadline_raises_unavailable_naming_each_node_s_last_error():
    c, t = client({A: ConnectionRefusedError("connection refused"), B: error(503, "Vault is sealed"),
                   C: error(500, "local node not active but active cluster node not found")},
                  retry=RetryPolicy(deadline=3.0))
    with pytest.raises(Unavailable) as info:
        c.read("secret/x")
    message = str(info.value)
    assert f"{A}: connection failed (connection refused)" in message
    assert f"{B}: 503 Vault is sealed" in message
    assert f"{C}: 500 local node not active but active cluster node not found" in message
    assert "within 3 s" in message
    assert t.clock.now - 1000.0 <= 3.0


# -- backoff -------------------------------------------------------------------------------------------------

def test_backoff_doubles_from_base_up_to_the_cap():
    policy = RetryPolicy(base=0.05, cap=1.0)
    assert [policy.delay(n, lambda: 1.0) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_is_full_jitter():
    assert RetryPolicy(base=0.05, cap=1.0).delay(10, lambda: 0.25) == pytest.approx(0.25)


def test_backoff_never_exceeds_the_cap_even_after_many_attempts():
    assert RetryPolicy(cap=2.0).delay(10_000, lambda: 1.0) == 2.0


@pytest.mark.parametrize("rng", [1.0, 0.5])
def test_a_dead_mesh_sees_a_bounded_number_of_tries_each_at_most_cap_apart(rng: float):
    policy = RetryPolicy(deadline=15.0, base=0.05, cap=1.0)
    c, t = client({}, retry=policy, rng=rng)
    with pytest.raises(Unavailable):
        c.read("x")
    assert max(t.clock.sleeps) <= policy.cap
    assert sum(t.clock.sleeps) <= policy.deadline
    # the first pass is free; after it, one try per sleep, and sleeps settle at rng * cap
    assert len(t.calls) == 3 + len(t.clock.sleeps)
    assert len(t.calls) <= 3 + 4 + policy.deadline / (rng * policy.cap)


def test_each_try_s_timeout_is_at_most_the_client_timeout_and_the_time_left():
    c, t = client({}, retry=RetryPolicy(deadline=12.0), cost=4.0, timeout=5.0)
    with pytest.raises(Unavailable):
        c.read("x")
    assert [round(call.timeout, 3) for call in t.calls] == [5.0, 5.0, 4.0]


# -- headers -------------------------------------------------------------------------------------------------

def test_the_client_token_is_sent():
    c, t = client({A: ok()}, token="s.client-token")
    c.read("x")
    assert t.calls[0].headers["X-Vault-Token"] == "s.client-token"


def test_no_token_header_without_a_token():
    c, t = client({A: ok()})
    c.read("x")
    assert "X-Vault-Token" not in t.calls[0].headers


def test_login_does_not_send_the_client_s_token_and_returns_the_auth_block():
    auth = {"client_token": "s.new", "lease_duration": 3600}
    c, t = client({A: ok({"auth": auth})}, token="s.old")
    assert c.login("userpass", {"password": "pw"}, user="alice") == auth
    call = t.calls[0]
    assert "X-Vault-Token" not in call.headers
    assert (call.method, call.target) == ("POST", "/v1/auth/userpass/login/alice")
    assert json.loads(call.body or b"") == {"password": "pw"}
    assert c.token == "s.old"


def test_a_login_answer_without_auth_is_an_engine_error():
    c, _ = client({A: ok({"data": {}})})
    with pytest.raises(EngineError, match="without an auth block"):
        c.login("jwt", {"jwt": "x", "role": "r"})


def test_the_client_namespace_header_is_sent():
    c, t = client({A: ok()}, namespace="team-a")
    c.read("x")
    assert t.calls[0].headers["X-Vault-Namespace"] == "team-a"


def test_a_request_namespace_overrides_the_client_s():
    c, t = client({A: ok()}, namespace="team-a")
    c.read("x", namespace="team-b/sub")
    assert t.calls[0].headers["X-Vault-Namespace"] == "team-b/sub"


def test_no_namespace_header_in_the_root_namespace():
    c, t = client({A: ok()})
    c.read("x")
    assert "X-Vault-Namespace" not in t.calls[0].headers


def test_a_write_sends_json_and_keeps_the_index_it_was_given():
    c, t = client({A: ok(headers={"x-vault-index": "idx-42"})})
    c.write("secret/data/x", {"data": {"k": "v"}})
    call = t.calls[0]
    assert (call.method, call.headers["Content-Type"]) == ("POST", "application/json")
    assert json.loads(call.body or b"") == {"data": {"k": "v"}}
    assert c.last_index == "idx-42"


def test_a_consistent_read_sends_back_the_write_s_index_and_asks_for_forwarding():
    c, t = client({A: ok(headers={"x-vault-index": "idx-42"})})
    c.write("secret/data/x", {"data": {}})
    c.read("secret/data/x", consistent=True)
    headers = t.calls[1].headers
    assert headers["X-Vault-Index"] == "idx-42"
    assert headers["X-Vault-Inconsistent"] == "forward-active-node"


def test_an_ordinary_read_does_not_send_the_index():
    c, t = client({A: ok(headers={"x-vault-index": "idx-42"})})
    c.write("secret/data/x", {"data": {}})
    c.read("secret/data/x")
    assert "X-Vault-Index" not in t.calls[1].headers


def test_a_read_does_not_replace_the_index_of_the_last_write():
    c, _ = client({A: [ok(headers={"x-vault-index": "w"}), ok(headers={"x-vault-index": "r"})]})
    c.write("x", {})
    c.read("x")
    assert c.last_index == "w"


def test_classify_sorts_answers_into_ok_retry_and_fail():
    assert [classify(s) for s in (None, 200, 204, 307, 404, 400, 403, 405, 412, 429, 500, 503)] == [
        "retry", "ok", "ok", "retry", "ok", "fail", "fail", "fail", "retry", "retry", "retry", "retry"]


def test_health_asks_one_node_without_failing_over():
    c, t = client({A: ConnectionRefusedError("refused"), B: ok({"initialized": True})})
    with pytest.raises(OSError):
        c.health(A)
    assert t.addrs == [A]


def test_health_reports_sealed_and_uninitialised_nodes_as_answers():
    c, t = client({B: ok({"initialized": True, "sealed": True}, status=503)})
    assert c.health(B) == {"initialized": True, "sealed": True, "_status": 503}
    assert "sealedcode=200" in t.calls[0].target and "uninitcode=200" in t.calls[0].target


def test_a_client_needs_an_address():
    with pytest.raises(ValueError):
        EngineClient([], transport=FakeTransport({}, FakeClock()))


def test_closing_the_client_closes_its_transport():
    c, t = client({})
    with c:
        pass
    assert t.closed


# -- environment ---------------------------------------------------------------------------------------------

def test_bao_variables_win_over_vault_variables():
    assert from_env("ADDR", {"BAO_ADDR": "https://bao:8200", "VAULT_ADDR": "https://vault:8200"}) == \
        "https://bao:8200"


def test_vault_variables_are_used_when_bao_ones_are_absent():
    assert from_env("TOKEN", {"VAULT_TOKEN": "s.vault"}) == "s.vault"


def test_an_empty_bao_variable_counts_as_absent():
    assert from_env("TOKEN", {"BAO_TOKEN": "", "VAULT_TOKEN": "s.vault"}) == "s.vault"


def test_neither_variable_set_is_none():
    assert from_env("NAMESPACE", {}) is None


def test_export_lines_set_both_bao_and_vault_names():
    assert export_lines({"ADDR": "https://127.0.0.1:8200"}) == [
        "export BAO_ADDR='https://127.0.0.1:8200'", "export VAULT_ADDR='https://127.0.0.1:8200'"]


def _eval_in_sh(lines: list[str], var: str) -> str:
    result = subprocess.run(["sh", "-c", f'eval "$VM_LINES"; printf %s "${var}"'], capture_output=True,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VM_LINES": "\n".join(lines)},
                            check=True, timeout=10)
    return result.stdout.decode()


def test_an_exported_value_with_a_single_quote_round_trips_through_sh():
    value = "it's a 'token' with $HOME, `cmd`, \"quotes\" and \\ backslashes"
    lines = export_lines({"TOKEN": value})
    assert _eval_in_sh(lines, "BAO_TOKEN") == value
    assert _eval_in_sh(lines, "VAULT_TOKEN") == value


@settings(max_examples=40, deadline=None)
@given(value=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40))
def test_any_exported_value_round_trips_through_sh(value: str):
    assert _eval_in_sh(export_lines({"TOKEN": value}), "BAO_TOKEN") == value
