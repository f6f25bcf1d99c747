"""The open-loop schedule, decided before the clock starts, and the config's bounds."""

from __future__ import annotations

import pytest

from vaultmesh.bench.model import MAX_COUNT, BenchConfig, check_loopback
from vaultmesh.bench.runner import share_work
from vaultmesh.bench.schedule import rollout_offsets, split, split_count, steady_offsets
from vaultmesh.bench.targets import Targets
from vaultmesh.errors import VaultmeshError

TARGETS = Targets(entry="https://127.0.0.1:8200", nodes=("https://127.0.0.1:8201",), ca_file="ca.pem",
                  issuer="https://127.0.0.1:9000", keys_dir="/nonexistent")


def test_rollout_spreads_starts_evenly_over_the_window() -> None:
    assert rollout_offsets(4, 2.0) == [0.0, 0.5, 1.0, 1.5]


def test_rollout_with_no_window_starts_everything_at_once() -> None:
    assert rollout_offsets(3, 0.0) == [0.0, 0.0, 0.0]


def test_steady_arrivals_follow_the_rate_not_the_responses() -> None:
    assert steady_offsets(4.0, 1.0) == [0.0, 0.25, 0.5, 0.75]


def test_steady_arrivals_are_capped_by_a_limit() -> None:
    assert len(steady_offsets(100.0, 10.0, limit=7)) == 7


def test_schedules_are_bounded_in_count() -> None:
    with pytest.raises(ValueError):
        rollout_offsets(MAX_COUNT + 1, 1.0)
    with pytest.raises(ValueError):
        steady_offsets(MAX_COUNT, 10.0)


def test_split_deals_round_robin_keeping_sequence_numbers() -> None:
    parts = split([0.0, 0.1, 0.2, 0.3, 0.4], 2)
    assert parts == [[(0, 0.0), (2, 0.2), (4, 0.4)], [(1, 0.1), (3, 0.3)]]


def test_split_count_shares_a_budget() -> None:
    assert split_count(7, 3) == [3, 2, 2]
    assert sum(split_count(1000, 16)) == 1000


def test_workers_get_their_share_of_jobs_and_threads() -> None:
    plans = share_work(BenchConfig(scenario="rollout", count=10, window=1.0, concurrency=32, processes=2),
                         TARGETS)
    assert [len(p.jobs) for p in plans] == [5, 5]
    assert [p.threads for p in plans] == [16, 16]
    assert sorted(seq for p in plans for seq, _ in p.jobs) == list(range(10))


def test_closed_loop_workers_share_the_request_budget() -> None:
    plans = share_work(BenchConfig(scenario="kv-read", count=11, processes=2), TARGETS)
    assert [p.budget for p in plans] == [6, 5]
    assert all(not p.jobs for p in plans)


def test_a_rate_makes_a_single_op_scenario_open_loop() -> None:
    cfg = BenchConfig(scenario="kv-read", rate=50.0, duration=2.0)
    assert cfg.open_loop and cfg.expected_jobs == 100


@pytest.mark.parametrize("bad", [
    {"scenario": "nope"},
    {"scenario": "rollout", "count": 0},
    {"scenario": "steady", "rate": 0.0},
    {"scenario": "steady", "rate": 10_000.0},
    {"scenario": "rollout", "window": 10_000.0},
    {"scenario": "kv-read", "duration": 0.0, "count": 0},
    {"scenario": "rollout", "concurrency": 0},
    {"scenario": "steady", "rate": 5000.0, "duration": 900.0, "count": 0},
])
def test_unbounded_or_unknown_runs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(VaultmeshError):
        BenchConfig(**bad).check()  # type: ignore[arg-type]


def test_loopback_targets_pass() -> None:
    check_loopback(["https://127.0.0.1:8200", "https://localhost:1", "https://[::1]:2", "https://127.9.9.9:3"])


def test_namespace_hosts_of_the_mesh_pass_when_allowed() -> None:
    check_loopback(["https://10.213.5.11:8200"], ["10.213.5.11"])


@pytest.mark.parametrize("addr", ["https://10.0.0.1:8200", "https://192.168.1.5:8200", "https://example.com",
                                  "https://8.8.8.8:443"])
def test_other_targets_are_refused(addr: str) -> None:
    with pytest.raises(VaultmeshError, match="loopback"):
        check_loopback([addr])
