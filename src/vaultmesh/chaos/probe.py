"""The acknowledged-write log: sequential KV writes, each acknowledged or not, checked after recovery.

The probe writes ``<mount>/<run>/<seq>`` one at a time with a raw kept-alive connection and no retries, so each
attempt is one observation of the write path: the time until writes succeed again is read off this log, and
every acknowledged write must be readable after the mesh has recovered (zero loss).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from vaultmesh.api.client import EngineClient, make_ssl_context
from vaultmesh.bench.model import error_kind
from vaultmesh.bench.ops import RawConn
from vaultmesh.chaos.fault import Attempt

INTERVAL = 0.02
"""Seconds between probe writes: 50 writes/s resolves a recovery to ~20 ms and costs the mesh little."""
TIMEOUT = 1.0
"""Per-write timeout: a hung (SIGSTOPped) active node costs one second per attempt, not the default 30."""
MAX_WRITES = 30_000
"""Bound on the writes of one probe (10 minutes at 50/s)."""


class WriteProbe:
    """A thread that writes until stopped; ``attempts`` is its log (times in seconds since ``t0``)."""

    def __init__(self, addr: str, ca_file: str, token: str, path_prefix: str, *, interval: float = INTERVAL,
                 timeout: float = TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        self.addr, self.token, self.prefix = addr, token, path_prefix.strip("/")
        self.interval, self.clock = interval, clock
        self.conn = RawConn(addr, make_ssl_context(ca_file), timeout=timeout)
        self.attempts: list[Attempt] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread = threading.Thread(target=self._run, name=f"probe {self.addr}", daemon=True)
        self._thread.start()

    def stop(self) -> list[Attempt]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.conn.close()
        return self.attempts

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set() and seq < MAX_WRITES:
            t_start = self.clock() - self.t0
            err: str | None = None
            try:
                status, _ = self.conn.request("PUT", f"/v1/{self.prefix}/{seq}", b'{"v":"%d"}' % seq, self.token)
                if status not in (200, 204):
                    err = f"http-{status}"
            except Exception as e:  # every failure is one observation
                err = error_kind(e)
            t_end = self.clock() - self.t0
            self.attempts.append(Attempt(seq, t_start, t_end, err is None, err))
            seq += 1
            self._stop.wait(max(0.0, self.interval - (t_end - t_start)))

    @property
    def acked(self) -> list[int]:
        return [a.seq for a in self.attempts if a.ok]


def readable(client: EngineClient, entry: str, path_prefix: str, seqs: list[int], *, threads: int = 4) -> list[int]:
    """The sequence numbers among ``seqs`` whose write reads back with its own value, read through the entry
    (the active node: a standby may lag behind the last commit)."""
    prefix = path_prefix.strip("/")
    chunks = [seqs[i::threads] for i in range(threads)]

    def check(chunk: list[int]) -> list[int]:
        c = EngineClient([entry], ca_file=client.ca_file, token=client.token, retry=client.retry)
        ok = []
        try:
            for s in chunk:
                doc = c.read(f"{prefix}/{s}")
                if doc and (doc.get("data") or {}).get("v") == str(s):
                    ok.append(s)
        finally:
            c.close()
        return ok

    with ThreadPoolExecutor(threads) as pool:
        return sorted(s for part in pool.map(check, chunks) for s in part)


def forget(client: EngineClient, entry: str, path_prefix: str, *, threads: int = 4, rounds: int = 3) -> int:
    """Delete every entry a run wrote below ``path_prefix`` (its write log, KV v1, and a minority's below
    ``<prefix>-minority/<node>``): data, not the mount, which the bench's mesh file declares. Listed again
    after each round (a write whose answer the fault delayed can land late), at most ``rounds`` times.
    Returns how many were deleted."""
    prefix = path_prefix.strip("/")
    mount, _, run = prefix.partition("/")

    def written() -> list[str]:
        keys = [f"{prefix}/{k}" for k in client.list(prefix) if not k.endswith("/")]
        for node in client.list(f"{mount}/{run}-minority"):
            keys += [f"{mount}/{run}-minority/{node}{k}" for k in client.list(f"{mount}/{run}-minority/{node}")]
        return keys

    def drop(chunk: list[str]) -> None:
        c = EngineClient([entry], ca_file=client.ca_file, token=client.token, retry=client.retry)
        try:
            for key in chunk:
                c.delete(key)
        finally:
            c.close()

    done = 0
    for _ in range(rounds):
        keys = written()
        if not keys:
            break
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(drop, [keys[i::threads] for i in range(threads)]))
        done += len(keys)
    return done
