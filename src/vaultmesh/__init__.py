"""vaultmesh: a production-shaped OpenBao mesh for ephemeral workloads.

Public SDK names are imported lazily so ``import vaultmesh`` stays cheap on the workload path.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the run path's first imports
    from typing import Any

__version__ = "0.1.0"
__all__ = ["Workload", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Workload":
        from vaultmesh.workload.sdk import Workload

        return Workload
    raise AttributeError(f"module 'vaultmesh' has no attribute {name!r}")
