"""Small admin operations shared by the setup code of tests, benchmarks and apply."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from vaultmesh.engine.client import EngineClient
from vaultmesh.errors import EngineError


def ensure_mount(client: EngineClient, path: str, body: Mapping[str, Any]) -> None:
    """Enable a secrets engine or auth method at ``path`` (``sys/mounts/x``, ``sys/auth/x``) unless one is there."""
    try:
        client.write(path, body)
    except EngineError as err:
        words = " ".join(err.errors)
        if "already in use" not in words and "existing mount" not in words:
            raise


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
