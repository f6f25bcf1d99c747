"""Bench operations: a failed operation is a sample with an error; an unknown operation is a bug, raised."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vaultmesh.bench.ops import SINGLE_OPS, Holding, PathOps, RawError, RawOps, Sampler
from vaultmesh.errors import EngineError, Unavailable

Row = tuple[str, float, float, float, str | None]


class Recorder:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def __call__(self, phase: str, t_sched: float, t_start: float, t_end: float, error: str | None) -> None:
        self.rows.append((phase, t_sched, t_start, t_end, error))

    @property
    def errors(self) -> list[tuple[str, str | None]]:
        return [(r[0], r[4]) for r in self.rows]


def tick() -> Any:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    return clock


def path_ops(**methods: Any) -> PathOps:
    """A PathOps without a mesh: its requests are the given functions."""
    ops = PathOps.__new__(PathOps)
    ops.t = SimpleNamespace(kv_read_path="bench-kv/data/app/config", creds_path="bench-db/creds/bench")  # type: ignore[assignment]
    ops.signer, ops.clock, ops.own_token = None, tick(), "tok"
    for name, fn in methods.items():
        setattr(ops, name, fn)
    return ops


def raw_ops(call: Any) -> RawOps:
    ops = RawOps.__new__(RawOps)
    ops.clock, ops.own_token, ops.tokens = tick(), "tok", ["jwt"]
    ops.t = SimpleNamespace(role="bench")  # type: ignore[assignment]
    ops._kv, ops._creds, ops._login = "/v1/kv", "/v1/creds", "/v1/auth/bench-jwt/login"
    ops._call = call  # type: ignore[method-assign]
    return ops


def denied(*_: Any) -> Any:
    raise EngineError(403, ["permission denied"], method="GET", path="/v1/bench-kv/data/app/config")


def test_a_single_operation_that_succeeds_is_one_sample_without_error() -> None:
    rec = Recorder()
    path_ops(_read=lambda path, token: {"data": {}}).single("kv-read", 1, 0.5, rec)
    assert rec.errors == [("kv-read", None)]
    assert rec.rows[0][1] == 0.5  # from its scheduled start


def test_a_single_operation_that_fails_is_one_sample_with_its_error_and_the_run_goes_on() -> None:
    rec = Recorder()
    path_ops(_read=denied).single("db-creds", 1, 0.0, rec)
    assert rec.errors == [("db-creds", "http-403")]


@pytest.mark.parametrize("make", [lambda: path_ops(), lambda: raw_ops(lambda *a: b"")], ids=["path", "raw"])
def test_an_unknown_single_operation_raises_and_records_nothing(make: Any) -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match="unknown bench operation 'kv-write'"):
        make().single("kv-write", 1, 0.0, rec)
    with pytest.raises(ValueError, match="unknown bench operation 'workload'"):
        make().single("workload", 1, 0.0, rec)  # a workload is started, not a single operation
    assert rec.rows == []


@pytest.mark.parametrize("cls", [PathOps, RawOps])
def test_prepare_refuses_an_unknown_operation_before_any_sample(cls: Any) -> None:
    ops = cls.__new__(cls)
    with pytest.raises(ValueError, match="unknown bench operation"):
        ops.prepare("kv-write")


@pytest.mark.parametrize("op", SINGLE_OPS)
def test_every_single_operation_is_done_by_both_paths(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vaultmesh.bench.ops.identity_token", lambda signer, targets, seq: "jwt")
    rec = Recorder()
    path_ops(_read=lambda path, token: {}, _login=lambda jwt: "t").single(op, 1, 0.0, rec)
    raw_ops(lambda *a: b'{"client_token":"t"}').single(op, 1, 0.0, rec)
    assert rec.errors == [(op, None), (op, None)]


def test_a_bug_inside_a_workload_path_operation_is_counted_as_an_error_sample_not_dropped() -> None:
    rec = Recorder()
    path_ops(_read=lambda path, token: {}["missing"]).single("kv-read", 1, 0.0, rec)
    assert rec.errors == [("kv-read", "KeyError")]


def test_a_raw_single_operation_that_fails_is_one_sample_with_its_kind() -> None:
    def refused(*_: Any) -> bytes:
        raise RawError("http-503")

    rec = Recorder()
    raw_ops(refused).single("kv-read", 1, 0.0, rec)
    assert rec.errors == [("kv-read", "http-503")]


def test_a_failed_revoke_is_recorded_not_raised() -> None:
    class Session:
        def close(self) -> None:
            raise Unavailable("no node answered within 15 s")

    rec = Recorder()
    path_ops().revoke(Holding(1, "tok", None, Session()), 0.0, rec)  # type: ignore[arg-type]
    assert rec.errors == [("revoke", "unavailable")]


def test_a_raw_revoke_that_fails_is_recorded_not_raised() -> None:
    def refused(*_: Any) -> bytes:
        raise RawError("http-403")

    rec = Recorder()
    raw_ops(refused).revoke(Holding(1, "tok", "lease"), 0.0, rec)
    assert rec.errors == [("revoke", "http-403")]


def test_a_failure_the_sampler_does_not_expect_is_a_bug_and_is_raised_unrecorded() -> None:
    class Strict(Sampler):
        failures = (RawError,)

        def __init__(self) -> None:
            self.clock = tick()

    rec = Recorder()

    def bug() -> None:
        raise TypeError("a bug, not a failed request")

    with pytest.raises(TypeError):
        Strict()._sample(rec, "kv", 0.0, bug)
    assert rec.rows == []


def test_timed_records_the_failure_then_raises_it_on() -> None:
    rec = Recorder()
    ops = path_ops()
    with pytest.raises(EngineError):
        ops._timed(rec, "login", 0.0, denied)
    assert rec.errors == [("login", "http-403")]


def test_closing_after_the_mesh_refused_to_revoke_its_own_token_does_not_raise() -> None:
    class Client:
        closed = False

        def write(self, *_: Any, **__: Any) -> None:
            denied()

        def close(self) -> None:
            self.closed = True

    ops = path_ops()
    ops.client = Client()  # type: ignore[assignment]
    ops.close()  # the bench's count check reports the token left behind
    assert ops.client.closed  # type: ignore[attr-defined]


def test_closing_lets_a_bug_through() -> None:
    class Client:
        def write(self, *_: Any, **__: Any) -> None:
            raise AttributeError("a bug")

        def close(self) -> None:
            pass

    ops = path_ops()
    ops.client = Client()  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        ops.close()
