"""Restore a snapshot: into a new mesh (``restore_into``) or into the running one (``restore_in_place``).

A restore into a new mesh (static seal) goes in four phases, each timed in ``RestoreResult.phases``:

  create   a state dir as ``create_mesh`` makes it (fresh PKI and ports) holding the source's seal material: its
           static key, checked against the manifest's fingerprint before anything is written, its audit devices
           (the rendered audit stanza must match the restored audit table) and its ``reconcile/`` records (so
           ``plan`` knows the write-only fields as applied)
  up       node 1 alone, self-initialised: the cluster the snapshot is restored into
  restore  ``sys/storage/raft/snapshot-force`` on it with the snapshot's bytes (verified offline first), waited for
           until it serves the restored storage: the token that sent it is then unknown. OpenBao pauses 5 s after
           applying a restore (``restoreOpDelayDuration``) while it holds its state lock: most of this phase
  restart  the source's admin password replaces the fresh one (the restored userpass user has it; the first
           login rotates it), and ``up`` starts the other nodes, which join the restored cluster, and waits
           healthy (starting the issuer, the entry and the keeper as the mesh file says)

So no node holds pre-restore state afterwards: node 1 re-reads the whole storage after a restore (OpenBao runs
the pre-seal teardown and post-unseal setup of an unseal on the node that restores), and every other node is a
process started after the restore. Restoring into a running 3-node cluster instead and restarting all three
costs ~9 s more (their joining before, and an election after: a restarted Raft follower waits its 3 s heartbeat
timeout). A Shamir mesh goes that longer way (``up`` initialises it, the restore seals it, every node is
restarted and unsealed with the source's key shares), as does ``restore_in_place`` (its standbys would
otherwise serve stale caches).

Restored storage holds the source's request-forwarding identity and, until a leader of the new mesh rewrites
it, the source's leader advertisement: a standby asked to forward in that window would forward to the source's
active node if it can reach it (same machine, no network namespaces). So nothing but ``sys/health``,
``sys/leader`` and the leader itself is asked until every restarted node names a leader inside this mesh
(``leaders_inside``). The restore keeps the new mesh's own Raft configuration (its node addresses): OpenBao's
restore takes the running cluster's configuration, not the snapshot's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.errors import EngineError, NotReady, RuntimeFailure, StateError, VaultmeshError
from vaultmesh.fsutil import write_atomic, write_json
from vaultmesh.layout import NodeLayout, StatePaths
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.up import up
from vaultmesh.render.node import ADMIN_PASSWORD_ENV
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import log_tail, resolve_engine, stop_processes, wait_until
from vaultmesh.snapshot import archive
from vaultmesh.snapshot.archive import Manifest
from vaultmesh.spec.load import parse_spec

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


RESTORABLE_SEALS = ("static", "shamir")
"""Seals a restore supports. A transit-sealed mesh's key lives in its seal node (another OpenBao, with its own
storage and token), a KMS seal's in the cloud: neither is seal material a state dir can hand over."""

RESTORE_TIMEOUT = 60.0
"""Seconds a restore may take before the leader serves it, plus ``RESTORE_PER_MB`` per MB of snapshot."""
RESTORE_PER_MB = 0.5
"""OpenBao restores ~0.2 s per MB on this machine; twice that and more for a loaded one."""
LEADER_TIMEOUT = 60.0
"""Seconds the restarted nodes get to elect a leader inside the mesh and all name it."""

RECONCILE_RECORDS = ("reconcile_hash_key", "reconcile_applied", "reconcile_audit", "reconcile_budgets")
"""What ``apply`` recorded about the source's storage, which a restore brings back: the digest key and the
digests of write-only fields, the declared audit devices (rendered into every node: they must match the restored
audit table) and the lease budgets."""


