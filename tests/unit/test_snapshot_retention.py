"""Retention: which snapshots ``snapshots.keep`` deletes."""

from __future__ import annotations

from pathlib import Path

from vaultmesh.snapshot.archive import Manifest
from vaultmesh.snapshot.retention import due
from vaultmesh.spec.models import RetentionSpec

NOW = 1_800_000_000.0
HOUR = 3600.0


def snap(age_h: float, name: str | None = None) -> Manifest:
    t = NOW - age_h * HOUR
    return Manifest(mesh="m", name="vaultmesh", index=int(1000 - age_h), term=2, version="2.7.2", seal="static",
                    key_id="k1", key_fingerprint=None, time=t, time_iso="", size=1, sha256="0" * 64,
                    reason="schedule", path=Path(f"/s/{name or age_h}.snap"))


def ages(items: list[Manifest]) -> list[float]:
    return [round((NOW - x.time) / HOUR, 3) for x in items]


def test_count_keeps_the_newest_and_deletes_the_rest_oldest_first() -> None:
    snaps = [snap(h) for h in (3, 1, 5, 2, 4)]
    assert ages(due(snaps, RetentionSpec(count=2), NOW)) == [5, 4, 3]


def test_nothing_is_due_while_the_count_is_not_reached() -> None:
    snaps = [snap(h) for h in (1, 2)]
    assert due(snaps, RetentionSpec(count=2), NOW) == []
    assert due([], RetentionSpec(count=1), NOW) == []


def test_age_deletes_what_is_older() -> None:
    snaps = [snap(h) for h in (1, 23.9, 24.1, 48)]
    assert ages(due(snaps, RetentionSpec(count=None, age=24 * HOUR), NOW)) == [48, 24.1]


def test_the_newest_is_kept_however_old() -> None:
    snaps = [snap(h) for h in (100, 200)]
    assert ages(due(snaps, RetentionSpec(count=None, age=HOUR), NOW)) == [200]
    assert ages(due([snap(100)], RetentionSpec(count=None, age=HOUR), NOW)) == []


def test_count_and_age_together_delete_what_either_deletes() -> None:
    snaps = [snap(h) for h in (1, 2, 3, 30)]
    assert ages(due(snaps, RetentionSpec(count=3, age=24 * HOUR), NOW)) == [30]
    assert ages(due(snaps, RetentionSpec(count=2, age=2.5 * HOUR), NOW)) == [30, 3]


def test_no_limit_keeps_everything() -> None:
    snaps = [snap(h) for h in (1, 1000)]
    assert due(snaps, RetentionSpec(count=None, age=None), NOW) == []


def test_count_one_keeps_only_the_newest() -> None:
    assert ages(due([snap(h) for h in (2, 1, 3)], RetentionSpec(count=1), NOW)) == [3, 2]


def test_snapshots_of_one_second_have_one_order_by_path() -> None:
    a, b = snap(1, "a"), snap(1, "b")
    assert due([a, b], RetentionSpec(count=1), NOW) == [a]
    assert due([b, a], RetentionSpec(count=1), NOW) == [a]


def test_files_without_a_manifest_are_given_as_path_and_time() -> None:
    files = [(Path("/s/old.snap"), NOW - 10 * HOUR), (Path("/s/new.snap"), NOW - HOUR),
             (Path("/s/mid.snap"), NOW - 5 * HOUR)]
    assert due(files, RetentionSpec(count=1), NOW) == [files[0], files[2]]


def test_the_spec_default_keeps_96() -> None:
    snaps = [snap(h / 4) for h in range(100)]
    assert len(due(snaps, RetentionSpec(), NOW)) == 4
