"""certs rotate-ca on a real transit-sealed mesh, under load: stopped after the trust stage (the interruption), a
standby restarted there and after the leaves were re-issued (each rejoins), run again to the end (it restarts every
node it did not see restarted since the trust stage, for the seal's CA); nothing failed, nothing lost, the new CA
alone verifies every listener, the old one none, and `bao`/hvac work with `vaultmesh env`."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator

import hvac
import pytest

from vaultmesh import pki
from vaultmesh.api.client import EngineClient
from vaultmesh.certs import probe
from vaultmesh.change.rotate_ca import record_file
from vaultmesh.runtime.local import pid_alive
from vaultmesh.waiting import wait_until

from .conftest import MeshHandle, owned_mesh
from .test_certs import LEAVES, Load
from .test_lifecycle import bao, cli_env, run_cli
from .workloads import WriteLoad, mesh_issuer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHandle]:
    with owned_mesh(tmp_path_factory.mktemp("rotate-ca") / "state", "seal:\n  type: transit\n") as handle:
        assert wait_until(lambda: all(r.source == "listener" for r in probe.observe(handle.mesh)
                                      if r.name != "ca"), timeout=20)
        yield handle


def _rotate_ca(handle: MeshHandle, *args: str, ok: bool = True) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-m", "vaultmesh.cli.main", "--dir", str(handle.dir), "certs",
                           "rotate-ca", "--json", *args], capture_output=True, text=True, timeout=120)
    if not ok:
        assert proc.returncode != 0, proc.stdout
        return {"stderr": proc.stderr}
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def _jwt_config(handle: MeshHandle, ca_pem: str) -> None:
    issuer = mesh_issuer(handle)
    handle.client().write("auth/rotjwt/config", {"oidc_discovery_url": issuer.url, "oidc_discovery_ca_pem": ca_pem,
                                                 "bound_issuer": issuer.url})


def _jwt_mount(handle: MeshHandle, ca_pem: str) -> Callable[[], None]:
    """A jwt auth mount trusting the identity issuer through ``ca_pem`` (as ``{{vaultmesh.ca_pem}}`` renders it),
    and a login through it."""
    admin = handle.client()
    admin.write("sys/auth/rotjwt", {"type": "jwt"})
    _jwt_config(handle, ca_pem)
    admin.write("auth/rotjwt/role/w", {"role_type": "jwt", "bound_audiences": ["vaultmesh"], "user_claim": "sub",
                                       "token_policies": ["default"], "token_ttl": "60s"})
    issuer = mesh_issuer(handle)

    def login() -> None:
        c = EngineClient(handle.addrs, ca_file=handle.ca)
        auth = (c.write("auth/rotjwt/login", {"role": "w", "jwt": issuer.token("w")}) or {}).get("auth") or {}
        assert auth.get("client_token"), auth

    login()
    return login


def _verifies(address: str, ca_pem: bytes) -> bool:
    try:
        probe.served_der(address, ssl.create_default_context(cadata=ca_pem.decode()))
    except ssl.SSLError:
        return False
    return True


def _restart(handle: MeshHandle, name: str) -> None:
    """Stop a standby, bring it back (`vaultmesh up` heals it, if the keeper did not first); it must rejoin."""
    node = handle.mesh.layout.node(name)
    pid = int(node.pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not pid_alive(pid), timeout=20)
    run_cli(handle.dir, "up")
    probe_client = EngineClient([node.api_addr], ca_file=handle.ca)

    def joined() -> bool:
        try:
            h = probe_client.health(node.api_addr, timeout=1.0)
        except OSError:
            return False
        return h.get("sealed") is False and h.get("standby") is True

    assert wait_until(joined, timeout=30), node.log_file.read_text()[-2000:]


def _standby(handle: MeshHandle, not_: str = "") -> str:
    c = EngineClient(handle.addrs, ca_file=handle.ca)
    for node in handle.mesh.layout.nodes:
        h = c.health(node.api_addr, timeout=1.0)
        if h.get("standby") is True and node.name != not_:
            return node.name
    raise AssertionError("no standby")


def test_rotate_ca_in_stages_under_load_with_restarts_between_them(mesh: MeshHandle) -> None:
    paths = mesh.mesh.paths
    old_pem = paths.ca_cert.read_bytes()
    old_serial = pki.serial_of(pki.certificates(old_pem)[0])
    login = _jwt_mount(mesh, old_pem.decode())
    with WriteLoad(mesh, "rotca") as load, Load(mesh) as fresh:
        first = _rotate_ca(mesh, "--stop-after", "trust")
        assert first["stage"] == "trust" and first["old_ca"] == old_serial
        new_serial = str(first["new_ca"])
        bundle = [pki.serial_of(c) for c in pki.certificates(paths.ca_cert.read_bytes())]
        assert bundle == [old_serial, new_serial]
        assert record_file(mesh.mesh).exists()
        restarted = _standby(mesh)
        before = mesh.pids()
        _restart(mesh, restarted)  # the bundle on disk, every leaf from the old CA
        mine = mesh.pids()[restarted]

        # the jwt mount trusts the old CA alone: the new one must not sign until it holds the file (as apply does)
        refused = _rotate_ca(mesh, "--stop-after", "reissue", ok=False)
        assert "auth mount rotjwt/ trusts only the old CA" in str(refused["stderr"]), refused
        # the restart stage ran first: every node but the one already restarted since trust, for the seal's CA
        pids = mesh.pids()
        assert pids[restarted] == mine
        assert all(pids[n.name] != before[n.name] for n in mesh.mesh.layout.nodes if n.name != restarted)
        _jwt_config(mesh, paths.ca_cert.read_text())
        middle = _rotate_ca(mesh, "--stop-after", "reissue")
        assert middle["stage"] == "reissue"
        assert {r["name"] for r in middle["rotated"]} == LEAVES | {"seal"}  # type: ignore[attr-defined]
        again = _standby(mesh, not_=restarted)
        _restart(mesh, again)  # every leaf from the new CA, both CAs trusted

        last = _rotate_ca(mesh)
        assert last["stage"] == "done" and last["new_ca"] == new_serial and last["rotated"] == []
        start = len(load.acked)
        assert wait_until(lambda: len(load.acked) >= start + 20, timeout=20)  # the load runs on after it
    assert load.errors == [] and fresh.errors == [], (load.errors[:3], fresh.errors[:3])
    # a client made before the rotation, on a new connection now: it loaded the CA file again
    assert load.client.transport is not None
    load.client.transport.close()
    load.client.write("rotca/after", {"v": "after"})
    assert load.lost() == [] and fresh.unreadable() == []

    new_pem = paths.ca_cert.read_bytes()
    assert [pki.serial_of(c) for c in pki.certificates(new_pem)] == [new_serial]
    assert pki.key_belongs_to(paths.ca_key.read_bytes(), pki.certificates(new_pem)[0])
    assert paths.ca_key.stat().st_mode & 0o777 == 0o600
    assert not record_file(mesh.mesh).exists() and not (paths.ca_cert.parent / "ca-next-key.pem").exists()
    rows = {r.name: r for r in probe.observe(mesh.mesh)}
    for name in LEAVES | {"seal", "entry"}:
        address = rows[name].address
        assert address is not None and rows[name].source == "listener", (name, rows[name].down)
        assert _verifies(address, new_pem) and not _verifies(address, old_pem), name

    env = cli_env(mesh.dir)
    assert env["BAO_CACERT"] == str(paths.ca_cert)
    proc = bao(env, "status", "-format=json")
    assert proc.returncode == 0, proc.stderr
    login()  # the jwt mount (now on both CAs' PEM) still reaches the issuer on its new leaf
    client = hvac.Client(url=env["BAO_ADDR"], token=env["BAO_TOKEN"], verify=env["BAO_CACERT"])
    assert client.sys.read_health_status(method="GET")["sealed"] is False


def test_rotate_ca_sigkilled_mid_way_finishes_when_run_again(mesh: MeshHandle) -> None:
    paths = mesh.mesh.paths
    mesh.client().delete("sys/auth/rotjwt")  # the first test's mount: its CA PEM would stop the sign stage here
    old_pem = paths.ca_cert.read_bytes()
    with WriteLoad(mesh, "rotca-kill") as load:
        proc = subprocess.Popen([sys.executable, "-m", "vaultmesh.cli.main", "--dir", str(mesh.dir), "certs",
                                 "rotate-ca"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen = []
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                seen.append(line)
                if "trusts both CAs" in line:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)  # mid-way: both CAs trusted, every leaf still from the old one
            proc.wait(timeout=30)
        assert any("trusts both CAs" in line for line in seen), seen
        assert record_file(mesh.mesh).exists()
        last = _rotate_ca(mesh)
        assert last["stage"] == "done"
    assert load.errors == [] and load.lost() == []
    new_pem = paths.ca_cert.read_bytes()
    assert len(pki.certificates(new_pem)) == 1 and new_pem != old_pem
    assert not record_file(mesh.mesh).exists()
    rows = {r.name: r for r in probe.observe(mesh.mesh)}
    for name in LEAVES | {"seal", "entry"}:
        address = rows[name].address
        assert address is not None and rows[name].source == "listener", (name, rows[name].down)
        assert _verifies(address, new_pem) and not _verifies(address, old_pem), name
