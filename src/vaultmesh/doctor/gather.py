"""The doctor's edge: read the facts ``checks`` judges from the live mesh (as its admin, reading only) and from
its files and processes. Nothing is written, no process is started or signalled.

API facts cover the root namespace (auth methods, roles, policies, audit devices, root tokens); a mesh that
does not answer the admin login gets ``answering=False`` and those checks become warnings.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from vaultmesh import pki
from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.doctor.checks import DIR_MODE, SECRET_MODE, WORKLOAD_AUTH, Cert, Facts, NodeFacts, Role
from vaultmesh.durations import parse_seconds
from vaultmesh.errors import VaultmeshError
from vaultmesh.layout import StatePaths
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.keeper_process import keeper_pid
from vaultmesh.lifecycle.status import monitoring_json, status
from vaultmesh.lifecycle.view import MeshView
from vaultmesh.reconcile.lint import lint
from vaultmesh.snapshot import archive, save
from vaultmesh.spec.resources import BOOTSTRAP_POLICY, BUILTIN_POLICIES, ResourcesSpec

ROLE_LISTS = {"jwt": "role", "oidc": "role", "approle": "role", "kubernetes": "role", "cert": "certs"}
"""Where each workload auth method lists its roles (below ``auth/<mount>``)."""
MAX_ROLES = 200
MAX_TOKENS = 500
"""At most this many token accessors are looked up for the root-token check (a busy mesh has many)."""
QUICK = RetryPolicy(deadline=5.0)
WHOLE_FILE_CODES = frozenset({"policy-unused"})
"""Lint findings that need the whole mesh file (roles beside policies): the live policies alone would raise them
for every policy."""


def gather(root: Path, *, now: float | None = None) -> Facts:
    now = time.time() if now is None else now
    mesh, view, _ = status(root)
    facts: dict[str, Any] = {"now": now, "dev": mesh.spec.dev, "seal": mesh.spec.seal.type,
                             "failure_tolerance": view.failure_tolerance, "autopilot_healthy": view.autopilot_healthy}
    facts["nodes"] = tuple(_node(mesh, view, node.name) for node in mesh.layout.nodes)
    if mesh.spec.seal.type == "static" and mesh.paths.static_key.exists():
        facts["seal_key_device"] = mesh.paths.static_key.stat().st_dev
    facts["certs"] = tuple(_certs(mesh, dt.datetime.fromtimestamp(now, dt.UTC)))
    facts["keeper_running"] = keeper_pid(mesh.paths) is not None
    facts["keeper_heal"] = mesh.spec.keeper.enabled and mesh.spec.keeper.heal
    facts.update(_api(mesh))
    facts.update(_snapshots(mesh, now))
    facts.update(_drill(mesh))
    facts["modes"] = _modes(mesh.paths, mesh)
    facts["monitoring"] = monitoring_json(mesh)["prometheus_url"]
    try:
        record = json.loads(mesh.paths.load_record.read_text())
        facts.update(load_test=float(record["time"]), load_ok=bool(record["passed"]), load_run=str(record["run"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return Facts(**facts)


def _node(mesh: m.Mesh, view: MeshView, name: str) -> NodeFacts:
    layout = mesh.layout.node(name)
    seen = next(n for n in view.nodes if n.name == name)
    if layout.remote is not None:  # runtime: ssh: the process and the data folder are on its host
        from vaultmesh.hosts import runtime as hosts

        try:
            core_, free_, fstype_, device_ = hosts.disk_and_limits(layout, seen.pid)
        except VaultmeshError:
            core_ = free_ = fstype_ = device_ = None
        return NodeFacts(name=name, zone=layout.zone, host=layout.host, healthy=seen.healthy, version=seen.version,
                         core_limit=core_, data_free=free_, data_fstype=fstype_, data_device=device_)
    core: int | None = None
    if seen.pid:
        try:
            core = psutil.Process(seen.pid).rlimit(psutil.RLIMIT_CORE)[0]
        except (psutil.Error, OSError):
            core = None
    free = fstype = device = None
    if layout.data_dir.exists():
        st = os.statvfs(layout.data_dir)
        free = st.f_bavail / st.f_blocks if st.f_blocks else None
        device = layout.data_dir.stat().st_dev
        fstype = _fstype(layout.data_dir)
    return NodeFacts(name=name, zone=layout.zone, host=layout.host, healthy=seen.healthy, version=seen.version,
                     core_limit=core, data_free=free, data_fstype=fstype, data_device=device)


def _fstype(path: Path) -> str | None:
    real = str(path.resolve())
    best = None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") or "/"
        if (real == mount or real.startswith(mount + "/") or mount == "/") and (
                best is None or len(mount) > len(best.mountpoint)):
            best = part
    return best.fstype if best else None


def _certs(mesh: m.Mesh, now: dt.datetime) -> Iterable[Cert]:
    paths = mesh.paths
    files = [("ca", paths.ca_cert), *((n.name, n.cert_file) for n in mesh.layout.nodes),
             ("issuer", paths.identity_cert), ("keeper", paths.keeper_cert)]
    for name, path in files:
        if path.exists():
            yield Cert(name, pki.days_left(path.read_bytes(), now))


def _api(mesh: m.Mesh) -> dict[str, Any]:
    try:
        client = mesh.client(retry=QUICK)
        client.token = m.admin_token(mesh, client)
        auth = client.read("sys/auth") or {}
        audit = client.read("sys/audit") or {}
    except (VaultmeshError, OSError):
        return {"answering": False}
    auth_mounts = {p: str(v.get("type")) for p, v in (auth.get("data") or auth).items() if isinstance(v, dict)}
    audit_devices = {p: str(v.get("type")) for p, v in (audit.get("data") or audit).items() if isinstance(v, dict)}
    return {"answering": True, "auth_mounts": auth_mounts, "audit_devices": audit_devices,
            "roles": tuple(_roles(client, auth_mounts)), "lint": tuple(_lint(client)),
            "root_tokens": _root_tokens(client)}


def _listed(client: EngineClient, path: str) -> list[str]:
    try:
        return [str(k) for k in client.list(path)]
    except VaultmeshError:
        return []


def _seconds(value: object) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        return float(parse_seconds(value))
    return 0.0


def _roles(client: EngineClient, mounts: dict[str, str]) -> Iterable[Role]:
    count = 0
    for mount, kind in sorted(mounts.items()):
        if kind not in WORKLOAD_AUTH:
            continue
        below = ROLE_LISTS[kind]
        for name in _listed(client, f"auth/{mount}{below}"):
            if count >= MAX_ROLES:
                return
            count += 1
            try:
                data = ((client.read(f"auth/{mount}{below}/{name}") or {}).get("data")) or {}
            except VaultmeshError:
                continue
            yield Role(mount, kind, name, _seconds(data.get("token_ttl") or data.get("ttl")),
                       _seconds(data.get("token_max_ttl") or data.get("max_ttl")))


def _lint(client: EngineClient) -> Iterable[str]:
    policies = {}
    for name in _listed(client, "sys/policies/acl"):
        if name in BUILTIN_POLICIES or name == BOOTSTRAP_POLICY:  # OpenBao's own, and the admin's by design
            continue
        try:
            doc = client.read(f"sys/policies/acl/{name}") or {}
        except VaultmeshError:
            continue
        policies[name] = ((doc.get("data") or {}).get("policy")) or ""
    try:
        spec = ResourcesSpec.model_validate({"policies": policies})
    except ValueError as err:
        yield f"the live policies could not be read as a mesh file's ({str(err).splitlines()[0]})"
        return
    for warning in lint(spec):
        if warning.code in WHOLE_FILE_CODES:
            continue
        yield f"{warning.where}: {warning.message} [{warning.code}]"


def _root_tokens(client: EngineClient) -> int | None:
    accessors = _listed(client, "auth/token/accessors")
    if not accessors:
        return None
    found = 0
    for accessor in accessors[:MAX_TOKENS]:
        try:
            doc = client.write("auth/token/lookup-accessor", {"accessor": accessor}) or {}
        except VaultmeshError:
            continue
        if "root" in ((doc.get("data") or {}).get("policies") or []):
            found += 1
    return found


def _snapshots(mesh: m.Mesh, now: float) -> dict[str, Any]:
    created = mesh.state.get("created")
    age = now - dt.datetime.fromisoformat(created).timestamp() if created else 0.0
    out: dict[str, Any] = {"snapshot_every": mesh.spec.snapshots.every, "mesh_age": age}
    try:
        snaps = save.listing(mesh)
    except (VaultmeshError, OSError):
        snaps = []
    if snaps and snaps[-1].path is not None:
        out["newest_snapshot"] = snaps[-1].time
        try:
            archive.verify_file(snaps[-1].path)
        except VaultmeshError as err:
            out["snapshot_problem"] = str(err).splitlines()[0]
    return out


def _drill(mesh: m.Mesh) -> dict[str, Any]:
    out: dict[str, Any] = {"drill_every": mesh.spec.drills.every}
    try:
        doc = json.loads(mesh.paths.drill_report.read_text())
    except (OSError, ValueError):
        return out
    failed = [f"{c.get('name')}: {c.get('detail')}" for c in doc.get("checks") or [] if c.get("ok") is False]
    out.update(drill_time=doc.get("started_at"), drill_ok=bool(doc.get("ok")), drill_detail="; ".join(failed))
    return out


def _modes(paths: StatePaths, mesh: m.Mesh) -> dict[str, tuple[int, int]]:
    secret = [paths.static_key, paths.shamir_keys, paths.ca_key, paths.admin_password, paths.admin_token,
              paths.seal_token, paths.reconcile_hash_key, paths.identity_key, paths.keeper_key,
              *(n.key_file for n in mesh.layout.nodes)]
    if paths.identity_keys.is_dir():
        secret += [p for p in paths.identity_keys.iterdir() if p.is_file()]
    out = {str(paths.root): (paths.root.stat().st_mode & 0o777, DIR_MODE)}
    for path in secret:
        if path.exists():
            out[str(path)] = (path.stat().st_mode & 0o777, SECRET_MODE)
    return out
