"""``runtime: ssh`` on the lab: three local hosts (network namespaces with their own sshd and supervisord), the mesh
pushed to them over SSH with host keys verified, run by each host's supervisor. Bring-up, an idempotent second
``up``, a file changed on one host pushed back with only that node restarted, a node killed on its host and back,
a host cut off by its link and mended, ``apply`` and a ``vaultmesh run`` workload from the root namespace, and
``destroy`` leaving nothing on the hosts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.polling import eventually
from vaultmesh.api.client import RetryPolicy
from vaultmesh.errors import InvalidRequest
from vaultmesh.hosts import runtime as hosts
from vaultmesh.hosts import service
from vaultmesh.lab import LabRecord, cut, lab_down, lab_up, mend, unavailable
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.status import status, status_json
from vaultmesh.lifecycle.up import destroy, down, up
from vaultmesh.reconcile.apply import apply
from vaultmesh.spec.load import load_spec, parse_spec

from .conftest import MeshHandle
from .workloads import mesh_issuer

pytestmark = pytest.mark.integration


@dataclass
class HostsMesh:
    lab: LabRecord
    handle: MeshHandle
    seconds: float
    mesh_file: Path
    """The lab's mesh file with every host's engine at OpenBao 2.6.2 (the upgrade test moves them to 2.7.2)."""

    @property
    def mesh(self) -> m.Mesh:
        return m.open_mesh(self.handle.dir)

    def up(self) -> list[str]:
        said: list[str] = []
        spec, text = load_spec(self.mesh_file)
        up(self.handle.dir, spec, text, spec_dir=self.mesh_file.parent, timeout=120, progress=said.append)
        return said

    def doc(self) -> dict:
        mesh, view, addr = status(self.handle.dir)
        return status_json(mesh, view, addr)

    def pids(self) -> dict[str, int | None]:
        return {n.name: hosts.pid(n) for n in self.mesh.layout.nodes}


@pytest.fixture(scope="module")
def on_hosts(tmp_path_factory: pytest.TempPathFactory, old_engine: str) -> Iterator[HostsMesh]:
    why = unavailable()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("hosts")
    lab_dir, state = base / "lab", base / "state"
    try:
        record = lab_up(lab_dir, 3)
        doc = yaml.safe_load(Path(record.mesh_file).read_text())
        for host in doc["hosts"]:
            host["engine"] = old_engine  # the hosts share this machine's files: one path serves all three
        doc["entry"] = {"hosts": ["h1"]}  # the entry runs on h1, under its supervisor
        mesh_file = lab_dir / "mesh-2.6.2.yaml"
        mesh_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        spec, text = load_spec(mesh_file)
        t0 = time.monotonic()
        result = up(state, spec, text, spec_dir=lab_dir, timeout=120)
        seconds = time.monotonic() - t0
        print(f"zero to healthy on 3 lab hosts over SSH: {seconds:.1f} s")
        yield HostsMesh(record, MeshHandle(state, result.mesh), seconds, mesh_file)
    finally:
        try:
            if m.exists(state):
                destroy(state)
        finally:
            lab_down(lab_dir)


def test_every_node_runs_on_its_own_host_under_its_supervisor(on_hosts: HostsMesh) -> None:
    doc = on_hosts.doc()
    assert doc["healthy"], doc
    by_name = {n["name"]: n for n in doc["nodes"]}
    for node, host in zip(on_hosts.mesh.layout.nodes, on_hosts.lab.hosts, strict=True):
        assert by_name[node.name]["host"] == host.name
        assert by_name[node.name]["api_addr"] == f"https://{host.address}:8200"
        assert by_name[node.name]["pid"] == hosts.pid(node)
        program = Path(service.program_file(node, "supervisor"))
        assert program.is_file() and program.stat().st_mode & 0o777 == 0o600
        key = Path(service.node_dir(node)) / "tls/key.pem"
        assert key.stat().st_mode & 0o777 == 0o600
        assert (Path(service.node_dir(node)) / "env").read_bytes() == b""  # the handed password is gone
    assert {h["zone"] for h in doc["nodes"]} == {"zone-a", "zone-b", "zone-c"}
    h1 = on_hosts.lab.hosts[0]
    assert doc["entry"]["running"] and doc["entry"]["routing"]
    assert doc["entry"]["address"].startswith(f"https://{h1.address}:")
    assert hosts.entry_pid(on_hosts.mesh.layout.entry_hosts[0]) is not None


def _host_files(on_hosts: HostsMesh) -> dict[str, int]:
    files = {}
    for node in on_hosts.mesh.layout.nodes:
        for path in [*(f.path for f in hosts.local_bundle(node, on_hosts.mesh.paths, static_seal=True)),
                     service.program_file(node, "supervisor"), service.env_file(node)]:
            files[path] = os.stat(path).st_mtime_ns
    return files


def test_a_second_up_with_nothing_changed_writes_nothing_and_restarts_nothing(on_hosts: HostsMesh) -> None:
    before, files = on_hosts.pids(), _host_files(on_hosts)
    said = on_hosts.up()
    assert on_hosts.pids() == before
    assert _host_files(on_hosts) == files
    assert not [line for line in said if "pushed" in line or "restarted" in line or "started" in line], said


def test_a_file_changed_on_one_host_is_pushed_back_and_only_that_node_restarts(on_hosts: HostsMesh) -> None:
    before = on_hosts.pids()
    node = on_hosts.mesh.layout.node("node-2")
    config = Path(service.node_dir(node)) / "config.hcl"
    config.write_text(config.read_text() + "\n# edited by hand\n")
    said = on_hosts.up()
    after = on_hosts.pids()
    assert after["node-2"] != before["node-2"]
    assert {k: v for k, v in after.items() if k != "node-2"} == {k: v for k, v in before.items() if k != "node-2"}
    assert "edited by hand" not in config.read_text()
    assert any("pushed 1 file(s) of node-2" in line for line in said), said
    assert on_hosts.doc()["healthy"]


def test_a_node_killed_on_its_host_is_restarted_by_its_supervisor(on_hosts: HostsMesh) -> None:
    node = on_hosts.mesh.layout.node("node-3")
    killed = hosts.kill(node, "KILL")
    assert killed is not None
    eventually(lambda: hosts.pid(node) not in (None, killed), timeout=30)
    eventually(lambda: on_hosts.doc()["healthy"], timeout=60)


def test_the_leader_killed_on_its_host_fails_over_to_another_host(on_hosts: HostsMesh) -> None:
    import signal

    from vaultmesh.chaos.inject import leader, signal_nodes

    mesh = on_hosts.mesh
    old = eventually(lambda: leader(mesh), timeout=30)
    injected = signal_nodes([old], signal.SIGKILL)
    t0 = time.monotonic()
    new = eventually(lambda: (n := leader(mesh)) is not None and n.name != old.name and n, timeout=60,
                     interval=0.05)
    print(f"failover across hosts: {old.name} ({old.remote.host if old.remote else '?'}) killed, "
          f"{new.name} leads after {time.monotonic() - t0:.1f} s")
    assert injected.nodes == (old.name,)
    eventually(lambda: on_hosts.doc()["healthy"], timeout=90, interval=0.5)  # its supervisor restarts it


def test_a_service_stopped_on_its_host_is_started_again_by_the_keeper(on_hosts: HostsMesh) -> None:
    node = on_hosts.mesh.layout.node("node-1")
    assert hosts.stop(node)
    assert hosts.pid(node) is None
    eventually(lambda: hosts.pid(node) is not None, timeout=60, interval=0.5)  # its heal, over SSH
    eventually(lambda: on_hosts.doc()["healthy"], timeout=60, interval=0.5)


def test_a_host_cut_off_by_its_link_leaves_a_writable_mesh_and_comes_back(on_hosts: HostsMesh) -> None:
    lab_dir = Path(on_hosts.lab.dir)
    cut(lab_dir, "h3")
    try:
        doc = on_hosts.doc()
        node3 = next(n for n in doc["nodes"] if n["name"] == "node-3")
        assert not node3["running"] and "h3" in (node3["error"] or ""), node3
        client = on_hosts.handle.client(retry=RetryPolicy(deadline=20.0))
        client.write("cubbyhole/cut", {"ok": "1"})
        client.close()
    finally:
        mend(lab_dir, "h3")
    eventually(lambda: on_hosts.doc()["healthy"], timeout=60)


WORKLOAD = """\
version: 1
policies:
  hosts-batch: |
    path "secret-hosts/data/jobs/*" { capabilities = ["read"] }
