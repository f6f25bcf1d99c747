"""Delivering secrets to the child: environment variables and files in a private directory.

``render_env`` and ``render_files`` are pure (plan + values in, strings out). ``SecretsDir`` is the small edge:
a 0700 directory (under ``$XDG_RUNTIME_DIR`` when there is one: tmpfs, per user) holding 0600 files written
atomically, removed at exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaultmesh.environ import pick
from vaultmesh.workload.spec import Delivery, Target, field_text, render_template

Values = Mapping[str, Mapping[str, Any]]
"""Source key -> the secret's fields (KV v2: the inner ``data``; leases: ``data``)."""

SECRETS_DIR_ENV = "VAULTMESH_SECRETS_DIR"


def render_value(target: Target, fields: Mapping[str, Any]) -> str:
    what = f"{target.source.path} (for {target.label})"
    if target.template is not None:
        return render_template(target.template, fields, what=what)
    if target.field is not None:
        return field_text(fields, target.field, what=what)
    import json

    return json.dumps(dict(fields), indent=2, sort_keys=True) + ("\n" if target.kind == "file" else "")


def render_env(plan: Delivery, values: Values) -> dict[str, str]:
    """Environment variables the plan delivers (without the inherited environment)."""
    return {t.name: render_value(t, values[t.source.key]) for t in plan.targets if t.kind == "env"}


def render_files(plan: Delivery, values: Values) -> dict[str, str]:
    """Relative file name -> content."""
    return {t.name: render_value(t, values[t.source.key]) for t in plan.targets if t.kind == "file"}


INHERITED_TOKENS = ("BAO_TOKEN", "VAULT_TOKEN")
"""Never handed down: a token in ``run``'s own environment (an operator's, after ``eval "$(vaultmesh env)"``) is
not the workload's. A secret the file delivers under one of these names is still delivered."""


CHILD_ENV_ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM", "USER", "LOGNAME", "SHELL",
                     "TMPDIR", "PWD")
"""What the child inherits from ``run``'s environment without being asked: what a program needs to find its
tools, home, locale and terminal. Everything else (seed variables, ``VAULTMESH_*``, ``BAO_*``, ``PG*``, cloud
credentials) reaches the child only when named with ``--pass-env``."""


def child_env(base: Mapping[str, str], secrets: Mapping[str, str], secrets_dir: str | None, *,
              pass_env: Sequence[str] = ()) -> dict[str, str]:
    """The child's whole environment: the allowlist and ``pass_env`` names (``NAME`` or ``PREFIX_*``) from
    ``base``, never an inherited token, then the delivered secrets, then the secrets dir."""
    env = {k: v for k, v in pick(base, (*CHILD_ENV_ALLOWED, *pass_env)).items() if k not in INHERITED_TOKENS}
    env.update(secrets)
    if secrets_dir:
        env[SECRETS_DIR_ENV] = secrets_dir
    else:
        env.pop(SECRETS_DIR_ENV, None)
    return env


def default_parent(environ: Mapping[str, str]) -> str | None:
    """``$XDG_RUNTIME_DIR`` when it is a private directory we own (tmpfs on systemd hosts), else the temp dir."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime:
        with contextlib.suppress(OSError):
            st = os.stat(runtime)
            if st.st_uid == os.getuid() and st.st_mode & 0o077 == 0:
                return runtime
    return None


class SecretsDir:
    """A private directory for secret files; ``write`` replaces files atomically, ``remove`` deletes all."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="vaultmesh-run-", dir=parent))
        os.chmod(self.path, 0o700)

    def write(self, files: Mapping[str, str]) -> None:
        for name, content in files.items():
            dest = self.path / name
            if dest.parent != self.path:
                dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(content)
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
