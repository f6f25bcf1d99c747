"""Waiting out a KV v2 mount that is still setting itself up (apply writes seeds right after enabling one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vaultmesh.errors import EngineError


def kv_upgrading(err: EngineError) -> bool:
    """A new KV v2 mount refuses reads and writes for a moment while it sets itself up ("upgrade in progress")."""
    return err.status == 400 and "upgrad" in " ".join(err.errors)


def retry_while_upgrading(fn: Callable[[], Any], *, timeout: float = 15.0,
                          sleep: Callable[[float], None] = time.sleep) -> Any:
    """Run ``fn`` until it stops failing with ``kv_upgrading``, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except EngineError as err:
            if not kv_upgrading(err) or time.monotonic() > deadline:
                raise
            sleep(0.1)
