"""``vaultmesh certs rotate-ca`` (the edge, beside the other changes of a running mesh): replace the mesh CA in
stages, each checked (``certs.ca_plan``), under the state lock, with no process restarted and no request failed.

What reads the CA file, and how each one takes the new one (OpenBao 2.7.2, read in its source and checked on a
running mesh):

    a node's retry_join         ``leader_ca_cert_file`` is read when the node joins: a node restarted at any stage
                                reads the file as it is then, and the leader serves a leaf that file verifies
    a node's API listener       serves a leaf; verifies no client certificate (no ``tls_client_ca_file``)
    the transit seal            ``tls_ca_cert`` is read once, at start, and SIGHUP does not reload seals (it
                                reloads listeners, audit, log level, plugins), while the seal's health check
                                encrypts every 10 minutes: each node is restarted once the file holds both CAs
                                (standbys first, the leader last), each settled before the next
    the entry (HAProxy)         ``ca-file`` of its checks is read at start: reloaded (``-sf``) after each change of
                                the file, so it never marks a node down for a leaf of the new CA
    vaultmesh's clients         (the keeper's, ``run``'s, the SDK's, ``vaultmesh env``'s ``bao``/hvac, which read the
                                file per process) a new connection loads the file again when it changed
                                (``api.client.StdlibTransport``)
    jwt/oidc auth mounts        hold the CA PEM in their config (``{{vaultmesh.ca_pem}}``): the new CA does not
                                sign until each holds it (``vaultmesh apply`` renders the file again)

Files: ``pki/rotation.json`` (the two serials and the old CA's certificate, 0600), ``pki/ca-next.pem`` and
``pki/ca-next-key.pem`` (0600) until the new CA signs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vaultmesh import pki
from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.certs import ca_plan as cp
from vaultmesh.certs.probe import mesh_targets, running, served_der
from vaultmesh.certs.report import Target
from vaultmesh.certs.rotate import RELOAD_TIMEOUT, Rotated, check_entry, renew
from vaultmesh.change.observe import POLL
from vaultmesh.change.observe import observe as observe_mesh
from vaultmesh.change.plan import Step, refusal
from vaultmesh.change.plan import holds as holds_change
from vaultmesh.change.scale import reload_entry
from vaultmesh.errors import NotReady, RuntimeFailure, StateError, UnsafePlan, VaultmeshError
from vaultmesh.fsutil import read_json, write_atomic, write_json
from vaultmesh.layout import NodeLayout
from vaultmesh.lifecycle import mesh as m
from vaultmesh.runtime import processes
from vaultmesh.runtime.local import log_tail, resolve_engine
from vaultmesh.waiting import wait_until

Progress = Callable[[str], None]

READY_TIMEOUT = 20.0
"""Seconds a rotation waits for the mesh to be fit for a change (a node just restarted settles in a few)."""
CA_PEM_FIELDS = ("oidc_discovery_ca_pem", "jwks_ca_pem")


def _quiet(_: str) -> None:
    pass


def record_file(mesh: m.Mesh) -> Path:
    return mesh.paths.ca_rotation


def next_cert(mesh: m.Mesh) -> Path:
    return mesh.paths.ca_next_cert


def next_key(mesh: m.Mesh) -> Path:
    return mesh.paths.ca_next_key


@dataclass(frozen=True)
class RotateCAResult:
    old: str | None
    new: str | None
    steps: tuple[str, ...]
    """What was done, one sentence per step."""
    stage: str
    """The last stage reached: ``done``, or the stage ``--stop-after`` named."""
    seconds: float
    rotated: tuple[Rotated, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"old_ca": self.old, "new_ca": self.new, "stage": self.stage, "steps": list(self.steps),
                "seconds": round(self.seconds, 2), "rotated": [r.to_json() for r in self.rotated]}


# -- observing -----------------------------------------------------------------------------------------------

def _read_record(mesh: m.Mesh) -> dict[str, Any] | None:
    try:
        data = read_json(record_file(mesh))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise StateError(f"cannot read {record_file(mesh)} ({err})",
                         hint="delete it to start the rotation over: `vaultmesh certs rotate-ca`") from None
    return data if isinstance(data, dict) and data.get("old") and data.get("new") else None


def _bundle(mesh: m.Mesh) -> list[x509.Certificate]:
    try:
        return pki.certificates(mesh.paths.ca_cert.read_bytes())
    except (OSError, ValueError):
        return []


def _signer(mesh: m.Mesh, cas: list[x509.Certificate]) -> str | None:
    try:
        key = mesh.paths.ca_key.read_bytes()
        return next((pki.serial_of(c) for c in cas if pki.key_belongs_to(key, c)), None)
    except (OSError, ValueError):
        return None


def _leaf_of(mesh: m.Mesh, t: Target, context: ssl.SSLContext) -> x509.Certificate | None:
    """What ``t`` serves (verified with the CA file), or its file when its process is not running."""
    if t.address is not None and running(mesh, t):
        try:
            return x509.load_der_x509_certificate(served_der(t.address, context, t.server_name))
        except (OSError, ssl.SSLError, ValueError):
            return None
    try:
        return x509.load_pem_x509_certificate(t.cert_file.read_bytes()) if t.cert_file else None
    except (OSError, ValueError):
        return None


def boot_seconds() -> float:
    """Seconds since boot (``CLOCK_BOOTTIME``), the clock of a process's start time in ``/proc``."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float | None:
    """When process ``pid`` started, in ``boot_seconds`` (``/proc/<pid>/stat`` field 22); None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def entry_current(mesh: m.Mesh, record: dict[str, Any] | None) -> bool:
    """No entry runs, or the one that runs was started on the CA file as it is now (its checks read the file at
    start): the rotation's record names the entry pid each reload started and the file's digest then."""
    pid = processes.entry_process(mesh.layout).pid()
    if pid is None:
        return True
    seen = (record or {}).get("entry") or {}
    return seen.get("pid") == pid and seen.get("ca_sha256") == _digest(mesh.paths.ca_cert)


def stale_mounts(configs: dict[str, dict[str, Any]], new_serial: str) -> tuple[str, ...]:
    """The mounts (path -> their config) with a CA PEM that does not hold the CA ``new_serial``. Pure."""
    out = []
    for path, config in sorted(configs.items()):
        for name in CA_PEM_FIELDS:
            pem = str(config.get(name) or "").strip()
            if not pem:
                continue
            try:
                serials = {pki.serial_of(c) for c in pki.certificates(pem.encode())}
            except ValueError:
                serials = set()
            if new_serial not in serials:
                out.append(path)
                break
    return tuple(out)


def _mount_configs(client: EngineClient) -> dict[str, dict[str, Any]]:
    mounts = client.read("sys/auth") or {}
    mounts = mounts.get("data") or mounts
    out = {}
    for path, info in mounts.items():
        if isinstance(info, dict) and info.get("type") in ("jwt", "oidc"):
            out[path] = (client.read(f"auth/{path}config") or {}).get("data") or {}
    return out


def observe(mesh: m.Mesh, client: EngineClient | None = None) -> tuple[cp.CAView, list[Target]]:
    """The trust of ``mesh`` now, and its leaves (in the order they are re-issued: seal node, nodes, issuer,
    keeper). ``client`` (an admin one) reads the auth mounts' CA PEMs, only while a rotation is under way."""
    record = _read_record(mesh)
    cas = _bundle(mesh)
    known = list(cas)
    new_ready = False
    if record is not None and next_cert(mesh).exists() and next_key(mesh).exists():
        try:
            nxt = x509.load_pem_x509_certificate(next_cert(mesh).read_bytes())
            new_ready = pki.serial_of(nxt) == record["new"] and pki.key_belongs_to(next_key(mesh).read_bytes(), nxt)
            known.append(nxt)
        except (OSError, ValueError):
            new_ready = False
    if record is not None and record.get("old_pem"):
        known += pki.certificates(str(record["old_pem"]).encode())
    order = {"seal": 0, "node": 1, "issuer": 2, "keeper": 3}
    leaves = sorted((t for t in mesh_targets(mesh) if t.leaf), key=lambda t: order.get(t.kind, 9))
    context = ssl.create_default_context(cafile=str(mesh.paths.ca_cert))
    listeners = []
    for t in leaves:
        leaf = _leaf_of(mesh, t, context)
        ca = pki.issuer_of(leaf, known) if leaf is not None else None
        listeners.append(cp.Listener(t.name, bool(running(mesh, t)), pki.serial_of(ca) if ca else None))
    readers: list[cp.Reader] = []
    if mesh.spec.seal.type == "transit":
        since = float((record or {}).get("trusted_at_boot") or float("inf"))
        for node in mesh.layout.nodes:
            pid = processes.node_process(node).pid()
            start = started_at(pid) if pid is not None else None
            readers.append(cp.Reader(node.name, start is not None and start > since, _leads(mesh, node)))
    stale: tuple[str, ...] = ()
    if record is not None and client is not None:
        stale = stale_mounts(_mount_configs(client), record["new"])
    view = cp.CAView(tuple(pki.serial_of(c) for c in cas), _signer(mesh, cas), tuple(listeners),
                     old=record["old"] if record else None, new=record["new"] if record else None,
                     new_ready=new_ready, entry_current=entry_current(mesh, record), readers=tuple(readers),
                     stale_mounts=stale)
    return view, leaves


