"""Taking a mesh's Raft snapshots, shipping and pruning them: the edge (HTTP, processes, disk).

``save`` writes the canary, streams ``GET /v1/sys/storage/raft/snapshot`` (from the leader: a standby would
forward the whole stream) into a temp file beside the destination, verifies it (``archive.verify_file``), names
it ``<UTC stamp>-<index>.snap`` and writes its manifest ``<name>.snap.json``, both 0600 and atomic.
``take_scheduled`` is the keeper's: save, ship with the user's command, prune by ``snapshots.keep``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from vaultmesh.api.admin import retry_while_upgrading
from vaultmesh.api.client import EngineClient
from vaultmesh.errors import EngineError, RuntimeFailure, SnapshotInvalid, StateError, VaultmeshError
from vaultmesh.fsutil import ensure_dir, fsync_dir, write_json
from vaultmesh.lifecycle import mesh as m
from vaultmesh.render.node import CANARY_KEY, CANARY_MOUNT, CANARY_TRANSIT, TRANSIT_KEY
from vaultmesh.snapshot import archive, retention
from vaultmesh.snapshot.archive import Canary, Manifest, sidecar_of

SNAPSHOT_PATH = "sys/storage/raft/snapshot"
STATIC_KEY_ID = "k1"
"""The static seal's ``current_key_id`` as ``render.node`` renders it (a test keeps the two equal)."""

SHIP_TIMEOUT = 600.0
"""Seconds a ship command may run before it (and every process it started) is killed: ten minutes moves a
large snapshot over a slow link; a hung upload must not hold the keeper's snapshot schedule for longer."""

STDERR_LINES = 10
"""Lines of a failed ship command's stderr quoted in its error."""

DOWNLOAD_TIMEOUT = 120.0
"""Seconds of silence allowed per socket read while the snapshot streams: the leader may take a while to start
writing a large one."""

STALE_PART = 3600.0
"""A temp file of an interrupted save older than this is removed by the next scheduled snapshot."""


def folder_of(mesh: m.Mesh, dest: Path | None = None) -> Path:
    """Where ``save`` writes: ``dest``, else ``snapshots.dir`` (relative to the mesh file's folder), else
    ``<state dir>/snapshots``."""
    if dest is not None:
        return Path(dest).expanduser().absolute()
    configured = mesh.spec.snapshots.dir
    if configured is None:
        return mesh.paths.snapshots_dir
    path = Path(configured).expanduser()
    if not path.is_absolute():
        path = Path(mesh.state.get("spec_dir") or mesh.paths.root) / path
    return path.absolute()


