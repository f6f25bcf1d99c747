"""Revoking a mesh's leases before destroy: which mounts, the one line that says what remains, and the walk
over a fake mesh (a transport answering from a dict of leases)."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field

from vaultmesh.api.client import EngineClient
from vaultmesh.errors import Unavailable
from vaultmesh.lifecycle.revoke import MountOutcome, RevokeReport, lease_mounts, revoke_all, serving_nodes

ADDR = "https://127.0.0.1:8200"


def test_lease_mounts_skip_engines_that_never_issue_leases() -> None:
    mounts = {"secret/": {"type": "kv"}, "database/": {"type": "database"}, "cubbyhole/": {"type": "cubbyhole"},
              "sys/": {"type": "system"}, "identity/": {"type": "identity"}, "transit/": {"type": "transit"},
              "pki/": {"type": "pki"}, "request_id": "x"}
    assert lease_mounts(mounts) == [("database/", "database"), ("pki/", "pki")]


def test_a_complete_report_has_no_line() -> None:
    report = RevokeReport(True, (MountOutcome("", "database/", "database", 3, 0),))
    assert report.complete and report.revoked == 3 and report.leftover_line() is None


def test_a_mesh_that_did_not_answer_says_what_may_remain() -> None:
    line = RevokeReport(False, reason="no node is running").leftover_line()
    assert line is not None and "\n" not in line
    assert "the mesh did not answer (no node is running)" in line
    assert "PostgreSQL roles named v-... may remain" in line


def test_left_leases_are_named_by_mount_and_count() -> None:
    report = RevokeReport(True, (MountOutcome("", "database/", "database", 5, 2, "OpenBao refused ..."),
                                 MountOutcome("team/", "pki/", "pki", 1, 0)))
    line = report.leftover_line()
    assert line == ("leases not revoked: database/ 2 of 5 leases (OpenBao refused ...); "
                    "PostgreSQL roles named v-... may remain in the database")
    assert report.revoked == 4 and not report.complete


def test_serving_nodes_counts_unsealed_initialised_ones() -> None:
    assert serving_nodes([None, {"initialized": True, "sealed": True}, {"initialized": True, "sealed": False}]) == 1


@dataclass
class FakeMesh:
    """Answers sys/mounts, LIST sys/leases/lookup/..., revoke-prefix and sys/namespaces from ``leases``."""

    leases: dict[str, set[str]]
    mounts: dict[str, str]
    fail_revoke: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        url = urllib.parse.urlsplit(target)
        path = url.path.removeprefix("/v1/")
        self.calls.append(f"{method} {path}")
        if path == "sys/mounts":
            data = {p: {"type": t} for p, t in self.mounts.items()}
            return 200, {}, json.dumps({"data": data}).encode()
        if path == "sys/namespaces":
            return 404, {}, b'{"errors": []}'
        if path.startswith("sys/leases/lookup/"):
            prefix = path.removeprefix("sys/leases/lookup/")
            keys = set()
            for lease in (x for s in self.leases.values() for x in s):
                if lease.startswith(prefix):
                    rest = lease[len(prefix):]
                    keys.add(rest.split("/")[0] + "/" if "/" in rest else rest)
            if not keys:
                return 404, {}, b'{"errors": []}'
            return 200, {}, json.dumps({"data": {"keys": sorted(keys)}}).encode()
        if path.startswith("sys/leases/revoke-prefix/"):
            mount = path.removeprefix("sys/leases/revoke-prefix/") + "/"
            assert json.loads(body or b"{}") == {"sync": True}
            if mount in self.fail_revoke:
                return 400, {}, b'{"errors": ["failed to revoke entry: pq: connection refused"]}'
            self.leases[mount] = set()
            return 204, {}, b""
        return 404, {}, b'{"errors": []}'

    def close(self) -> None:
        pass


def client_for(fake: FakeMesh) -> EngineClient:
    return EngineClient([ADDR], transport=fake)


def test_every_lease_of_every_lease_mount_is_revoked_with_sync() -> None:
    fake = FakeMesh({"database/": {"database/creds/ro/a", "database/creds/ro/b", "database/creds/rw/c"}},
                    {"database/": "database", "secret/": "kv"})
    lines: list[str] = []
    report = revoke_all(client_for(fake), lambda: "admin-token", progress=lines.append)
    assert report.complete and report.revoked == 3
    assert "POST sys/leases/revoke-prefix/database" in fake.calls
    assert not any("secret/" in c for c in fake.calls)
    assert lines == ["revoking 3 leases of database/", "revoked 3 leases of database/"]


def test_a_mount_without_leases_is_not_revoked() -> None:
    fake = FakeMesh({}, {"database/": "database"})
    report = revoke_all(client_for(fake), lambda: "t")
    assert report.complete and report.mounts == ()
    assert not any("revoke-prefix" in c for c in fake.calls)


def test_a_failed_revocation_is_reported_with_its_count() -> None:
    fake = FakeMesh({"database/": {"database/creds/ro/a", "database/creds/ro/b"}}, {"database/": "database"},
                    fail_revoke={"database/"})
    line = revoke_all(client_for(fake), lambda: "t").leftover_line()
    assert line is not None
    assert line.startswith("leases not revoked: database/ 2 of 2 leases (400 failed to revoke entry")
    assert "connection refused" in line


def test_a_failed_login_means_the_mesh_did_not_answer() -> None:
    def login() -> str:
        raise Unavailable("no OpenBao node could serve POST /v1/auth/userpass/login/admin within 1 s")

    report = revoke_all(client_for(FakeMesh({}, {})), login)
    assert not report.answered
    line = report.leftover_line()
    assert line is not None and "admin login failed: no OpenBao node could serve" in line


def test_the_clients_retry_and_timeout_are_restored() -> None:
    client = client_for(FakeMesh({}, {}))
    retry, timeout = client.retry, client.timeout
    revoke_all(client, lambda: "t", budget=2.0)
    assert (client.retry, client.timeout) == (retry, timeout)

