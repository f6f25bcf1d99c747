"""certs status and certs rotate on a real mesh: read from the listeners, renewed under load with no restart,
resumed after a kill, and renewed by the keeper when a leaf has passed two thirds of its life."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from vaultmesh import pki
from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.certs import probe
from vaultmesh.errors import VaultmeshError
from vaultmesh.fsutil import write_atomic
from vaultmesh.lifecycle import keeper_process
from vaultmesh.render.node import CANARY_MOUNT
from vaultmesh.waiting import wait_until

from .conftest import MeshHandle, owned_mesh

pytestmark = pytest.mark.integration

LEAVES = {"node-1", "node-2", "node-3", "identity", "keeper"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHandle]:
    """One 3-node mesh for the whole file (every test leaves it healthy)."""
    with owned_mesh(tmp_path_factory.mktemp("certs") / "state") as handle:
        # up returns once the nodes are healthy; the keeper's /metrics listens a moment later
        assert wait_until(lambda: all(r.source == "listener" for r in probe.observe(handle.mesh)
                                      if r.name != "ca"), timeout=20)
        yield handle


def _served(handle: MeshHandle) -> dict[str, str]:
    """name -> serial each listener serves now (the CA's from its file)."""
    return {r.name: r.facts.serial for r in probe.observe(handle.mesh) if r.facts is not None}


def _cli(handle: MeshHandle, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vaultmesh.cli.main", "--dir", str(handle.dir), "certs", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_status_reads_every_listener(mesh: MeshHandle) -> None:
    proc = _cli(mesh, "status", "--json")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rows = {r["name"]: r for r in json.loads(out)["certificates"]}
    assert set(rows) == LEAVES | {"entry", "ca"}
    assert {n: rows[n]["down"] for n in LEAVES | {"entry"} if rows[n]["source"] != "listener"} == {}
    assert rows["ca"]["source"] == "file" and rows["ca"]["days_left"] > 3000
    assert rows["node-1"]["days_left"] == pytest.approx(90, abs=1) and "CA" in rows["node-1"]["issuer"]
    # the entry passes TLS through: it serves whichever node leads
    assert rows["entry"]["serial"] in {rows[n]["serial"] for n in ("node-1", "node-2", "node-3")}
    # `status` names the certificate that ends first
    proc = subprocess.Popen([sys.executable, "-m", "vaultmesh.cli.main", "--dir", str(mesh.dir), "status"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "certificates: " in out and " ends first, " in out and "days; `vaultmesh certs status`" in out, out


@dataclass
class Load:
    """Writes and reads through vaultmesh's retrying client while something else happens: a kept-alive
    client on the nodes and one that opens a new connection (a new handshake) through the entry per write."""

    handle: MeshHandle
    stop: threading.Event = field(default_factory=threading.Event)
    acked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, tag: str, fresh: bool) -> None:
        token = self.handle.token()
        addrs = [self.handle.entry] if fresh else self.handle.addrs

        def client() -> EngineClient:
            return EngineClient(addrs, ca_file=self.handle.ca, token=token, retry=RetryPolicy(deadline=15.0))

        c = client()
        i = 0
        while not self.stop.is_set():
            key = f"{CANARY_MOUNT}/data/certs-load/{tag}-{i}"
            try:
                if fresh:
                    c.close()
                    c = client()
                c.write(key, {"data": {"i": i}})
                self.acked.append(key)
                c.read(key)
            except VaultmeshError as err:
                self.errors.append(f"{key}: {err}")
            i += 1
        c.close()

    def __enter__(self) -> Load:
        for tag, fresh in (("kept", False), ("fresh", True)):
            t = threading.Thread(target=self._run, args=(tag, fresh), daemon=True)
            t.start()
            self.threads.append(t)
        wait_until(lambda: len(self.acked) >= 20, timeout=20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def unreadable(self) -> list[str]:
        c = self.handle.client()
        try:
            return [k for k in self.acked if (c.read(k) or {}).get("data", {}).get("data") is None]
        finally:
            c.close()


def test_rotate_under_load_drops_nothing_and_restarts_nothing(mesh: MeshHandle) -> None:
    before, pids = _served(mesh), mesh.pids()
    with Load(mesh) as load:
        start = len(load.acked)
        proc = _cli(mesh, "rotate", "--json")
        out, err = proc.communicate(timeout=60)
        wait_until(lambda: len(load.acked) >= start + 40, timeout=20)  # the load runs on after it
    assert proc.returncode == 0, err
    rotated = {r["name"]: r for r in json.loads(out)["rotated"]}
    assert set(rotated) == LEAVES and all(r["loaded"] for r in rotated.values()), rotated
    after = _served(mesh)
    for name in LEAVES:
        assert after[name] == rotated[name]["new_serial"] != before[name], name
    assert after["entry"] in {after[n] for n in ("node-1", "node-2", "node-3")}
    assert after["ca"] == before["ca"]
    assert load.errors == [], load.errors[:5]
    assert len(load.acked) > start and load.unreadable() == []
    assert mesh.pids() == pids  # no process was restarted
    for node in mesh.mesh.layout.nodes:
        assert node.key_file.stat().st_mode & 0o777 == 0o600


def test_a_rotation_killed_midway_is_finished_by_running_it_again(mesh: MeshHandle) -> None:
    before = _served(mesh)
    proc = _cli(mesh, "rotate")
    assert proc.stderr is not None
    # SIGKILL once the first listener has its new certificate
    for line in proc.stderr:
        if "served (no restart)" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    middle = _served(mesh)
    assert any(middle[n] != before[n] for n in LEAVES) and any(middle[n] == before[n] for n in LEAVES)
    again = _cli(mesh, "rotate", "--json")
    _, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    after = _served(mesh)
    for name in LEAVES:
        assert after[name] != before[name] and after[name] != middle[name], name
        f = probe.file_facts(next(t for t in probe.mesh_targets(mesh.mesh) if t.name == name).cert_file)
        assert f is not None and f.serial == after[name]  # the listener serves what its file holds


def _plant_old_leaf(handle: MeshHandle, name: str) -> str:
    """Give node ``name`` a valid certificate 61 days into a 90-day life (past two thirds), served now."""
    node = handle.mesh.layout.node(name)
    ca = pki.CertPair(handle.mesh.paths.ca_cert.read_bytes(), handle.mesh.paths.ca_key.read_bytes())
    dns, ips = pki.node_cert_names(name)
    pair = pki.issue_server_cert(ca, name, dns_names=dns, ip_addresses=ips,
                                 now=dt.datetime.now(dt.UTC) - dt.timedelta(days=61), days=90)
    write_atomic(node.key_file, pair.key_pem)
    write_atomic(node.cert_file, pair.cert_pem, mode=0o644)
    pid = int(node.pid_file.read_text())
    os.kill(pid, signal.SIGHUP)
    serial = format(pair.cert.serial_number, "x")
    assert wait_until(lambda: _served(handle).get(name) == serial, timeout=10)
    return serial


def test_the_keeper_renews_a_leaf_past_two_thirds_and_exports_its_expiry(mesh: MeshHandle) -> None:
    old = _plant_old_leaf(mesh, "node-2")
    # the keeper looks at the certificates when it starts (then every 5 minutes): restart it
    pid = keeper_process.keeper_pid(mesh.mesh.paths)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: keeper_process.keeper_pid(mesh.mesh.paths) is None, timeout=15)
    keeper_process.start_keeper(mesh.mesh.paths)
    assert wait_until(lambda: _served(mesh).get("node-2") not in (None, old), timeout=30), \
        mesh.mesh.paths.keeper_log.read_text()[-2000:]
    renewed = probe.file_facts(mesh.mesh.layout.node("node-2").cert_file)
    assert renewed is not None and renewed.days_left(dt.datetime.now(dt.UTC)) > 89
    # the gauge: one series per certificate, the renewed one's new not-after
    record = wait_until(lambda: keeper_process.read_status(mesh.mesh.paths), timeout=10)
    assert record is not None and record.metrics
    context = ssl.create_default_context(cafile=mesh.ca)

    def scrape() -> str:
        with urllib.request.urlopen(record.metrics, context=context, timeout=5) as resp:  # type: ignore[arg-type]
            return str(resp.read().decode())

    want = f'vaultmesh_certificate_expiry_timestamp_seconds{{cert="node-2"}} {renewed.not_after.timestamp():.1f}'
    name = want.split(" ")[0]

    def scraped() -> str:  # the series with the renewed value: the keeper's gauge follows its renewal
        text = scrape()
        for line in text.splitlines():
            if line.startswith(name) and abs(float(line.split(" ")[1]) - renewed.not_after.timestamp()) <= 1:
                return text
        return ""

    text = wait_until(scraped, timeout=10) or scrape()
    series = {line.split(" ")[0] for line in text.splitlines()
              if line.startswith("vaultmesh_certificate_expiry_timestamp_seconds{")}
    assert series == {f'vaultmesh_certificate_expiry_timestamp_seconds{{cert="{n}"}}'
                      for n in LEAVES | {"entry", "ca"}}, text
    value = next(float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(name))
    assert value == pytest.approx(renewed.not_after.timestamp(), abs=1)
