"""Durations as people write them: ``90s``, ``15m``, ``1h30m``, ``2d``, ``500ms`` or a bare number of seconds.

One parser for the mesh file, the identity CLI and ``vaultmesh run``; it imports only ``re`` because the
workload path uses it.
"""

from __future__ import annotations

import re

_NUM = r"\d+(?:\.\d+)?"
_DURATION = re.compile(
    rf"^(?:(?P<d>{_NUM})d)?(?:(?P<h>{_NUM})h)?(?:(?P<m>{_NUM})m(?!s))?(?:(?P<s>{_NUM})s)?(?:(?P<ms>{_NUM})ms)?$"
)
_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_seconds(text: str) -> float:
    """Seconds in ``text``. Units d, h, m, s, ms, each at most once and in that order; a bare number is seconds.
    Raises ValueError naming the accepted forms."""
    raw = text.strip() if isinstance(text, str) else ""
    if re.fullmatch(_NUM, raw):
        return float(raw)
    match = _DURATION.match(raw)
    if not raw or match is None:
        raise ValueError(f"invalid duration {text!r}: use a number with a unit (d, h, m, s, ms), "
                         "e.g. 90s, 10m, 1h or 2h30m")
    return sum(float(v) * _SECONDS[u] for u, v in match.groupdict().items() if v is not None)
