"""Waiting out a KV v2 mount that is still setting itself up (apply writes seeds right after enabling one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vaultmesh.errors import EngineError
from vaultmesh.waiting import wait_until

KV_UPGRADING = "non-versioned to versioned data"
"""What both of OpenBao's answers (its KV plugin's ``upgradeCheck``, 2.7.2) say, compared case-insensitively:
"Upgrading from non-versioned to versioned data. This backend will be unavailable for a brief period and will
resume service shortly." and, on a standby, "Waiting for the primary to upgrade from non-versioned to versioned
data. ..."."""


def kv_upgrading(err: EngineError) -> bool:
    """A new KV v2 mount refuses reads and writes for a moment while it sets itself up: a 400 saying so
    (``KV_UPGRADING``), in any case."""
    return err.status == 400 and any(KV_UPGRADING in e.casefold() for e in err.errors)


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
