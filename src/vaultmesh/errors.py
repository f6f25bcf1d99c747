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
     ├── Unavailable               no node answered within the deadline (temporary)
     ├── InsecureAddress           a node address that is not https (nothing is sent)
     ├── MissingCA                 the CA file named by --ca-cert / BAO_CACERT cannot be read
     ├── WorkloadError             a workload could not get what it asked for (run, the SDK)
     ├── UnsafePlan                a plan deletes too much without --force (exit 3)
     ├── ApplyFailed               an apply action failed; what came before it is done
     └── SnapshotInvalid           a snapshot file failed an offline check (names the check and where)

Every command prints ``str(err)`` on one line (``report``) and exits with ``err.exit_code``, one of
``EXIT_CODES``; a traceback only with ``--debug``. Messages never carry secret values. (``vaultmesh run`` is the
exception: its exit code is the child's, so its own failures are 125; see docs/workloads.md.)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNSAFE = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "done; for checks (status, lint, policy test, bench, chaos): nothing found",
    EXIT_FAILED: "an expected failure, named on one line; for checks: the mesh is not healthy, a lint finding, "
                 "a failed assertion or verdict",
    EXIT_USAGE: "a usage error (unknown option, bad value) or an invalid mesh file (file:line: field: why)",
    EXIT_UNSAFE: "apply refused a destructive plan (it deletes a namespace, a secrets engine or more than 3 "
                 "objects): add --force",
    EXIT_INTERNAL: "a bug in vaultmesh: traceback and a request to report it",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
"""The exit codes of every ``vaultmesh`` command but ``run`` (README, "Exit codes"). ``plan --detailed-exitcode``
maps them: 0 no changes, 2 changes, 1 any error."""


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


class InsecureAddress(VaultmeshError):
    """A node address that is not https: the identity JWT and tokens would travel in clear."""


class MissingCA(VaultmeshError):
    """The CA file named by --ca-cert / BAO_CACERT does not exist or cannot be read."""


class WorkloadError(VaultmeshError):
    """A workload could not get what it asked for: names what was refused and OpenBao's reason."""


class UnsafePlan(VaultmeshError):
    """The plan deletes more than the threshold, or deletes a namespace or secrets engine."""

    exit_code = EXIT_UNSAFE


class ApplyFailed(VaultmeshError):
    """An action failed; earlier ones are done, and a re-run picks up where this stopped."""


class SnapshotInvalid(VaultmeshError):
    """A snapshot (or its manifest) failed an offline check of ``vaultmesh.snapshot.archive``. ``check`` names
    the check (gzip, tar, member, SHA256SUMS, meta.json, manifest); the message says where (member, offset)."""

    def __init__(self, message: str, *, check: str, hint: str | None = None) -> None:
        self.check = check
        super().__init__(message, hint=hint)


def report(err: VaultmeshError, *, debug: bool = False) -> int:
    """Tell the user: ``error: <message>`` on one line on stderr (with ``debug``, the traceback first); returns
    the exit code. The one way every command reports an expected failure."""
    import sys

    if debug:
        import traceback

        traceback.print_exception(err)
    print(f"error: {err}", file=sys.stderr, flush=True)
    return err.exit_code