@dataclass(frozen=True)
class RestoreResult:
    """A restored mesh, healthy, and where the time went."""

    mesh: m.Mesh
    snapshot: Path
    manifest: Manifest
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase, in order: create, up, restore, restart (in place: snapshot, restore, restart)."""
    before: Path | None = None
    """``restore_in_place``: the snapshot of the state it replaced."""


# -- pure --------------------------------------------------------------------------------------------------

def fingerprint(key: bytes) -> str:
    """The fingerprint a manifest records for a static seal key: the sha256 of the key file, hex."""
    return hashlib.sha256(key).hexdigest()


def _bare(digest: str) -> str:
    return digest.strip().lower().removeprefix("sha256:")


def seal_refusal(*, mesh_seal: str, snapshot_seal: str | None, expected: str | None,
                 found: str | None) -> str | None:
    """Why a snapshot cannot be restored with this seal material, or None when it can. Pure.

    ``mesh_seal``: the seal type of the mesh whose material is used; ``snapshot_seal``, ``expected``: the
    manifest's seal type and key fingerprint; ``found``: the fingerprint of the static key at hand."""
    if mesh_seal not in RESTORABLE_SEALS:
        return (f"a {mesh_seal}-sealed mesh cannot be restored by vaultmesh: its seal key is not in its state dir "
                f"(restore supports the {' and '.join(RESTORABLE_SEALS)} seals)")
    if snapshot_seal and snapshot_seal != mesh_seal:
        return f"the snapshot was taken on a {snapshot_seal}-sealed mesh and this mesh's seal is {mesh_seal}"
    if mesh_seal == "static":
        if not expected:
            return "the snapshot's manifest records no seal key fingerprint, so its seal key cannot be checked"
        if found is None or _bare(found) != _bare(expected):
            return (f"the snapshot was sealed with another key (its manifest names the static key "
                    f"sha256:{_bare(expected)[:12]}..., this mesh's is "
                    f"{'missing' if found is None else 'sha256:' + _bare(found)[:12] + '...'}): restoring it would "
                    "leave every node sealed")
    return None


def seal_key_for(mesh: m.Mesh, manifest: Manifest, *, where: str, hint: str) -> bytes | None:
    """The static seal key of ``mesh`` (None for a Shamir mesh) once ``seal_refusal`` finds it can restore the
    snapshot of ``manifest``; else ``StateError`` with ``where: <why>`` and ``hint``, nothing written."""
    seal = mesh.spec.seal.type
    key = mesh.paths.static_key.read_bytes() if seal == "static" and mesh.paths.static_key.exists() else None
    why = seal_refusal(mesh_seal=seal, snapshot_seal=manifest.seal, expected=manifest.key_fingerprint,
                       found=fingerprint(key) if key is not None else None)
    if why:
        raise StateError(f"{where}: {why}", hint=hint)
    return key


def spec_text_with(text: str, changes: Mapping[str, Any]) -> str:
    """The mesh file ``text`` with ``changes`` set, nested mappings merged key by key (``{"entry": {"mode":
    "none"}}`` keeps the other ``entry`` keys). Unchanged text when there is nothing to change. Pure."""
    if not changes:
        return text
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise StateError("the mesh file is not a mapping", hint="check mesh.yaml in the state dir")

    def merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
        for key, value in new.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = dict(value) if isinstance(value, Mapping) else value

    merge(doc, changes)
    return yaml.safe_dump(doc, sort_keys=False)


FRESH_PORTS: dict[str, Any] = {"ports": {"base": None, "entry": None}}
"""A restored mesh runs beside its source on the same machine: it gets ports of its own."""


def leaders_inside(answers: Mapping[str, Mapping[str, Any] | None], cluster_addrs: set[str]) -> bool:
    """Every node answered ``sys/leader`` naming a leader among ``cluster_addrs`` (the mesh's own cluster
    addresses), and exactly one of them is it. Pure."""
    if not answers or any(a is None for a in answers.values()):
        return False
    named = {str(a.get("leader_cluster_address") or "") for a in answers.values() if a is not None}
    selves = [name for name, a in answers.items() if a is not None and a.get("is_self")]
    return len(named) == 1 and named <= cluster_addrs and len(selves) == 1