def mesh_id(mesh: m.Mesh) -> str:
    """The mesh's id: the sha256 of its CA's public key (SubjectPublicKeyInfo, DER). Unique per mesh and kept for
    its whole life; the netns id is not one (it is a hash of the state dir's path, shared by a mesh made again
    in the same folder)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(mesh.paths.ca_cert.read_bytes())
    except (OSError, ValueError) as err:
        raise StateError(f"cannot read the mesh CA {mesh.paths.ca_cert} ({err})",
                         hint="restore the state dir from a backup") from None
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _fingerprint(path: Path) -> str | None:
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def seal_facts(mesh: m.Mesh) -> tuple[str, str | None, str | None]:
    """(seal type, key id, key fingerprint) for the manifest. Static: ``k1`` and the key file's sha256. Transit:
    the transit key's name on the seal node and the sha256 of the seal node's own key file (the node whose data
    holds that key). KMS: the key id from ``seal.options`` when it has one. Shamir: nothing (the keys are
    people's)."""
    seal = mesh.spec.seal
    if seal.type == "static":
        return "static", STATIC_KEY_ID, _fingerprint(mesh.paths.static_key)
    if seal.type == "transit":
        node = mesh.layout.seal_node
        return "transit", TRANSIT_KEY, _fingerprint(node.dir / "seal.key") if node else None
    if seal.type == "shamir":
        return "shamir", None, None
    options = seal.options or {}
    key = next((str(options[k]) for k in ("kms_key_id", "key_id", "key_name", "crypto_key", "key_label")
                if options.get(k)), None)
    return seal.type, key, None


def _stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def write_canary(client: EngineClient, token: str, now: float) -> Canary | None:
    """Write a fresh nonce to ``vaultmesh-canary/data/canary`` and encrypt it with the transit key ``canary``;
    None when the mesh has no canary mounts (made before them)."""
    nonce = secrets.token_hex(16)
    try:
        resp = retry_while_upgrading(lambda: client.request(
            "POST", f"{CANARY_MOUNT}/data/canary", {"data": {"value": nonce, "time": _iso(now)}}, token=token))
        version = int(((resp.data or {}).get("data") or {})["version"])
        enc = client.request("POST", f"{CANARY_TRANSIT}/encrypt/{CANARY_KEY}",
                             {"plaintext": base64.b64encode(nonce.encode()).decode()}, token=token)
        ciphertext = str(((enc.data or {}).get("data") or {})["ciphertext"])
    except EngineError as err:
        if err.status == 404:  # "no handler for route": the mount is not there
            return None
        raise
    return Canary(nonce, version, ciphertext)


def _leader_first(mesh: m.Mesh, client: EngineClient, token: str) -> list[str]:
    """The mesh's nodes, the leader first: a standby would forward the whole snapshot stream to it."""
    nodes = list(mesh.node_addrs)
    with contextlib.suppress(VaultmeshError):
        leader = str((client.read("sys/leader", token=token) or {}).get("leader_address") or "").rstrip("/")
        if leader in nodes:
            nodes.remove(leader)
            nodes.insert(0, leader)
    return nodes


def _prepare(folder: Path, mesh: m.Mesh) -> None:
    """The state dir's own snapshot folder is made 0700; another folder is made 0700 when missing and left as
    it is otherwise (it may be a mounted volume the user set up)."""
    if folder == mesh.paths.snapshots_dir:
        ensure_dir(folder)
    elif not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        os.chmod(folder, 0o700)
    elif not folder.is_dir():
        raise StateError(f"{folder} is not a folder; snapshots cannot be written there",
                         hint="give another --to, or fix snapshots.dir in the mesh file")


def _place(tmp: Path, folder: Path, stamp: str, index: int) -> Path:
    """Give the verified temp file its name without replacing anything (two saves of one second and index)."""
    for n in range(1, 1000):
        final = folder / (f"{stamp}-{index}.snap" if n == 1 else f"{stamp}-{index}-{n}.snap")
        if sidecar_of(final).exists():
            continue
        try:
            os.link(tmp, final)
        except FileExistsError:
            continue
        except OSError:  # a filesystem without hard links
            if final.exists():
                continue
            os.replace(tmp, final)
        else:
            os.unlink(tmp)
        fsync_dir(folder)
        return final
    raise StateError(f"{folder} already holds 999 snapshots named {stamp}-{index}")


def save(mesh: m.Mesh, *, dest: Path | None = None, reason: str = "manual") -> Manifest:
    """Take one snapshot of ``mesh`` into ``dest`` (default: ``folder_of``): canary, download, verify, name,
    manifest. A snapshot that fails verification is deleted and ``SnapshotInvalid`` raised."""
    folder = folder_of(mesh, dest)
    _prepare(folder, mesh)
    ident = mesh_id(mesh)
    seal, key_id, fingerprint = seal_facts(mesh)
    with mesh.client() as client:
        token = m.admin_token(mesh, client)
        taken = time.time()
        canary = write_canary(client, token, taken)
        version = str((client.request("GET", "sys/seal-status", token=None).data or {}).get("version") or "")
        nodes = _leader_first(mesh, client, token)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".snapshot-", suffix=".part")
        tmp = Path(name)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                client.download(SNAPSHOT_PATH, f, token=token, nodes=nodes, timeout=DOWNLOAD_TIMEOUT)
                f.flush()
                os.fsync(f.fileno())
            try:
                meta = archive.verify_file(tmp)
            except SnapshotInvalid as err:
                raise SnapshotInvalid(f"the snapshot OpenBao sent failed verification and was deleted: "
                                      f"{err.message}", check=err.check,
                                      hint="try again; if it fails again, look at the nodes' bao.log") from None
            final = _place(tmp, folder, _stamp(taken), meta.index)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    manifest = Manifest(mesh=ident, name=mesh.spec.name, index=meta.index, term=meta.term, version=version,
                        seal=seal, key_id=key_id, key_fingerprint=fingerprint, time=taken, time_iso=_iso(taken),
                        size=meta.size, sha256=meta.sha256, reason=reason, canary=canary, path=final)
    write_json(sidecar_of(final), manifest.to_json())
    return manifest


# -- listing -------------------------------------------------------------------------------------------------

def listing(mesh: m.Mesh | None, folder: Path | None = None) -> list[Manifest]:
    """The snapshots in ``folder`` (default: ``mesh``'s) that have a readable manifest and whose file is there,
    oldest first, newest last. With a ``mesh``, only its own (a shared folder may hold other meshes')."""
    if folder is None:
        if mesh is None:
            raise ValueError("listing needs a mesh or a folder")
        folder = folder_of(mesh)
    ident = mesh_id(mesh) if mesh is not None else None
    found = []
    for sidecar in folder.glob("*.snap.json"):
        try:
            manifest = archive.read_manifest(sidecar)
        except SnapshotInvalid:
            continue
        if (ident is None or manifest.mesh == ident) and manifest.path is not None and manifest.path.is_file():
            found.append(manifest)
    return sorted(found, key=lambda x: (x.time, str(x.path)))


