"""``vaultmesh export ansible`` on the lab: three local hosts (network namespaces with their own sshd and
supervisord), the export of the lab's mesh file run by ``ansible-playbook`` over SSH with the hosts' keys checked
(the inventory's known_hosts), to a mesh that serves: every node answers ``sys/health`` over TLS verified with
the mesh CA, one is active, and Raft has three voters (read with the admin login the export gives the operator).
A rerun with nothing changed is measured by ``benchmarks/hosts.py`` (it costs as much as the first run here)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.polling import eventually
from vaultmesh.api.client import make_ssl_context
from vaultmesh.lab import LabRecord, lab_down, lab_up, unavailable
from vaultmesh.layout import ADMIN_USER

pytestmark = pytest.mark.integration

ANSIBLE = shutil.which("ansible-playbook")


@dataclass
class Exported:
    lab: LabRecord
    out: Path
    ca: Path
    first: subprocess.CompletedProcess[str]


def ansible_env(out: Path) -> dict[str, str]:
    """Ansible's scratch (local temp, SSH control sockets) below the export dir, so nothing outlives the test;
    pipelining: fewer SSH round trips per task."""
    return {**os.environ, "ANSIBLE_LOCAL_TEMP": str(out / ".ansible/tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(out / ".ansible/cp"), "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False"}


def run_playbook(out: Path) -> subprocess.CompletedProcess[str]:
    assert ANSIBLE is not None
    return subprocess.run([ANSIBLE, "-i", "inventory.yaml", "site.yaml"], cwd=out, env=ansible_env(out),
                          capture_output=True, text=True, timeout=600)


def close_ssh_masters(out: Path) -> None:
    """The SSH control masters Ansible left (ControlPersist) exit now."""
    for sock in (out / ".ansible/cp").glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"], capture_output=True, timeout=10)


def recap(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """PLAY RECAP as {host: {ok: n, changed: n, failed: n, ...}}."""
    lines = done.stdout.split("PLAY RECAP", 1)[-1].splitlines()[1:]
    return {line.split()[0]: {k: int(v) for k, v in (w.split("=") for w in line.split()[2:])}
            for line in lines if " : " in line}


def request(url: str, ctx: ssl.SSLContext, *, data: dict[str, Any] | None = None,
            token: str | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"X-Vault-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as res:
            return res.status, json.loads(res.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    why = unavailable() or (None if ANSIBLE else "ansible-playbook is not installed (Debian package ansible)")
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("ansible-lab")
    lab_dir, out = base / "lab", base / "export"
    try:
        record = lab_up(lab_dir, 3)
        done = subprocess.run([sys.executable, "-m", "vaultmesh.cli.entry", "export", "ansible",
                               "-f", str(record.mesh_file), "--out", str(out), "--dir", str(base / "no-state")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        h1 = record.hosts[0]
        ca = out / "files" / h1.name / h1.root.lstrip("/") / "var/lib/vaultmesh/lab/pki/ca.pem"
        first = run_playbook(out)
        yield Exported(record, out, ca, first)
    finally:
        try:
            close_ssh_masters(out)
        finally:
            lab_down(lab_dir)


def test_the_playbook_brings_the_lab_hosts_to_a_serving_mesh(exported: Exported) -> None:
    assert exported.first.returncode == 0, exported.first.stdout[-3000:] + exported.first.stderr[-2000:]
    assert set(recap(exported.first)) == {h.name for h in exported.lab.hosts}
    ctx = make_ssl_context(str(exported.ca))
    codes = {}
    for h in exported.lab.hosts:
        codes[h.name] = request(f"https://{h.address}:8200/v1/sys/health", ctx)[0]
    assert sorted(codes.values()) == [200, 429, 429], codes
    active = next(h for h in exported.lab.hosts if codes[h.name] == 200)
    password = (exported.out / "secrets/admin-password").read_text().strip()
    url = f"https://{active.address}:8200/v1"
    status, login = request(f"{url}/auth/userpass/login/{ADMIN_USER}", ctx, data={"password": password})
    assert status == 200, login
    token = login["auth"]["client_token"]

    def voters() -> list[str] | None:
        _, doc = request(f"{url}/sys/storage/raft/configuration", ctx, token=token)
        servers = doc.get("data", {}).get("config", {}).get("servers", [])
        found = sorted(s["node_id"] for s in servers if s.get("voter"))
        return found if len(found) == 3 else None

    assert eventually(voters, timeout=30, interval=0.5) == ["node-1", "node-2", "node-3"]


def test_the_mesh_ca_is_what_verifies_the_nodes(exported: Exported) -> None:
    h2 = exported.lab.hosts[1]
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        request(f"https://{h2.address}:8200/v1/sys/health", ssl.create_default_context())


def test_the_inventory_checks_the_lab_host_keys(exported: Exported) -> None:
    hosts = yaml.safe_load((exported.out / "inventory.yaml").read_text())["all"]["children"]["vaultmesh_lab"]["hosts"]
    for vars_ in hosts.values():
        assert vars_["ansible_ssh_common_args"] == (f"-o UserKnownHostsFile={exported.lab.known_hosts} "
                                                    "-o StrictHostKeyChecking=yes")
