"""What workload tests need from a mesh, the one way a mesh is configured: mesh files (``meshes/*.yaml``) applied
through ``reconcile.apply``, trusting the identity issuer ``up`` runs; tokens are minted with that mesh's own key
ring (``<state>/identity/keys``), as a platform's attestation would.

The files take ``${name}`` values (``string.Template``): the test's PostgreSQL DSN becomes ``pg_url`` (templated
``{{username}}:{{password}}``) and ``pg_user``; its password, if any, reaches apply through the environment
(``TEST_PG_PASSWORD``), never the file (the spec refuses passwords in a connection_url).
"""

from __future__ import annotations

import string
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.bench.targets import connection_of
from vaultmesh.errors import VaultmeshError
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.server import keys_dir, read_issuer_record
from vaultmesh.identity.tokens import mint
from vaultmesh.reconcile.apply import ApplyResult, apply
from vaultmesh.spec.load import parse_spec
from vaultmesh.waiting import wait_until

from .conftest import MeshHandle

MESHES = Path(__file__).parent / "meshes"
SEEDS = {"TEST_NIGHTLY_API_TOKEN": "tok-nightly-123", "TEST_NIGHTLY_REGION": "eu-west-1"}
"""The values of the files' KV seeds (from_env)."""
SHORT_TTLS = {"short_token_ttl": "2s", "short_token_max_ttl": "4s", "short_db_ttl": "3s", "short_db_max_ttl": "5s"}
"""workload.yaml's role "short": a token and a credential that expire within a test."""


@dataclass(frozen=True)
class MeshIssuer:
    """The identity issuer ``up`` runs for a mesh: its URL and key ring."""

    url: str
    keys: Path

    @property
    def ring(self) -> KeyRing:
        return KeyRing.load(self.keys)

    def token(self, workload: str, *, audience: str | Sequence[str] = "vaultmesh", ttl: float = 600,
              now: float | None = None, **kw: Any) -> str:
        return mint(self.ring, issuer=self.url, workload=workload, audience=audience, ttl=ttl,
                    now=time.time() if now is None else now, **kw)


def mesh_issuer(handle: MeshHandle) -> MeshIssuer:
    record = read_issuer_record(handle.dir)
    assert record is not None, f"no identity issuer recorded in {handle.dir}"
    return MeshIssuer(record.issuer, keys_dir(handle.dir))


def mesh_file(file: str, /, **values: str) -> str:
    """``meshes/<file>.yaml`` with its ``${...}`` filled in (a missing value raises KeyError)."""
    return string.Template((MESHES / f"{file}.yaml").read_text()).substitute(values)


def apply_file(handle: MeshHandle, admin: EngineClient, file: str, /, *, pg_dsn: str | None = None,
               env: Mapping[str, str] | None = None, **values: str) -> ApplyResult:
    """Apply ``meshes/<file>.yaml`` to the mesh (nothing it does not declare is pruned)."""
    env = {**SEEDS, **(env or {})}
    if pg_dsn is not None:
        url, user, password = connection_of(pg_dsn)
        values = {"pg_url": url, "pg_user": user, **values}
        if password is not None:
            env["TEST_PG_PASSWORD"] = password
    spec = parse_spec(mesh_file(file, **values), source=str(MESHES / f"{file}.yaml"))
    return apply(handle.mesh, admin, spec, base_dir=MESHES, env=env)


class WriteLoad:
    """Steady KV writes (~20/s) through the retrying EngineClient, and a sampler of the active node (10/s): a change
    to a running mesh (upgrade, scale) runs inside it; ``errors`` and ``lost()`` must stay empty, ``leaders`` counts
    the handovers."""

    def __init__(self, handle: MeshHandle, mount: str) -> None:
        self.handle = handle
        self.mount = mount
        self.client = handle.client(retry=RetryPolicy(deadline=20.0))
        self.client.write(f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "1"}})
        wait_until(self._mounted, timeout=10)  # a standby may not route a new mount for a moment
        self.acked: list[int] = []
        self.errors: list[str] = []
        self.leaders: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, daemon=True),
                        threading.Thread(target=self._sample, daemon=True)]

    def _mounted(self) -> bool:
        try:
            self.client.write(f"{self.mount}/ready", {"v": "ready"})
        except VaultmeshError:
            return False
        return True

    def _write(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.client.write(f"{self.mount}/w{i}", {"v": str(i)})
                self.acked.append(i)
            except VaultmeshError as err:
                self.errors.append(str(err))
            i += 1
            self.stop.wait(0.05)

    def _sample(self) -> None:
        probe = EngineClient(self.handle.addrs, ca_file=self.handle.ca)
        while not self.stop.is_set():
            for node in self.handle.mesh.layout.nodes:
                try:
                    h = probe.health(node.api_addr, timeout=0.5)
                except OSError:
                    continue
                if h.get("sealed") is False and h.get("standby") is False:
                    if not self.leaders or self.leaders[-1] != node.name:
                        self.leaders.append(node.name)
                    break
            self.stop.wait(0.1)

    def __enter__(self) -> WriteLoad:
        for t in self.threads:
            t.start()
        wait_until(lambda: len(self.acked) >= 5, timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def lost(self) -> list[int]:
        lost = []
        for i in self.acked:
            data = self.client.read(f"{self.mount}/w{i}", consistent=True)
            if not data or (data.get("data") or {}).get("v") != str(i):
                lost.append(i)
        return lost
