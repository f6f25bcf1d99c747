"""Small reusable field types for the mesh file.

``Duration`` is what every TTL in the file uses: the file may say ``15m``, ``1h``, ``90s``, ``1h30m``, ``2d``
or a bare number of seconds, and the model always holds whole seconds (the unit OpenBao answers in, so a
re-plan compares like with like).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer

from vaultmesh.durations import parse_seconds

_WHOLE = re.compile(r"(?:\d+[dhms])+")
"""Whole numbers of whole units only: TTLs in the file are whole seconds."""


def parse_ttl(value: object) -> int:
    """Whole seconds from ``900``, ``"900"``, ``"15m"``, ``"1h30m"``, ``"2d"``. Raises ValueError otherwise.

    Fractions and negative values are refused: OpenBao TTLs are whole seconds and a negative TTL means
    something different on every endpoint.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '15m', not true/false")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, float):
        if value < 0 or not value.is_integer():
            raise ValueError("a duration in seconds must be a whole, non-negative number")
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            return int(text)
        if _WHOLE.fullmatch(text):
            return int(parse_seconds(text))
        raise ValueError(f"'{value}' is not a duration; write e.g. 90s, 15m, 1h, 1h30m, 2d or seconds")
    raise ValueError(f"a duration must be a number of seconds or a string like '15m', not {type(value).__name__}")


def format_duration(seconds: int) -> str:
    """The shortest exact spelling: 900 -> '15m', 5400 -> '1h30m', 0 -> '0s'."""
    if seconds == 0:
        return "0s"
    out = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


Duration = Annotated[int, BeforeValidator(parse_ttl), PlainSerializer(int, return_type=int)]
"""A TTL: accepts '15m', '1h', '90s', ints; holds whole seconds."""

NAME_RE = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""Policy and role names: OpenBao lower-cases policy names, so upper case would plan a change forever."""

Name = Annotated[str, Field(pattern=NAME_RE)]

NAMESPACE_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
"""One namespace path segment (nesting is expressed by nesting, never by slashes)."""

NamespaceName = Annotated[str, Field(pattern=NAMESPACE_RE)]

MOUNT_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*/?$"
"""A mount path without leading slash; a trailing slash is accepted and dropped."""



def _drop_trailing_slash(value: object) -> object:
    return value.rstrip("/") if isinstance(value, str) else value


MountPath = Annotated[str, Field(pattern=MOUNT_RE), BeforeValidator(_drop_trailing_slash)]