def _leads(mesh: m.Mesh, node: NodeLayout) -> bool:
    try:
        h = EngineClient([node.api_addr], ca_file=str(mesh.paths.ca_cert)).health(node.api_addr, timeout=1.0)
    except (OSError, VaultmeshError):
        return False
    return h.get("sealed") is False and h.get("standby") is False


# -- doing ---------------------------------------------------------------------------------------------------

def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class _Run:
    mesh: m.Mesh
    client: EngineClient
    progress: Progress
    now: dt.datetime
    reload_timeout: float
    step_timeout: float = 120.0
    rotated: list[Rotated] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        record = _read_record(self.mesh)
        assert record is not None
        return record

    def cas(self) -> dict[str, bytes]:
        """serial -> PEM of every CA this rotation knows (the file's, the next one, the recorded old one)."""
        out = {pki.serial_of(c): _pem(c) for c in _bundle(self.mesh)}
        if next_cert(self.mesh).exists():
            c = x509.load_pem_x509_certificate(next_cert(self.mesh).read_bytes())
            out[pki.serial_of(c)] = _pem(c)
        record = _read_record(self.mesh)
        if record is not None and record.get("old_pem"):
            for c in pki.certificates(str(record["old_pem"]).encode()):
                out.setdefault(pki.serial_of(c), _pem(c))
        return out

    def write_ca_file(self, *serials: str) -> None:
        cas = self.cas()
        write_atomic(self.mesh.paths.ca_cert, pki.bundle(*(cas[s] for s in serials)), mode=0o644)
        self.push_hosts()

    def push_hosts(self) -> None:
        """``runtime: ssh``: every host gets the CA file as it is now (its retry_join and its entry read it
        there), before the next stage relies on it."""
        static = self.mesh.spec.seal.type == "static"
        for node in self.mesh.layout.nodes:
            if node.remote is not None:
                from vaultmesh.hosts import runtime as hosts

                hosts.push(node, hosts.local_bundle(node, self.mesh.paths, static_seal=static))

    def reload_entry(self) -> str:
        """The entry started again on the CA file as it is now (``-sf``), and that recorded (``entry_current``)."""
        said = reload_entry(self.mesh)
        pid = processes.entry_process(self.mesh.layout).pid()
        write_json(record_file(self.mesh), {**self.record(), "entry": {
            "pid": pid, "ca_sha256": _digest(self.mesh.paths.ca_cert)}})
        return f"; {said}" if said else ""

    def new_pair(self) -> pki.CertPair:
        record = self.record()
        return pki.CertPair(self.cas()[record["new"]], self.mesh.paths.ca_key.read_bytes())

    def perform(self, step: cp.CAStep, view: cp.CAView, leaves: list[Target]) -> str:
        paths = self.mesh.paths
        match step.action:
            case "make-ca":
                old = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
                new = pki.create_ca(f"vaultmesh {self.mesh.spec.name} CA {self.now:%Y-%m-%d}", now=self.now,
                                    days=self.mesh.spec.tls.ca_days)
                write_atomic(next_key(self.mesh), new.key_pem)
                write_atomic(next_cert(self.mesh), new.cert_pem, mode=0o644)
                write_json(record_file(self.mesh), {"old": pki.serial_of(old), "new": pki.serial_of(new.cert),
                                                    "old_pem": _pem(old).decode(),
                                                    "started": self.now.isoformat(timespec="seconds")})
                return (f"new CA {pki.serial_of(new.cert)[:12]} made beside {pki.serial_of(old)[:12]} "
                        f"(key {next_key(self.mesh)}, 0600)")
            case "trust":
                record = self.record()
                self.write_ca_file(record["old"], record["new"])
                write_json(record_file(self.mesh), {**record, "trusted_at_boot": boot_seconds()})
                return f"{paths.ca_cert} trusts both CAs (the old one signs){self.reload_entry()}"
            case "restart":
                return self.restart(self.mesh.layout.node(step.target))
            case "sign":
                record = self.record()
                why = cp.sign_refusal(replace(view, stale_mounts=stale_mounts(_mount_configs(self.client),
                                                                             record["new"])))
                if why is not None:
                    raise UnsafePlan(why)
                key = next_key(self.mesh).read_bytes() if next_key(self.mesh).exists() else paths.ca_key.read_bytes()
                cas = self.cas()
                write_atomic(paths.ca_key, key)
                write_atomic(paths.ca_cert, pki.bundle(cas[record["new"]], cas[record["old"]]), mode=0o644)
                self.push_hosts()
                next_key(self.mesh).unlink(missing_ok=True)
                next_cert(self.mesh).unlink(missing_ok=True)
                extra = self._local_leaves()
                return f"the new CA signs ({paths.ca_key}); both CAs still trusted{extra}"
            case "reissue":
                target = next(t for t in leaves if t.name == step.target)
                result = renew(self.mesh, target, ca=self.new_pair(), now=self.now,
                               reload_timeout=self.reload_timeout)
                self.rotated.append(result)
                return result.sentence() + " from the new CA"
            case "drop":
                self.write_ca_file(self.record()["new"])
                return f"{paths.ca_cert} trusts the new CA alone{self.reload_entry()}"
            case "finish":
                old_pem = str(self.record().get("old_pem") or "")
                self._verify_final(leaves, old_pem.encode())
                record_file(self.mesh).unlink(missing_ok=True)
                return "every listener verifies with the new CA alone, none with the old one; rotation done"
        raise AssertionError(step.action)

    def restart(self, node: NodeLayout) -> str:
        """Stop the node (SIGTERM: a leader hands over as it shuts down), start it on the same binary, and wait
        until it is a caught-up, healthy voter again for the stabilisation time (counted from this start) and the
        mesh tolerates a failure again."""
        pid = processes.node_process(node).pid(adopt=True)
        processes.stop_node(node)
        processes.wait_ports_free(node)
        engine = m.node_engine(self.mesh.paths, node.name) or (
            node.remote.engine if node.remote else resolve_engine(self.mesh.engine).path)
        started = time.time()
        new = processes.start_node(node, engine)
        step = Step(node.name, "settle", "voter")
        last: list[str | None] = ["not observed"]

        def settled() -> bool:
            view = observe_mesh(self.mesh, self.client)
            now = time.time()
            view = replace(view, nodes=tuple(replace(n, stable_for=min(n.stable_for, now - started))
                                             if n.name == node.name else n for n in view.nodes))
            last[0] = holds_change(step, view) or refusal(view)
            return last[0] is None

        if not wait_until(settled, timeout=self.step_timeout, interval=POLL):
            raise NotReady(f"{node.name} did not settle within {self.step_timeout:g} s of its restart: {last[0]}; "
                           f"last lines of {node.log_file}:\n{log_tail(node.log_file)}",
                           hint="fix it and run `vaultmesh certs rotate-ca` again: it resumes from here")
        return f"{node.name} restarted (pid {pid} -> {new}) on the CA file with both CAs, a settled voter"

    def _local_leaves(self) -> str:
        """The keeper's Prometheus's certificate (no listener of the mesh's own: its web config is read per
        handshake), re-issued from the new CA when there is one."""
        cert, key = self.mesh.paths.prometheus_cert, self.mesh.paths.prometheus_key
        if not cert.exists():
            return ""
        pair = pki.issue_server_cert(self.new_pair(), "prometheus", dns_names=["localhost"],
                                     ip_addresses=["127.0.0.1"], now=self.now, days=self.mesh.spec.tls.cert_days)
        write_atomic(key, pair.key_pem)
        write_atomic(cert, pair.cert_pem, mode=0o644)
        return "; Prometheus's certificate re-issued"

    def _verify_final(self, leaves: list[Target], old_pem: bytes) -> None:
        new_only = ssl.create_default_context(cafile=str(self.mesh.paths.ca_cert))
        old_only = ssl.create_default_context(cadata=old_pem.decode()) if old_pem else None
        for t in leaves:
            if t.address is None or not running(self.mesh, t):
                continue
            try:
                served_der(t.address, new_only, t.server_name)
            except (OSError, ssl.SSLError) as err:
                raise RuntimeFailure(f"{t.name} ({t.address}) does not verify with the new CA alone: {err}",
                                     hint="run `vaultmesh certs rotate-ca` again") from None
            if old_only is None:
                continue
            try:
                served_der(t.address, old_only, t.server_name)
            except ssl.SSLError:
                continue
            except OSError:
                continue
            raise RuntimeFailure(f"{t.name} ({t.address}) still verifies with the old CA",
                                 hint="run `vaultmesh certs rotate-ca` again")


