"""One exception family for everything vaultmesh tells a user.

    VaultmeshError                 a message written for the user: what failed, where, what to do
     ├── SpecError                 the mesh file is invalid (carries file, line, field)
     ├── StateError                the state dir is missing, corrupt, or from a newer vaultmesh
     ├── EngineBinaryError         the bao/vault binary is missing or is not what we expect
     ├── RuntimeFailure            a node process failed to start, a port is taken
     ├── NotReady                  the mesh did not become healthy in time (names node and reason)
     ├── EngineError               OpenBao answered with an error (keeps status and the server's words)
     │    ├── PermissionDenied     403
     │    └── InvalidRequest       400
     └── Unavailable               no node answered within the deadline (temporary)

The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``; a traceback only with ``--debug``.
Messages never carry secret values.
"""

from __future__ import annotations


class VaultmeshError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing sentence."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} ({hint})")


class SpecError(VaultmeshError):
    """The mesh file is invalid. ``where`` is ``file:line`` plus the field path."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, hint: str | None = None) -> None:
        self.file, self.line, self.field = file, line, field
        where = ""
        if file:
            where = file + (f":{line}" if line else "")
        if field:
            where = f"{where}: {field}" if where else field
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class StateError(VaultmeshError):
    """The state dir cannot be used as it is."""


class EngineBinaryError(VaultmeshError):
    """The engine binary is missing or unusable."""


class RuntimeFailure(VaultmeshError):
    """A process could not be started or stopped."""


class NotReady(VaultmeshError):
    """The mesh did not reach the wanted state before the deadline."""


class Unavailable(VaultmeshError):
    """No node could serve the request before the deadline; retrying later may work."""


class EngineError(VaultmeshError):
    """OpenBao answered with an error status; keeps the status and the server's own words."""

    def __init__(self, status: int, errors: list[str], *, method: str = "", path: str = "",
                 node: str | None = None) -> None:
        self.status = status
        self.errors = errors
        self.method = method
        self.path = path
        self.node = node
        words = "; ".join(e.strip() for e in errors if e) or "no detail given"
        at = f" on {node}" if node else ""
        super().__init__(f"OpenBao refused {method} {path}{at}: {status} {words}".replace("  ", " "))

    @staticmethod
    def from_status(status: int, errors: list[str], **kw: str | None) -> EngineError:
        cls = {400: InvalidRequest, 403: PermissionDenied}.get(status, EngineError)
        return cls(status, errors, **kw)  # type: ignore[arg-type]


class PermissionDenied(EngineError):
    """403: the token may not do this."""


class InvalidRequest(EngineError):
    """400: the request was refused as invalid (bad login, bad field)."""