def restore_deadline(size: int) -> float:
    return RESTORE_TIMEOUT + RESTORE_PER_MB * size / 1e6


# -- the snapshot's file and manifest ------------------------------------------------------------------------

def read_snapshot(path: Path) -> tuple[bytes, Manifest]:
    """The snapshot's bytes and its manifest, verified offline first (structure, checksums, the manifest's size,
    sha256, index and term): ``SnapshotInvalid`` names what is wrong. A restore needs the manifest (its seal key
    fingerprint), so a snapshot without one is refused."""
    if not path.is_file():
        raise StateError(f"no snapshot at {path}", hint="`vaultmesh snapshot list` shows the snapshots")
    manifest = archive.read_manifest(path)
    archive.verify_file(path)
    return path.read_bytes(), manifest


# -- talking to the nodes -------------------------------------------------------------------------------------

def _send(client: EngineClient, method: str, addr: str, path: str, *, token: str | None = None,
          body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """One request to one node, never failing over (a restore must reach the leader it was sent to, and a
    standby must not forward it). Raises OSError when the node does not answer."""
    assert client.transport is not None
    headers = {"Accept": "application/json"}
    if token:
        headers["X-Vault-Token"] = token
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    status, _, raw = client.transport.send(method, addr, f"/v1/{path}", headers, body, timeout)
    return status, raw


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _health(client: EngineClient, node: NodeLayout) -> dict[str, Any] | None:
    try:
        return client.health(node.api_addr, timeout=1.0)
    except (OSError, ValueError):
        return None


def _leads(health: Mapping[str, Any] | None) -> bool:
    return bool(health and health.get("initialized") and health.get("sealed") is False
                and health.get("standby") is False)


def leader_node(mesh: m.Mesh, client: EngineClient) -> NodeLayout:
    """The node that leads now (asked of each node's own ``sys/health``)."""
    for node in mesh.layout.nodes:
        if _leads(_health(client, node)):
            return node
    raise NotReady(f"no node of the mesh in {mesh.paths.root} leads", hint="run `vaultmesh status`")


def start_first_node(mesh: m.Mesh, *, engine: str, timeout: float, progress: Progress = _quiet) -> tuple[m.Mesh, str]:
    """Start node 1 alone with the self-initialisation stanza (as ``up``'s first bring-up does), wait until it
    leads and its bootstrap made the admin login; return the mesh, recorded initialised, and a fresh admin
    token."""
    first = mesh.layout.nodes[0]
    if any(n.netns for n in mesh.layout.nodes):
        from vaultmesh.runtime import netns

        netns.ensure(mesh.layout)
    write_atomic(mesh.paths.admin_password_handed, b"")  # the first login rotates it
    pid = processes.start_node(first, engine, {ADMIN_PASSWORD_ENV: mesh.paths.admin_password.read_text().strip()})
    progress(f"started {first.name} alone on {first.api_addr} (pid {pid}): it initialises a cluster to restore into")
    client = mesh.client(retry=RetryPolicy(deadline=2.0))
    token: list[str] = []

    def ready() -> bool:
        if processes.node_process(first).pid() is None:
            raise RuntimeFailure(f"{first.name} exited right after it was started; last lines of "
                                 f"{first.log_file}:\n{log_tail(first.log_file)}")
        if not _leads(_health(client, first)):
            return False
        try:
            token.append(m.admin_token(mesh, client, fresh=True))
        except VaultmeshError:
            return False  # its bootstrap requests are still running
        return True

    with client:
        if not wait_until(ready, timeout=timeout, interval=0.1):
            raise NotReady(f"{first.name} did not initialise within {timeout:g} s; last lines of {first.log_file}:"
                           f"\n{log_tail(first.log_file)}")
    return m.mark_initialized(mesh), token[-1]


def force_restore(mesh: m.Mesh, data: bytes, *, token: str, shamir: bool = False,
                  progress: Progress = _quiet) -> NodeLayout:
    """Send ``data`` to the leader's ``snapshot-force`` and wait until it serves the restored storage; returns
    the leader. ``token``: an admin token made after the snapshot was taken, so the restored storage does not
    know it: once the leader refuses it, the restore is in place. A Shamir mesh's leader seals itself instead
    (the restored root key needs the snapshot's key shares)."""
    client = mesh.client(retry=RetryPolicy(deadline=10.0))
    with client:
        node = leader_node(mesh, client)
        progress(f"restoring {len(data) / 1e6:.1f} MB into {node.name} (snapshot-force)")
        try:
            status, raw = _send(client, "POST", node.api_addr, "sys/storage/raft/snapshot-force", token=token,
                                body=data, timeout=restore_deadline(len(data)))
        except OSError as err:
            raise NotReady(f"{node.name} did not take the snapshot ({err})",
                           hint="run `vaultmesh status`, then try again") from None
        if status >= 300:
            words = "; ".join(str(e) for e in (_json(raw) or {}).get("errors") or []) or raw[:200].decode(
                errors="replace")
            raise EngineError(status, [words], method="POST", path="/v1/sys/storage/raft/snapshot-force",
                              node=node.api_addr)

        def applied() -> bool:
            health = _health(client, node)
            if health is None or health.get("_status") == 500:
                return False  # applying it: OpenBao holds its state lock, its barrier is in flux
            if health.get("sealed"):
                if shamir:
                    return True
                raise NotReady(f"{node.name} sealed itself after the restore: the snapshot's seal key or root key "
                               f"does not open it; last lines of {node.log_file}:\n{log_tail(node.log_file)}")
            try:
                seen, _ = _send(client, "GET", node.api_addr, "auth/token/lookup-self", token=token, timeout=1.0)
            except OSError:
                return False
            return seen == 403

        if not wait_until(applied, timeout=restore_deadline(len(data)), interval=0.1):
            raise NotReady(f"the restore did not complete on {node.name} within "
                           f"{restore_deadline(len(data)):.0f} s; last lines of {node.log_file}:\n"
                           f"{log_tail(node.log_file)}")
        return node


def restart_nodes(mesh: m.Mesh, *, engine: str, nodes: Sequence[NodeLayout] | None = None, shamir: bool = False,
                  progress: Progress = _quiet) -> None:
    """Stop ``nodes`` (default: every node) and start them again (a Shamir mesh's are unsealed with its key
    shares file), then wait until each names a leader inside this mesh."""
    nodes = list(nodes) if nodes is not None else list(mesh.layout.nodes)
    stop_processes([processes.node_process(n).pid(adopt=True) for n in nodes], timeout=processes.STOP_TIMEOUT)
    for node in nodes:
        processes.wait_ports_free(node)
    for node in nodes:
        processes.start_node(node, engine)
    reads = "they read" if len(nodes) > 1 else "it reads"
    progress(f"restarted {', '.join(n.name for n in nodes)}: {reads} the restored storage afresh")
    with mesh.client(retry=RetryPolicy(deadline=1.0)) as client:
        if shamir:
            _unseal_all(mesh, client, nodes)
        wait_leaders_inside(mesh, client, nodes)


def wait_leaders_inside(mesh: m.Mesh, client: EngineClient, nodes: Sequence[NodeLayout]) -> None:
    """Wait until each of ``nodes`` names the same leader, one of the mesh's own (``leaders_inside``)."""
    inside = {n.cluster_addr for n in mesh.layout.nodes}
    last: dict[str, dict[str, Any] | None] = {}

    def ready() -> bool:
        for node in nodes:
            try:
                status, raw = _send(client, "GET", node.api_addr, "sys/leader", timeout=1.0)
            except OSError:
                last[node.name] = None
                continue
            last[node.name] = _json(raw) if status == 200 else None
        return leaders_inside(last, inside)

    if not wait_until(ready, timeout=LEADER_TIMEOUT, interval=0.05):
        seen = {name: (a or {}).get("leader_cluster_address") or "-" for name, a in last.items()}
        raise NotReady(f"the nodes did not agree on a leader inside the mesh within {LEADER_TIMEOUT:g} s (each "
                       f"names: {seen})", hint=f"see the node logs in {mesh.paths.nodes_dir}")


INSTALLED = b"Installed remote snapshot"
"""What a joining node logs once the leader's Raft snapshot is in its storage (hashicorp/raft's follower)."""


def join_others(mesh: m.Mesh, *, engine: str, timeout: float, progress: Progress = _quiet) -> None:
    """Start every node but node 1, which join the restored cluster, and wait until each is unsealed.

    A joining node gets the restored storage as a Raft snapshot streamed from the leader; a node restarted
    before that snapshot is in (``up`` restarts a joined, sealed node once, to unseal it at once instead of on
    OpenBao's next 5 s retry) keeps a Raft configuration and no data, and never unseals. So each is restarted
    here only once its log says the snapshot is installed, and is otherwise left to unseal itself (its next
    retry), which is also the fallback when a version of OpenBao logs it otherwise."""
    others = list(mesh.layout.nodes[1:])
    offset = {n.name: n.log_file.stat().st_size if n.log_file.exists() else 0 for n in others}
    for node in others:
        processes.start_node(node, engine)
    progress(f"started {', '.join(n.name for n in others)}: they join the restored cluster")
    restarted: set[str] = set()

    def installed(node: NodeLayout) -> bool:
        with open(node.log_file, "rb") as f:
            f.seek(offset[node.name])
            return INSTALLED in f.read()

    with mesh.client(retry=RetryPolicy(deadline=1.0)) as client:
        def unsealed() -> bool:
            waiting = False
            for node in others:
                if (_health(client, node) or {}).get("sealed") is False:
                    continue
                waiting = True
                if processes.node_process(node).pid() is None:
                    raise RuntimeFailure(f"{node.name} exited after it was started; last lines of {node.log_file}:"
                                         f"\n{log_tail(node.log_file)}")
                if node.name not in restarted and installed(node):
                    restarted.add(node.name)
                    stop_processes([processes.node_process(node).pid()], timeout=processes.STOP_TIMEOUT)
                    processes.wait_ports_free(node)
                    processes.start_node(node, engine)
            return not waiting

        if not wait_until(unsealed, timeout=timeout, interval=0.05):
            raise NotReady(f"{', '.join(n.name for n in others)} did not unseal within {timeout:g} s after joining",
                           hint=f"see their logs in {mesh.paths.nodes_dir}")
    if restarted:
        progress(f"restarted {', '.join(sorted(restarted))} once the restored storage was in: a restart unseals "
                 "now instead of on OpenBao's next 5 s retry")


def _unseal_all(mesh: m.Mesh, client: EngineClient, nodes: Sequence[NodeLayout]) -> None:
    """Unseal (restarted) nodes of a Shamir mesh with the key shares file, each once its API answers."""
    keys = json.loads(mesh.paths.shamir_keys.read_text())
    for node in nodes:
        def answers(node: NodeLayout = node) -> bool:
            return bool((_health(client, node) or {}).get("initialized"))

        if not wait_until(answers, timeout=LEADER_TIMEOUT, interval=0.1):
            raise NotReady(f"{node.name} did not answer after its restart; last lines of {node.log_file}:\n"
                           f"{log_tail(node.log_file)}")
        for key in keys["keys_base64"][: keys["threshold"]]:
            client.request("POST", "sys/unseal", {"key": base64.b64decode(key).hex()}, token=None,
                           nodes=[node.api_addr], retry=RetryPolicy(deadline=5.0))


# -- into a new mesh ----------------------------------------------------------------------------------------------

def _copy_private(src: Path, dst: Path) -> bool:
    try:
        data = src.read_bytes()
    except FileNotFoundError:
        return False
    write_atomic(dst, data)
    return True


def _stop_keeper(paths: StatePaths) -> None:
    """The keeper must not heal what a restore is stopping and starting; ``up`` starts it again."""
    pid = processes.keeper_process(paths).pid()
    if pid is not None:
        stop_processes([pid], timeout=processes.STOP_TIMEOUT)


def _hand_admin_password(source: StatePaths, target: StatePaths) -> None:
    """After a restore the storage's admin user has the source's password: the target's file gets it, and the
    marker that makes the next login rotate it (so the two meshes' passwords part ways at once)."""
    write_atomic(target.admin_password, source.admin_password.read_bytes())
    for stale in (target.admin_token, target.admin_password_next):
        stale.unlink(missing_ok=True)
    write_atomic(target.admin_password_handed, b"")


def restore_into(snapshot: Path, target: Path, *, source: Path, progress: Progress = _quiet,
                 spec_changes: Mapping[str, Any] | None = None, timeout: float = 120.0) -> RestoreResult:
    """A new, working mesh in ``target`` from ``snapshot``, taken of the mesh whose state dir is ``source``
    (its seal material and admin password are used). ``spec_changes`` are set in the new mesh's file on top of
    fresh ports (the drill's scratch mesh: network namespaces, no keeper, no entry). Refused, with nothing
    written, when ``target`` holds anything, the seal cannot be restored or the snapshot's key is not the
    source's; returns once the new mesh is healthy."""
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    src = m.open_mesh(source)
    if target.exists() and any(target.iterdir()):
        raise StateError(f"{target} is not empty; a restore makes a new mesh there",
                         hint="name a new folder with --into, or `vaultmesh --dir DIR destroy --yes` first")
    if target.absolute() == source.absolute():
        raise StateError("the snapshot's mesh and the new mesh are the same folder",
                         hint="restore into the running mesh with --force instead of --into")
    data, manifest = read_snapshot(snapshot)
    seal = src.spec.seal.type
    key = seal_key_for(src, manifest, where=f"cannot restore {snapshot}",
                       hint=f"restore with --dir naming the mesh the snapshot was taken of, with its seal key "
                            f"of the snapshot's time in {src.paths.static_key}")
    engine = resolve_engine(src.engine)
    text = spec_text_with(src.paths.spec_file.read_text(), {**FRESH_PORTS, **(spec_changes or {})})
    spec_dir = Path(src.state["spec_dir"]) if src.state.get("spec_dir") else None
    spec = parse_spec(text, source=str(src.paths.spec_file), base_dir=spec_dir or source)

    progress(f"creating the mesh in {target} (fresh PKI and ports, the seal key of {source})")
    mesh = m.create_mesh(target, spec, text, engine=src.engine, spec_dir=spec_dir)
    if key is not None:
        write_atomic(mesh.paths.static_key, key)  # before any node starts: its config names this file
    for record in RECONCILE_RECORDS:
        _copy_private(getattr(src.paths, record), getattr(mesh.paths, record))
    m.render_configs(mesh)  # with the source's audit devices
    phases["create"] = time.monotonic() - t0

    t = time.monotonic()
    if seal == "shamir":  # up initialises it with key shares; the restore seals it; every node restarts
        mesh = up(target, None, "", timeout=timeout, progress=progress).mesh
        _stop_keeper(mesh.paths)
        token = m.admin_token(mesh, fresh=True)
    else:
        mesh, token = start_first_node(mesh, engine=engine.path, timeout=timeout, progress=progress)
    phases["up"] = time.monotonic() - t

    t = time.monotonic()
    force_restore(mesh, data, token=token, shamir=seal == "shamir", progress=progress)
    phases["restore"] = time.monotonic() - t

    t = time.monotonic()
    _hand_admin_password(src.paths, mesh.paths)
    if seal == "shamir":
        write_atomic(mesh.paths.shamir_keys, src.paths.shamir_keys.read_bytes())
        restart_nodes(mesh, engine=engine.path, shamir=True, progress=progress)
    else:  # its Raft TLS keyring is still the fresh cluster's: nodes joining now would get the restored one
        restart_nodes(mesh, engine=engine.path, nodes=mesh.layout.nodes[:1], progress=progress)
        join_others(mesh, engine=engine.path, timeout=timeout, progress=progress)
    mesh = up(target, None, "", timeout=timeout, progress=progress).mesh
    phases["restart"] = time.monotonic() - t

    write_json(mesh.paths.restored_from, {"snapshot": str(snapshot.absolute()), "source": str(source.absolute()),
                                          "restored_at": time.time(), "manifest": manifest.to_json()})
    return RestoreResult(mesh, snapshot, manifest, time.monotonic() - t0, phases)


# -- into the running mesh ----------------------------------------------------------------------------------------

def restore_in_place(root: Path, snapshot: Path, *, progress: Progress = _quiet,
                     timeout: float = 120.0) -> RestoreResult:
    """Restore ``snapshot`` into the running mesh in ``root``: first a snapshot of its current state
    (``before-restore``), then the restore, then every node restarted and the mesh waited healthy. The keeper
    is stopped first (it would restart the nodes being restarted) and started again by ``up``."""
    from vaultmesh.snapshot.save import save

    t0 = time.monotonic()
    phases: dict[str, float] = {}
    mesh = m.open_mesh(root)
    data, manifest = read_snapshot(snapshot)
    seal = mesh.spec.seal.type
    seal_key_for(mesh, manifest, where=f"cannot restore {snapshot} into {root}",
                 hint="restore a snapshot of this mesh, or put back the seal key of the snapshot's time")
    engine = resolve_engine(mesh.engine)
    _stop_keeper(mesh.paths)
    before = save(mesh, reason="before-restore")
    before_path = Path(before.path)
    progress(f"saved the current state first: {before_path}")
    phases["snapshot"] = time.monotonic() - t0

    t = time.monotonic()
    try:
        force_restore(mesh, data, token=m.admin_token(mesh, fresh=True), shamir=seal == "shamir",
                      progress=progress)
    except VaultmeshError as err:
        raise NotReady(f"{err.message}; the state before the restore is in {before_path}", hint=err.hint) from None
    phases["restore"] = time.monotonic() - t

    t = time.monotonic()
    mesh.paths.admin_token.unlink(missing_ok=True)  # a token made after the snapshot is not in it
    restart_nodes(mesh, engine=engine.path, shamir=seal == "shamir", progress=progress)
    mesh = up(root, None, "", timeout=timeout, progress=progress).mesh
    phases["restart"] = time.monotonic() - t
    return RestoreResult(mesh, snapshot, manifest, time.monotonic() - t0, phases, before_path)


def remove_mesh_dir(root: Path) -> list[str]:
    """Stop every process of the mesh in ``root``, delete its network namespaces and its state dir, whatever of
    them exists (a restore that failed half-way leaves some). Returns what was stopped and deleted."""
    gone: list[str] = []
    if m.exists(root):
        with contextlib.suppress(VaultmeshError, OSError):
            layout = m.open_mesh(root).layout
            gone += processes.down(layout)
            if any(n.netns for n in layout.nodes):
                from vaultmesh.runtime import netns

                gone += netns.remove(layout)
    gone += [f"pid {pid}" for pid in _sweep(root)]
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
        gone.append(str(root))
    return gone


def _sweep(root: Path) -> list[int]:
    """Stop any process still working in ``root`` (one whose pid file was never written or was lost)."""
    import psutil

    found = []
    prefix = str(root.absolute())
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd") or ""
        if (cwd == prefix or cwd.startswith(prefix + "/")) and proc.pid != os.getpid():
            found.append(proc.pid)
    if found:
        stop_processes(found, timeout=processes.STOP_TIMEOUT)
    return found
