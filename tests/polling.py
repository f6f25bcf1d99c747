"""Polling with a deadline for tests: the runtime's ``wait_until``, failing the test when time runs out."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from vaultmesh.runtime.local import wait_until

T = TypeVar("T")


def eventually(cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """The first truthy value of ``cond()``; AssertionError when there is none within ``timeout`` seconds."""
    result = wait_until(cond, timeout=timeout, interval=interval)
    if not result:
        raise AssertionError(f"condition not met within {timeout} s")
    return result
