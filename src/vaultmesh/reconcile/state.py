"""What ``apply`` keeps in the state dir between runs (``reconcile/``), with one typed reader per record.

The paths are ``layout.StatePaths``'s; the writers are in ``reconcile.apply``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from vaultmesh.errors import StateError
from vaultmesh.fsutil import ensure_dir, read_json, write_atomic
from vaultmesh.layout import StatePaths
from vaultmesh.reconcile.budget import Budget


@dataclass(frozen=True)
class ReconcileState:
    paths: StatePaths

    def hash_key(self) -> bytes:
        """The key of write-only field fingerprints, made once (0600)."""
        path = self.paths.reconcile_hash_key
        if not path.exists():
            ensure_dir(self.paths.reconcile_dir)
            write_atomic(path, secrets.token_bytes(32))
        return path.read_bytes()

    def previous_hashes(self) -> dict[str, dict[str, str]]:
        """Fingerprints of what the last ``apply`` wrote and read back; {} before the first."""
        path = self.paths.reconcile_applied
        try:
            return dict(read_json(path))
        except FileNotFoundError:
            return {}
        except ValueError as err:
            raise StateError(f"{path} is corrupt ({err})",
                             hint="delete it: write-only fields will then be written again") from None

    def budgets(self) -> list[Budget]:
        """The lease budgets of the file last applied; none before the first ``apply`` (or when unreadable)."""
        try:
            return [Budget.from_json(item) for item in read_json(self.paths.reconcile_budgets)]
        except (OSError, ValueError, KeyError, TypeError):
            return []