def latest(folder: Path) -> Path | None:
    """The newest snapshot in ``folder``: by its manifest's time, else (no manifest at all) the newest ``.snap``
    file by modification time; None when there is none."""
    found = listing(None, folder)
    if found:
        return found[-1].path
    files = [p for p in folder.glob("*.snap") if p.is_file()]
    return max(files, key=lambda p: (p.stat().st_mtime, p.name)) if files else None


# -- the keeper's schedule -----------------------------------------------------------------------------------

def _tail(data: bytes | None) -> str:
    lines = (data or b"").decode(errors="replace").splitlines()[-STDERR_LINES:]
    return "\n".join(line[:300] for line in lines) or "(nothing on stderr)"


def ship(command: Sequence[str], path: Path, *, timeout: float = SHIP_TIMEOUT) -> str:
    """Run ``command + [path]`` (no shell; in its own process group, all killed after ``timeout``); returns one
    sentence. A non-zero exit, a timeout or a missing program is a ``RuntimeFailure`` naming the program, the exit
    code and the last lines of its stderr."""
    argv = [*command, str(path)]
    program = command[0]
    where = f"the snapshot stays at {path}"
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, cwd=path.parent)
    except OSError as err:
        raise RuntimeFailure(f"ship command {program!r} could not be started ({err.strerror or err}); {where}",
                             hint="fix snapshots.ship in the mesh file: a list of words, the program first") from None
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise RuntimeFailure(f"ship command {program!r} did not finish within {timeout:g} s and was killed; {where}; "
                             f"last lines of its stderr:\n{_tail(err)}") from None
    if proc.returncode != 0:
        code = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited {proc.returncode}"
        raise RuntimeFailure(f"ship command {program!r} {code}; {where}; last lines of its stderr:\n{_tail(err)}")
    return f"shipped {path.name} with {program}"


def prune(mesh: m.Mesh, *, now: float, folder: Path | None = None, spare: Path | None = None) -> list[str]:
    """Delete this mesh's snapshots that ``snapshots.keep`` no longer keeps (each .snap with its .json; never
    ``spare``, the one just taken), and temp files of interrupted saves; returns what was done."""
    folder = folder or folder_of(mesh)
    doomed = [x for x in retention.due(listing(mesh, folder), mesh.spec.snapshots.keep, now) if x.path != spare]
    for manifest in doomed:
        assert manifest.path is not None
        with contextlib.suppress(FileNotFoundError):
            manifest.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            sidecar_of(manifest.path).unlink()
    for part in folder.glob(".snapshot-*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > STALE_PART:
                part.unlink()
    if not doomed:
        return []
    keep = mesh.spec.snapshots.keep
    rule = " and ".join(([f"the newest {keep.count}"] if keep.count is not None else [])
                        + ([f"none older than {keep.age:g} s"] if keep.age is not None else []))
    names = ", ".join(x.path.name for x in doomed if x.path)
    return [f"removed {len(doomed)} snapshot{'s' if len(doomed) > 1 else ''} (keep: {rule}): {names}"]


def take_scheduled(mesh: m.Mesh, *, now: float | None = None) -> tuple[Manifest, list[str]]:
    """The keeper's snapshot: ``save(reason="schedule")``, ship it (``snapshots.ship``), prune by
    ``snapshots.keep`` at ``now``. Returns the manifest and a sentence per thing done. A failed ship raises
    ``RuntimeFailure`` after the prune (the new snapshot stays, and is never pruned by its own run)."""
    manifest = save(mesh, reason="schedule")
    assert manifest.path is not None
    done = [f"snapshot {manifest.path} taken: index {manifest.index}, {manifest.size} bytes"
            + ("" if manifest.canary else " (no canary: this mesh has no vaultmesh-canary/ mount)")]
    failed: RuntimeFailure | None = None
    if mesh.spec.snapshots.ship:
        try:
            done.append(ship(mesh.spec.snapshots.ship, manifest.path))
        except RuntimeFailure as err:
            failed = err
    done += prune(mesh, now=time.time() if now is None else now, folder=manifest.path.parent,
                  spare=manifest.path)
    if failed is not None:
        also = "".join(f"\n(also done: {s})" for s in done[1:])
        raise RuntimeFailure(f"{failed.message}{also}", hint=failed.hint)
    return manifest, done
