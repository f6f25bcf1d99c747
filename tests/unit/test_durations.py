"""One duration parser for the mesh file, the identity CLI and `vaultmesh run`."""

from __future__ import annotations

import pytest

from vaultmesh.durations import parse_seconds


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("1.5h", 5400), ("45", 45),
    (" 5m ", 300), ("1m30s500ms", 90.5),
])
def test_units_add_up(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["", "m", "5M", "30m2h", "1h1h", "-5s", "1 h", "h5", "1.s", "1w"])
def test_malformed_durations_are_refused_with_the_forms_named(bad: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 90s, 10m"):
        parse_seconds(bad)
