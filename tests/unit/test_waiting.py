"""The base module ``waiting``: ``retry_while_upgrading`` runs on ``wait_until``'s loop and clock (tested on a
fake clock: nothing here sleeps), the runtime's ``wait_until`` is the same function, and ``process_exists``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from vaultmesh import waiting
from vaultmesh.api.admin import kv_upgrading, retry_while_upgrading
from vaultmesh.errors import EngineError, InvalidRequest
from vaultmesh.runtime import local

from .fakes import FakeTime

UPGRADING = InvalidRequest(400, ["Waiting for the primary to upgrade from non-versioned to versioned data. This "
                                 "backend will be unavailable for a brief period and will resume service when the "
                                 "primary is finished."], method="PUT", path="kv/data/a")


def failing(times: int, then: object = "written",
            err: EngineError = UPGRADING) -> tuple[Callable[[], object], list[int]]:
    calls = [0]

    def fn() -> object:
        calls[0] += 1
        if calls[0] <= times:
            raise err
        return then

    return fn, calls


def test_the_runtime_wait_until_is_the_base_modules() -> None:
    assert local.wait_until is waiting.wait_until


def test_a_write_that_succeeds_at_once_is_not_retried() -> None:
    t = FakeTime(50.0)
    fn, calls = failing(0)
    assert retry_while_upgrading(fn, clock=t.clock, sleep=t.sleep) == "written"
    assert (calls[0], t.sleeps) == (1, [])


def test_it_retries_every_interval_while_the_mount_upgrades() -> None:
    t = FakeTime(50.0)
    fn, calls = failing(3)
    assert retry_while_upgrading(fn, interval=0.1, clock=t.clock, sleep=t.sleep) == "written"
    assert calls[0] == 4
    assert t.sleeps == pytest.approx([0.1, 0.1, 0.1])


def test_a_falsy_answer_is_an_answer() -> None:
    t = FakeTime(50.0)
    for answer in (None, {}, 0):
        fn, calls = failing(1, then=answer)
        assert retry_while_upgrading(fn, clock=t.clock, sleep=t.sleep) == answer
        assert calls[0] == 2


def test_past_the_timeout_the_last_upgrading_error_is_raised() -> None:
    t = FakeTime(50.0)
    fn, calls = failing(1_000)
    with pytest.raises(InvalidRequest) as info:
        retry_while_upgrading(fn, timeout=1.0, interval=0.25, clock=t.clock, sleep=t.sleep)
    assert info.value is UPGRADING
    assert t.now == pytest.approx(51.0)
    assert calls[0] == 5  # at 0, 0.25, 0.5, 0.75 and at the deadline


def test_any_other_error_is_raised_at_once() -> None:
    t = FakeTime(50.0)
    denied = EngineError.from_status(403, ["permission denied"])
    fn, calls = failing(1, err=denied)
    with pytest.raises(EngineError) as info:
        retry_while_upgrading(fn, clock=t.clock, sleep=t.sleep)
    assert info.value is denied
    assert (calls[0], t.sleeps) == (1, [])


@pytest.mark.parametrize("words", [
    "Upgrading from non-versioned to versioned data. This backend will be unavailable for a brief period and "
    "will resume service shortly.",
    "Waiting for the primary to upgrade from non-versioned to versioned data. This backend will be unavailable "
    "for a brief period and will resume service when the primary is finished.",
    "UPGRADING FROM NON-VERSIONED TO VERSIONED DATA.",
])
def test_both_of_openbaos_upgrading_answers_are_recognised_in_any_case(words: str) -> None:
    assert kv_upgrading(InvalidRequest(400, ["1 error occurred:", words]))


@pytest.mark.parametrize(("status", "words"), [
    (400, "invalid upgrade path"),
    (400, "no handler for route"),
    (500, "Upgrading from non-versioned to versioned data."),
])
def test_other_answers_are_not_the_upgrade(status: int, words: str) -> None:
    assert not kv_upgrading(EngineError.from_status(status, [words]))


def test_the_usual_upgrading_answer_is_waited_out() -> None:
    t = FakeTime(50.0)
    usual = InvalidRequest(400, ["Upgrading from non-versioned to versioned data. This backend will be "
                                 "unavailable for a brief period and will resume service shortly."])
    fn, calls = failing(2, err=usual)
    assert retry_while_upgrading(fn, interval=0.1, clock=t.clock, sleep=t.sleep) == "written"
    assert calls[0] == 3


def test_process_exists() -> None:
    assert waiting.process_exists(os.getpid())
    assert waiting.process_exists(os.getpgrp(), group=True)
    assert waiting.process_exists(1)  # another user's process (EPERM) exists too
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()  # reaped: the pid is free
    assert not waiting.process_exists(child.pid)