auth:
  jwt-hosts:
    type: jwt
    config:
      oidc_discovery_url: "{{vaultmesh.issuer_url}}"
      oidc_discovery_ca_pem: "{{vaultmesh.ca_pem}}"
      bound_issuer: "{{vaultmesh.issuer_url}}"
    roles:
      batch:
        role_type: jwt
        user_claim: sub
        bound_audiences: [vaultmesh-hosts]
        token_policies: [hosts-batch]
        token_ttl: 1m
        token_max_ttl: 10m
secrets:
  secret-hosts:
    type: kv
    version: 2
"""


def test_apply_and_a_workload_from_the_root_namespace(on_hosts: HostsMesh, tmp_path: Path) -> None:
    handle = on_hosts.handle
    admin = handle.client()
    spec = parse_spec(WORKLOAD, source="hosts-workload.yaml")
    result = apply(on_hosts.mesh, admin, spec, base_dir=tmp_path, env={})
    assert result is not None
    def seeded() -> bool:  # a new KV v2 mount answers 400 until its metadata upgrade is done, a second or so
        try:
            admin.write("secret-hosts/data/jobs/nightly", {"data": {"api_token": "from-the-hosts"}})
        except InvalidRequest:
            return False
        return True

    eventually(seeded, timeout=30, interval=0.2)
    identity = tmp_path / "job.jwt"
    identity.write_text(mesh_issuer(handle).token("nightly", audience="vaultmesh-hosts"))
    out = tmp_path / "seen"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_", "VAULTMESH_"))}
    env["BAO_CACERT"] = handle.ca
    proc = subprocess.run(
        [sys.executable, "-m", "vaultmesh.workload.cli", "run", "--role", "batch", "--auth-mount", "jwt-hosts",
         "--addr", ",".join(handle.addrs), "--identity-file", str(identity),
         "--secret-file", "api=kv:secret-hosts/jobs/nightly#api_token", "--", sys.executable, "-c",
         f"import os; open({str(out)!r}, 'w').write(open(os.environ['VAULTMESH_SECRETS_DIR'] + '/api').read())"],
        capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "from-the-hosts"
    admin.close()



def test_certs_rotate_pushes_each_new_leaf_to_its_host_and_reloads_it_with_no_restart(on_hosts: HostsMesh) -> None:
    from vaultmesh.certs.probe import served_or_why
    from vaultmesh.certs.rotate import rotate

    mesh = on_hosts.mesh
    before = on_hosts.pids()
    with m.locked(mesh.paths.root):
        done = rotate(mesh, only=[n.name for n in mesh.layout.nodes])
    assert len(done) == 3 and all(r.loaded for r in done), done
    for r, node in zip(done, mesh.layout.nodes, strict=True):
        facts, why = served_or_why(node.api_addr.removeprefix("https://"), mesh.paths.ca_cert, "localhost")
        assert facts is not None and facts.serial == r.new, why
    assert on_hosts.pids() == before


def test_a_snapshot_of_a_mesh_on_hosts_is_taken_and_verified(on_hosts: HostsMesh) -> None:
    from vaultmesh.snapshot.save import save

    manifest = save(on_hosts.mesh, reason="test")
    assert manifest.canary is not None and manifest.index > 0


def test_doctor_reads_each_nodes_limits_and_disk_on_its_host(on_hosts: HostsMesh) -> None:
    from vaultmesh.doctor.checks import evaluate
    from vaultmesh.doctor.gather import gather

    facts = gather(on_hosts.handle.dir)
    assert all(n.core_limit == 0 and n.data_fstype and n.data_free for n in facts.nodes), facts.nodes
    found = {f.id: f.status for f in evaluate(facts)}
    assert found["core.dumps"] == "pass" and found["nodes.hosts"] == "pass", found
    assert found["raft.disk"] != "fail", found


def test_upgrade_over_ssh_moves_every_host_to_the_new_engine_under_load(on_hosts: HostsMesh) -> None:
    from vaultmesh.change.upgrade import upgrade

    from .workloads import WriteLoad

    new = on_hosts.lab.hosts[0].files.engine  # 2.7.2, where the lab installed it (the same file on each host)
    assert {n["version"] for n in on_hosts.doc()["nodes"]} == {"2.6.2"}
    with WriteLoad(on_hosts.handle, "hosts-upgrade-load") as load:
        result = upgrade(on_hosts.handle.dir, str(new))
    assert load.errors == []
    assert load.lost() == []
    assert len(load.leaders) == 2, load.leaders  # exactly one leadership change
    assert result.target == "2.7.2"
    doc = on_hosts.doc()
    assert doc["healthy"] and {n["version"] for n in doc["nodes"]} == {"2.7.2"}
    for node in on_hosts.mesh.layout.nodes:  # each host's service now names the new binary
        assert str(new) in Path(service.program_file(node, "supervisor")).read_text()
    assert not [line for line in on_hosts.up() if "restarted" in line or "started" in line]


def test_rotate_ca_on_hosts_pushes_the_ca_file_at_every_stage(on_hosts: HostsMesh) -> None:
    from vaultmesh import pki
    from vaultmesh.certs.probe import served_or_why
    from vaultmesh.change.rotate_ca import rotate_ca

    mesh = on_hosts.mesh
    old = mesh.paths.ca_cert.read_bytes()
    before = on_hosts.pids()
    rotate_ca(on_hosts.handle.dir, stop_after="trust")
    for node in mesh.layout.nodes:  # both CAs on every host before any leaf comes from the new one
        assert node.remote is not None
        assert (node.remote.mesh_dir / "pki/ca.pem").read_bytes() == mesh.paths.ca_cert.read_bytes() != old
    admin = on_hosts.handle.client()  # the workload test's jwt mount: apply gives it the CA file, both CAs
    apply(mesh, admin, parse_spec(WORKLOAD, source="hosts-workload.yaml"), base_dir=Path(on_hosts.lab.dir), env={})
    admin.close()
    rotate_ca(on_hosts.handle.dir)
    new = mesh.paths.ca_cert.read_bytes()
    assert len(pki.certificates(new)) == 1 and new != old
    for node in mesh.layout.nodes:
        assert node.remote is not None
        assert (node.remote.mesh_dir / "pki/ca.pem").read_bytes() == new  # each host's own copy
        facts, why = served_or_why(node.api_addr.removeprefix("https://"), mesh.paths.ca_cert, "localhost")
        assert facts is not None, why
    assert on_hosts.pids() == before  # the static seal: leaves reloaded, no node restarted
    assert on_hosts.doc()["healthy"]  # the entry on h1 checks its backends with the new CA


def test_down_stops_every_service_and_destroy_leaves_nothing_on_the_hosts(on_hosts: HostsMesh) -> None:
    # the last test of the module: the fixture's own destroy then finds no mesh
    mesh = on_hosts.mesh
    nodes, entry = mesh.layout.nodes, mesh.layout.entry_hosts
    stopped = down(on_hosts.handle.dir)
    assert {"node-1", "node-2", "node-3", "entry", "keeper"} <= set(stopped), stopped
    assert all(hosts.pid(n) is None for n in nodes) and all(hosts.entry_pid(r) is None for r in entry)
    assert all(Path(service.program_file(n, "supervisor")).exists() for n in nodes)  # down keeps everything
    destroy(on_hosts.handle.dir)
    assert not on_hosts.handle.dir.exists()
    for node in nodes:
        assert node.remote is not None
        assert not node.remote.mesh_dir.exists()
        assert not Path(service.program_file(node, "supervisor")).exists()
        assert hosts.pid(node) is None
    for remote in entry:
        assert not Path(service.entry_program_file(remote)).exists() and hosts.entry_pid(remote) is None
