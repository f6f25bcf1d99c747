"""The Python SDK: ``from vaultmesh import Workload``.

::

    with Workload.login(role="batch", identity_file="/var/run/identity/token") as wl:
        db = wl.database("jobs-ro")                  # a dynamic credential, renewed in the background
        conn = psycopg.connect(db.dsn, host="db.internal")
        token = wl.kv("jobs/nightly")["api_token"]   # a KV v2 secret
    # leaving the block revoked every lease and the token

    async with Workload.login(role="batch") as wl:  # login and reads run in a worker thread
        db = await wl.adatabase("jobs-ro")

``Workload.login(...)`` builds the workload; it logs in on ``__enter__``/``__aenter__`` or on first use. A
background thread (the same driver as ``vaultmesh run``) renews the token and every lease at about two thirds
of their TTL, logs in again near the token's max TTL and re-reads a lease that cannot be renewed any more; the
``Secret`` handles then show the new values (``on_change`` is called with the changed paths).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from vaultmesh.api.client import EngineClient
from vaultmesh.api.env import from_env
from vaultmesh.errors import VaultmeshError, WorkloadError
from vaultmesh.workload.book import Timing
from vaultmesh.workload.session import IdentityFile, Renewer, Session, make_client
from vaultmesh.workload.spec import Source, parse_source_text

log = logging.getLogger("vaultmesh.workload")

IDENTITY_ENV = "VAULTMESH_IDENTITY_FILE"


class Secret(Mapping[str, Any]):
    """A live view of one secret: always the current value, also after a lease was replaced."""

    def __init__(self, workload: Workload, source: Source) -> None:
        self._wl = workload
        self.source = source

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def data(self) -> dict[str, Any]:
        """A copy of the current fields."""
        return dict(self._wl._values(self.source))

    @property
    def lease_id(self) -> str | None:
        held = self._wl._session.book.leases.get(self.source.key)
        return held.ident if held else None

    def __getitem__(self, name: str) -> Any:
        fields = self._wl._values(self.source)
        if name not in fields:
            raise KeyError(f"{self.source.path} has no field {name!r} (fields: {', '.join(sorted(fields))})")
        return fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:  # never the values
        return f"<{type(self).__name__} {self.source.path} fields={sorted(self.data)}>"


class DatabaseCredential(Secret):
    """A dynamic database credential; ``dsn`` is a libpq connection string with the current user/password."""

    def __init__(self, workload: Workload, source: Source, conninfo: Mapping[str, Any]) -> None:
        super().__init__(workload, source)
        self.conninfo = {k: v for k, v in conninfo.items() if v is not None}

    @property
    def username(self) -> str:
        return str(self["username"])

    @property
    def password(self) -> str:
        return str(self["password"])

    @property
    def dsn(self) -> str:
        """``host=... port=... dbname=... user=... password=...`` (libpq quoting); omitted parts fall back to
        libpq's defaults and PGHOST/PGPORT/PGDATABASE."""
        fields = self._wl._values(self.source)
        parts = {**self.conninfo, "user": fields.get("username"), "password": fields.get("password")}
        return " ".join(f"{k}={_conninfo_quote(str(v))}" for k, v in parts.items() if v is not None)