def _fit(mesh: m.Mesh, client: EngineClient) -> str | None:
    """Why the mesh cannot take a change now (a node down, no failure tolerance, autopilot unhealthy)."""
    last: list[str | None] = [None]

    def ready() -> bool:
        last[0] = refusal(observe_mesh(mesh, client))
        return last[0] is None

    wait_until(ready, timeout=READY_TIMEOUT, interval=POLL)
    return last[0]


def rotate_ca(root: Path, *, progress: Progress = _quiet, stop_after: cp.Action | None = None,
              now: dt.datetime | None = None, reload_timeout: float = RELOAD_TIMEOUT) -> RotateCAResult:
    """Rotate the CA of the mesh in ``root`` (or resume the rotation recorded there) through ``stop_after``'s
    stage (None: to the end)."""
    t0 = time.monotonic()
    with m.locked(root):
        mesh = m.open_mesh(root)
        view, _ = observe(mesh)
        why = cp.refusal(view)
        if why is not None:
            raise UnsafePlan(why)
        client = mesh.client(token=m.admin_token(mesh), retry=RetryPolicy(deadline=5.0))
        why = _fit(mesh, client)
        if why is not None:
            raise NotReady(why)
        run = _Run(mesh, client, progress, now or dt.datetime.now(dt.UTC), reload_timeout)
        view, leaves = observe(mesh, client)
        plan = cp.plan_rotation(view)
        start = cp.resume(plan, view) if view.rotating else 0
        end = cp.stop_index(plan, stop_after)
        if start == 0:
            progress(f"rotating the CA {view.bundle[0][:12]} of mesh {mesh.spec.name}:")
        else:
            progress(f"resuming the CA rotation {view.old and view.old[:12]} -> {view.new and view.new[:12]} "
                     f"at step {start + 1}: {plan.steps[start] if start < len(plan.steps) else 'done'}")
        done: list[str] = []
        sides = (view.old, view.new)
        last = "done"
        i = start
        while i < min(end, len(plan.steps)):
            step = plan.steps[i]
            sentence = run.perform(step, view, leaves)
            done.append(sentence)
            progress(sentence)
            view, leaves = observe(mesh)
            if view.rotating:
                sides = (view.old, view.new)
            missing = cp.holds(step, view)
            if missing is not None:
                raise RuntimeFailure(f"after {step}: {missing}",
                                     hint="run `vaultmesh certs rotate-ca` again: it resumes from here")
            if step.action == "reissue" and plan.steps[i + 1].action != "reissue":
                said = check_entry(mesh, mesh_targets(mesh), run.rotated)
                if said:
                    done.append(said)
                    progress(said)
            last = step.action
            i += 1
        return RotateCAResult(sides[0], sides[1], tuple(done), "done" if i >= len(plan.steps) else last,
                              time.monotonic() - t0, tuple(run.rotated))
