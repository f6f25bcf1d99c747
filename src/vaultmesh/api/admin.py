"""Waiting out a KV v2 mount that is still setting itself up (apply writes seeds right after enabling one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vaultmesh.errors import EngineError
from vaultmesh.waiting import wait_until


def kv_upgrading(err: EngineError) -> bool:
    """A new KV v2 mount refuses reads and writes for a moment while it sets itself up ("upgrade in progress")."""
    return err.status == 400 and "upgrad" in " ".join(err.errors)


def retry_while_upgrading(fn: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.1,
                          clock: Callable[[], float] = time.monotonic,
                          sleep: Callable[[float], None] = time.sleep) -> Any:
    """Run ``fn`` until it stops failing with ``kv_upgrading``, every ``interval`` seconds for at most ``timeout``
    seconds (``wait_until``'s loop and clock); then the last "upgrade in progress" error is raised. Any other
    error is raised at once."""
    refused: list[EngineError] = []  # the last "upgrade in progress" answer

    def attempt() -> tuple[Any] | None:
        try:
            return (fn(),)  # a tuple: truthy whatever fn answered (None, {}, ...)
        except EngineError as err:
            if not kv_upgrading(err):
                raise
            refused[:] = [err]
            return None

    done = wait_until(attempt, timeout=timeout, interval=interval, clock=clock, sleep=sleep)
    if done is None:
        raise refused[-1]
    return done[0]