def _conninfo_quote(value: str) -> str:
    if value and not any(c in value for c in " '\\\t\n"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Workload:
    """One workload's login, secrets and their renewal. Use as a (async) context manager, or call ``close``."""

    def __init__(self, session: Session, *, kv_mount: str = "secret", database_mount: str = "database",
                 own_client: bool = True) -> None:
        self._session = session
        self.kv_mount = kv_mount.strip("/")
        self.database_mount = database_mount.strip("/")
        self._own_client = own_client
        self._renewer: Renewer | None = None
        self._error: BaseException | None = None
        self._closed = False

    @classmethod
    def login(cls, role: str, *, identity_file: str | None = None,
              identity_token: str | Callable[[], str] | None = None, addrs: Sequence[str] | str | None = None,
              ca_file: str | None = None, namespace: str | None = None, auth_mount: str = "jwt",
              kv_mount: str = "secret", database_mount: str = "database", timing: Timing | None = None,
              on_change: Callable[[tuple[str, ...]], None] | None = None,
              client: EngineClient | None = None) -> Workload:
        """Prepare a workload of ``role``; it logs in on ``with``/``async with`` or first use.

        The identity token comes from ``identity_token`` (a string, or a callable asked on every login), else
        from ``identity_file`` or ``$VAULTMESH_IDENTITY_FILE`` (re-read on every login). Addresses default to
        ``BAO_ADDR``/``VAULT_ADDR`` (comma-separated for several nodes), the CA to ``BAO_CACERT``.
        """
        identity: Callable[[], str]
        if callable(identity_token):
            identity = identity_token
        elif identity_token:
            token = identity_token
            identity = lambda: token  # noqa: E731
        else:
            path = identity_file or os.environ.get(IDENTITY_ENV)
            if not path:
                raise WorkloadError(f"no identity token: pass identity_file= or identity_token=, or set {IDENTITY_ENV}")
            identity = IdentityFile(path)
        own = client is None
        if client is None:
            raw = [addrs] if isinstance(addrs, str) else list(addrs or [])
            source = "addrs="
            if not raw and from_env("ADDR"):
                source = "BAO_ADDR" if os.environ.get("BAO_ADDR") else "VAULT_ADDR"
                raw = [from_env("ADDR") or ""]
            nodes = [a.strip() for r in raw for a in r.split(",") if a.strip()]
            if not nodes:
                raise WorkloadError("no OpenBao address: pass addrs= or set BAO_ADDR")
            client = make_client(nodes, ca_file=ca_file or from_env("CACERT"),
                                 namespace=namespace or from_env("NAMESPACE"), addr_source=source)

        def changed(keys: tuple[str, ...]) -> None:
            paths = tuple(k.split(":", 1)[1] for k in keys)
            if on_change is not None:
                try:
                    on_change(paths)
                except Exception:
                    log.exception("on_change callback failed")

        session = Session(client, role=role, identity=identity, auth_mount=auth_mount, timing=timing,
                          log=_log, on_change=changed)
        return cls(session, kv_mount=kv_mount, database_mount=database_mount, own_client=own)

    # -- life -----------------------------------------------------------------------------------------------

    def start(self) -> Workload:
        """Log in and start renewing; idempotent."""
        if self._closed:
            raise WorkloadError("this workload was closed; log in again with Workload.login(...)")
        if self._renewer is None:
            self._session.start()
            self._renewer = Renewer(self._session, on_error=self._failed).start()
        return self

    def close(self) -> None:
        """Stop renewing, revoke every lease and then the token. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._renewer is not None:
            self._renewer.stop()
        try:
            self._session.close()
        finally:
            if self._own_client:
                self._session.client.close()

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Workload:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    @property
    def logins(self) -> int:
        """How many times this workload logged in (1 + re-logins at the token's max TTL)."""
        return self._session.logins

    # -- secrets --------------------------------------------------------------------------------------------

    def kv(self, path: str, *, mount: str | None = None, version: int | None = None) -> Secret:
        """A KV v2 secret at ``<mount>/<path>`` (mount default ``kv_mount``)."""
        mount = (mount or self.kv_mount).strip("/")
        source = Source("kv", f"{mount}/{path.strip('/')}", version, mount)
        return self._add(Secret(self, source))

    def database(self, role: str, *, mount: str | None = None, host: str | None = None, port: int | None = None,
                 dbname: str | None = None, **conninfo: Any) -> DatabaseCredential:
        """Dynamic credentials of database role ``role`` (``<mount>/creds/<role>``), renewed while in use.

        ``host``, ``port``, ``dbname`` and any other libpq keywords go into ``dsn``.
        """
        mount = (mount or self.database_mount).strip("/")
        source, _ = parse_source_text(f"db:{mount}/creds/{role}", where="database")
        info = {"host": host, "port": port, "dbname": dbname, **conninfo}
        return self._add(DatabaseCredential(self, source, info))

    def read(self, path: str) -> Secret:
        """Any secret read with GET (leased or not), e.g. ``aws/creds/deploy``."""
        source, _ = parse_source_text(f"read:{path}", where="read")
        return self._add(Secret(self, source))

    async def akv(self, path: str, **kw: Any) -> Secret:
        return await asyncio.to_thread(self.kv, path, **kw)

    async def adatabase(self, role: str, **kw: Any) -> DatabaseCredential:
        return await asyncio.to_thread(self.database, role, **kw)

    async def aread(self, path: str) -> Secret:
        return await asyncio.to_thread(self.read, path)

    # -- internals ------------------------------------------------------------------------------------------

    def _add(self, secret: Any) -> Any:
        self.start()
        self._session.add(secret.source)
        if self._renewer is not None:
            self._renewer.poke()
        return secret

    def _values(self, source: Source) -> dict[str, Any]:
        if self._error is not None:
            raise WorkloadError(f"the workload's renewal stopped: {self._error}")
        if self._closed:
            raise WorkloadError("this workload was closed: its secrets are revoked")
        with self._session.lock:
            values = self._session.values.get(source.key)
        if values is None:
            raise WorkloadError(f"{source.path} is not held by this workload")
        return values

    def _failed(self, err: BaseException) -> None:
        self._error = err
        log.error("workload renewal stopped by an internal error: %r", err)


def _log(level: str, message: str) -> None:
    (log.warning if level == "warning" else log.info)(message)


__all__ = ["DatabaseCredential", "Secret", "VaultmeshError", "Workload", "WorkloadError"]
