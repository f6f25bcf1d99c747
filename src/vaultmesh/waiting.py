"""Waiting with a deadline: the package's one poll loop (``wait_until``, its clock and sleep injectable, so a
caller's wait is tested on a fake clock), and the probe most waits ask (``process_exists``).

Stdlib only, and light (no ``typing`` at run time): the workload path imports it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")


def wait_until(cond: Callable[[], T], *, timeout: float, interval: float = 0.1,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> T:
    """Poll ``cond()`` until it returns something truthy or ``timeout`` passes; returns its last value.

    ``cond`` runs at once, then every ``interval`` seconds, and once more when the deadline comes (no sleep goes
    past it). ``clock`` and ``sleep`` are injectable so a caller's own poll loop can be tested without waiting.
    An exception from ``cond`` is not caught. The one poll loop of the package: every "wait for X with a
    deadline" goes through here."""
    deadline = clock() + timeout
    while True:
        result = cond()
        now = clock()
        if result or now >= deadline:
            return result
        sleep(min(interval, deadline - now))


def process_exists(pid: int, *, group: bool = False) -> bool:
    """Whether process ``pid`` (with ``group``: process group ``pid``) exists, asked with signal 0. One that
    exists but belongs to another user (EPERM) exists; a zombie exists until it is reaped."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
