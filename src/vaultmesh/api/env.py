"""Where to find OpenBao: ``BAO_*`` first, then their HashiCorp ``VAULT_*`` twins."""

from __future__ import annotations

import os
from collections.abc import Mapping

NAMES = ("ADDR", "CACERT", "TOKEN", "NAMESPACE")


def from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``BAO_<name>`` or, failing that, ``VAULT_<name>``; None when neither is set (or empty)."""
    env = os.environ if environ is None else environ
    return env.get(f"BAO_{name}") or env.get(f"VAULT_{name}") or None


def export_lines(values: Mapping[str, str]) -> list[str]:
    """sh-compatible ``export`` lines for ``BAO_*`` and ``VAULT_*`` (values single-quoted)."""
    lines = []
    for prefix in ("BAO", "VAULT"):
        for name, value in values.items():
            quoted = "'" + value.replace("'", "'\"'\"'") + "'"
            lines.append(f"export {prefix}_{name}={quoted}")
    return lines
