"""Picking variables out of an environment by name or ``PREFIX_*`` pattern. Pure, stdlib only (the workload
path imports it): the one rule for what a daemon or a workload's child inherits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def pick(environ: Mapping[str, str], patterns: Iterable[str]) -> dict[str, str]:
    """The variables of ``environ`` that ``patterns`` name: exact names, or prefixes ending in ``*``."""
    names = tuple(patterns)
    return {k: v for k, v in environ.items()
            if any(k == p or (p.endswith("*") and k.startswith(p[:-1])) for p in names)}
