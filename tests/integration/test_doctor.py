"""`vaultmesh doctor` and `vaultmesh audit report` on a real mesh: a fresh default mesh has no failed check (only
the documented single-host warnings), and breaking the mesh on purpose turns the checks that watch it; the audit
report names a workload's login and reads, what it was denied, and repeated failed logins."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from vaultmesh.errors import EngineError, PermissionDenied
from vaultmesh.snapshot import save as snap
from vaultmesh.waiting import wait_until

from .conftest import MeshHandle
from .test_lifecycle import run_cli
from .workloads import apply_file

pytestmark = pytest.mark.integration

EXPECTED_WARNINGS = {"nodes.hosts", "seal.auto", "auth.roles", "audit.second", "monitoring.alerts",
                     "snapshots.recent", "drill.passed", "load.tested"}
"""A default mesh on one machine: one host, a static key beside the data, no workload roles yet, one audit
file, no Prometheus, no snapshot or drill yet, no load test."""


def status_doc(handle: MeshHandle) -> dict[str, Any]:
    return json.loads(run_cli(handle.dir, "status", "--json", check=False).stdout)


def doctor(handle: MeshHandle) -> tuple[int, dict[str, dict[str, str]]]:
    proc = run_cli(handle.dir, "doctor", "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, {c["id"]: c for c in json.loads(proc.stdout)["checks"]}


def test_doctor_passes_a_fresh_mesh_and_fails_what_is_broken(make_mesh: Callable[..., MeshHandle]) -> None:
    handle = make_mesh("monitoring: auto\n")  # the default: the keeper runs Prometheus where it is installed
    prometheus = shutil.which("prometheus") is not None
    if prometheus:  # every target up through its HTTPS API, verified with the mesh CA
        url = wait_until(lambda: status_doc(handle)["monitoring"]["prometheus_url"], timeout=20)
        assert url and url.startswith("https://127.0.0.1:")

        def targets() -> list[dict[str, Any]] | None:
            ctx = ssl.create_default_context(cafile=handle.ca)
            try:
                with urllib.request.urlopen(f"{url}/api/v1/targets", context=ctx, timeout=5) as resp:
                    found = json.load(resp)["data"]["activeTargets"]
            except OSError:  # not listening yet (a failed TLS verification would say so at the deadline)
                return None
            return found if len(found) == 5 and all(t["health"] == "up" for t in found) else None

        assert wait_until(targets, timeout=30), "not every target is up"
    code, checks = doctor(handle)
    assert len(checks) >= 15
    assert code == 0 and [i for i, c in checks.items() if c["status"] == "fail"] == []
    assert {i for i, c in checks.items() if c["status"] == "warn"} <= EXPECTED_WARNINGS
    assert checks["core.dumps"]["status"] == "pass" and checks["tokens.root"]["status"] == "pass"
    assert checks["versions.match"]["status"] == "pass" and checks["nodes.healthy"]["status"] == "pass"
    assert checks["monitoring.alerts"]["status"] == ("pass" if prometheus else "warn")

    # a snapshot: the check passes; the newest damaged: a fail naming the offline check
    manifest = snap.save(handle.mesh)
    assert manifest.path is not None
    assert doctor(handle)[1]["snapshots.recent"]["status"] == "pass"
    with open(manifest.path, "r+b") as f:
        f.seek(manifest.size // 2)
        byte = f.read(1)
        f.seek(manifest.size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    code, checks = doctor(handle)
    assert code == 1 and checks["snapshots.recent"]["status"] == "fail"
    assert "offline check" in checks["snapshots.recent"]["message"]

    # a secret file readable by others
    password = handle.mesh.paths.admin_password
    os.chmod(password, 0o644)
    try:
        code, checks = doctor(handle)
        assert code == 1 and checks["files.modes"]["status"] == "fail"
        assert str(password) in checks["files.modes"]["message"] and checks["files.modes"]["fix"]
    finally:
        os.chmod(password, 0o600)

    # a role whose tokens live for the system default
    admin = handle.client()
    admin.write("sys/auth/jwt-doctor", {"type": "jwt"})
    admin.write("auth/jwt-doctor/config", {"jwt_validation_pubkeys": [handle.mesh.paths.ca_cert.read_text()]})
    admin.write("auth/jwt-doctor/role/forever", {"role_type": "jwt", "user_claim": "sub",
                                                 "bound_audiences": ["x"], "token_policies": ["default"]})
    code, checks = doctor(handle)
    assert code == 1 and checks["tokens.ttl"]["status"] == "fail" and "jwt-doctor/role/forever" in \
        checks["tokens.ttl"]["message"]
    assert checks["auth.roles"]["status"] == "pass"


def test_the_audit_report_names_who_read_and_who_was_denied_what(make_mesh: Callable[..., MeshHandle]) -> None:
    handle = make_mesh()
    admin = handle.client()
    apply_file(handle, admin, "drill", env={"TEST_DRILL_REGION": "eu-north-1"})
    jwt = run_cli(handle.dir, "identity", "issue", "--workload", "audit-batch", "--audience",
                  "vaultmesh-drill").stdout.strip()
    anonymous = handle.mesh.client(token="")
    token = anonymous.write("auth/jwt-drill/login", {"role": "batch", "jwt": jwt})["auth"]["client_token"]
    workload = handle.mesh.client(token=token)
    assert workload.read("secret-drill/data/jobs/nightly") is not None
    with pytest.raises(PermissionDenied):
        workload.read("sys/mounts")
    for _ in range(3):
        with pytest.raises(EngineError):
            anonymous.write("auth/jwt-drill/login", {"role": "batch", "jwt": "not-a-jwt"})
    proc = run_cli(handle.dir, "audit", "report", "--since", "10m", "--json")
    doc = json.loads(proc.stdout)
    who = next(i for i in doc["identities"] if "audit-batch" in i["who"])
    assert who["role"] == "batch" and who["logins"] == 1 and who["denied"] == 1
    assert any(d["path"] == "sys/mounts" and "audit-batch" in d["who"] for d in doc["denied"])
    assert any(f["path"] == "auth/jwt-drill/login" and f["count"] >= 3 for f in doc["auth_failures"])
    assert {"who": who["who"], "path": "secret-drill/data/jobs/nightly", "reads": 1} in doc["compliance"]
    assert jwt not in proc.stdout and token not in proc.stdout  # nothing in clear
    table = run_cli(handle.dir, "audit", "report")
    assert "denied: 1" in table.stdout and "sys/mounts" in table.stdout
