"""The keeper's pure parts: heal back-off and which steps act, the scheduled jobs' clock, the metric families."""

from __future__ import annotations

import math

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from vaultmesh.keeper.heal import acting, backoff_seconds, failure
from vaultmesh.keeper.jobs import RETRY, Job, cert_watch, next_run
from vaultmesh.keeper.metrics import CERT_EXPIRY, _Collector, families
from vaultmesh.lifecycle import decide as d
from vaultmesh.lifecycle.keeper_process import KeeperStatus, describe


def test_backoff_doubles_to_a_minute() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4, 7, 8, 50)] == [1, 2, 4, 8, 60, 60, 60]


def test_only_steps_that_change_something_act() -> None:
    waiting = d.Decision((d.StartNode("node-2"), d.Wait("x", "node-2")), "starting node-2", "node-2")
    assert acting(waiting) == (d.StartNode("node-2"),)
    frozen = d.Decision((d.Wait("starting: its API does not answer yet", "node-2"),), "...", "node-2")
    assert acting(frozen) == () and failure(frozen) is None
    died = d.Decision((d.Fail(d.EXITED, "node-2"),), d.EXITED, "node-2")
    assert acting(died) == () and failure(died) == d.Fail(d.EXITED, "node-2")


def test_a_job_runs_every_interval_after_its_last_success() -> None:
    assert next_run(None, last_ok=None, last_failed=None, started=0) == math.inf
    assert next_run(900, last_ok=None, last_failed=None, started=100) == 1000
    assert next_run(900, last_ok=500, last_failed=None, started=100) == 1400
    # a failure after the last success is retried soon, at most one interval later
    assert next_run(900, last_ok=500, last_failed=600, started=100) == 600 + RETRY
    assert next_run(30, last_ok=None, last_failed=600, started=100) == 630
    # an old failure does not hold the schedule back
    assert next_run(900, last_ok=700, last_failed=600, started=100) == 1600
    job = Job(900, started=0)
    assert not job.due(899) and job.due(900)


def test_metrics_follow_the_record() -> None:
    record = KeeperStatus(pid=1, started=0, cycle_at=10, healthy_since=5, restarts=3, revoked=2,
                          snapshot={"time": 100.0, "size": 2048, "index": 77, "failures": 1},
                          drill={"time": 200.0, "ok": True, "rto_s": 9.5, "rpo_s": 60.0})
    names = {f.name for f in families(record)}
    assert {"vaultmesh_keeper_up", "vaultmesh_keeper_restarts", "vaultmesh_snapshot_last_size_bytes",
            "vaultmesh_drill_last_ok", "vaultmesh_drill_last_rto_seconds"} <= names
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(lambda: record))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert "vaultmesh_keeper_restarts_total 3.0" in text
    assert "vaultmesh_snapshot_last_index 77.0" in text and "vaultmesh_drill_last_ok 1.0" in text
    # nothing taken yet: no made-up zero timestamps
    bare = {f.name for f in families(KeeperStatus(pid=1, started=0))}
    assert "vaultmesh_snapshot_last_success_timestamp_seconds" not in bare and "vaultmesh_drill_last_ok" not in bare


def test_status_line_says_when_healing_backs_off() -> None:
    record = KeeperStatus(pid=1, started=0, cycle_at=99, restarts=4,
                          backing_off="node-2 exited right after it was started (failure 3 in a row); next try in 4 s")
    line = describe(record, True, now=100)
    assert "restarted 4" in line and "BACKING OFF: node-2 exited" in line


def test_the_expiry_gauge_has_one_series_per_certificate() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(lambda: KeeperStatus(pid=1, started=0),  # type: ignore[arg-type]
                                 lambda: {"node-1": 1800000000.0, "entry": 1800000001.0}))
    text = generate_latest(registry).decode()
    assert f'{CERT_EXPIRY}{{cert="node-1"}} 1.8e+09' in text
    assert f'{CERT_EXPIRY}{{cert="entry"}} 1.800000001e+09' in text
    # no certificate looked at yet: no series at all, rather than a made-up zero
    assert CERT_EXPIRY not in {f.name for f in families(KeeperStatus(pid=1, started=0), {})}


def test_the_certificate_job_is_due_at_once_then_every_interval() -> None:
    watch = cert_watch(every=300, now=lambda: 1000.0)
    assert watch.job.due(1000.0) and watch.expiry == {}
    watch.job.last_ok = 1000.0
    assert not watch.job.due(1299.0) and watch.job.due(1300.0)
    watch.job.last_failed = 1100.0  # a renewal that failed (a busy lock) is tried again within a minute
    assert watch.job.due(1100.0 + RETRY)
