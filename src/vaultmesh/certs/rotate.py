"""Renew the mesh's leaf certificates in place (the edge): issue, write, reload, read back.

For each listener (the nodes, the transit seal node, the identity issuer, the keeper's ``/metrics``): a new
certificate and key from the mesh CA with the old one's names, written atomically (key 0600), then the process
is told to load them without a restart, and the listener is asked (a TLS handshake) until it serves the new
serial. How each one loads them:

    OpenBao (nodes, seal node)   SIGHUP: ``tls_cert_file``/``tls_key_file`` are re-read (docs: "reloads on
                                 SIGHUP"; checked here by the serial read back). Connections already open keep
                                 the old certificate until they close; new handshakes get the new one.
    identity issuer, keeper      SIGHUP: their server's SSL context loads the new pair (new handshakes).
    entry (HAProxy)              nothing: it passes TLS through (mode tcp), so it serves the active node's
                                 certificate, and checks the nodes against the CA, which does not change here.

A listener whose process is not running gets its files only (it serves them when it starts). The CA is not
touched (``rotate-ca`` is another command). Running it again after an interruption renews every leaf again:
each run ends with every running listener on a certificate issued by that run.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vaultmesh import pki
from vaultmesh.certs.probe import file_facts, mesh_targets, running, served_or_why
from vaultmesh.certs.report import Target, reissue_names
from vaultmesh.errors import RuntimeFailure, StateError
from vaultmesh.fsutil import ensure_dir, write_atomic
from vaultmesh.lifecycle import mesh as m
from vaultmesh.runtime import processes
from vaultmesh.waiting import wait_until

Progress = Callable[[str], None]

RELOAD_TIMEOUT = 10.0
"""Seconds a listener gets to serve its new certificate after SIGHUP: OpenBao reloads in milliseconds; the
margin is for a loaded machine."""


@dataclass(frozen=True)
class Rotated:
    """One renewed leaf: the serial its listener served before (None: not running), the new one, and whether
    the listener serves it now (False: its process was not running; it will at start)."""

    name: str
    old: str | None
    new: str
    loaded: bool

    def sentence(self) -> str:
        if not self.loaded:
            return f"{self.name}: new certificate {self.new[:12]} written (not running: served when it starts)"
        return f"{self.name}: serial {(self.old or '?')[:12]} -> {self.new[:12]}, served (no restart)"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "old_serial": self.old, "new_serial": self.new, "loaded": self.loaded}


def _quiet(_: str) -> None:
    pass


def _pid(mesh: m.Mesh, target: Target) -> int | None:
    layout = mesh.layout
    if target.kind == "node":
        return processes.node_process(layout.node(target.name)).pid()
    if target.kind == "seal" and layout.seal_node is not None:
        return processes.node_process(layout.seal_node, "seal").pid()
    if target.kind == "issuer":
        return processes.issuer_process(mesh.paths).pid()
    if target.kind == "keeper":
        return processes.keeper_process(mesh.paths).pid()
    return None


def _defaults(mesh: m.Mesh, target: Target) -> tuple[list[str], list[str]]:
    if target.kind in ("node", "seal"):
        node = mesh.layout.seal_node if target.kind == "seal" else mesh.layout.node(target.name)
        assert node is not None
        dns, ips = pki.node_cert_names(node.name)
        return dns, ips if node.host in ips else [*ips, node.host]
    return ["localhost"], ["127.0.0.1"]


def _ca(mesh: m.Mesh) -> pki.CertPair:
    try:
        return pki.CertPair(mesh.paths.ca_cert.read_bytes(), mesh.paths.ca_key.read_bytes())
    except FileNotFoundError as err:
        raise StateError(f"the mesh CA's {err.filename} is missing: no certificate can be issued",
                         hint="restore the state dir's pki/ from a backup") from None


def renew(mesh: m.Mesh, target: Target, *, ca: pki.CertPair, now: dt.datetime,
          reload_timeout: float = RELOAD_TIMEOUT) -> Rotated:
    """Renew one leaf: issue, write (key 0600, cert 0644, each atomically), SIGHUP, read the serial back.
    Raises RuntimeFailure naming the listener when it still serves another serial after ``reload_timeout``."""
    assert target.cert_file is not None and target.key_file is not None
    old_file = file_facts(target.cert_file)
    pid = _pid(mesh, target)
    before = None
    if pid is not None and target.address is not None:
        facts, _ = served_or_why(target.address, mesh.paths.ca_cert, target.server_name)
        before = facts.serial if facts else None
    dns, ips = reissue_names(old_file, *_defaults(mesh, target))
    common_name = old_file.common_name if old_file is not None else target.name
    pair = pki.issue_server_cert(ca, common_name, dns_names=dns, ip_addresses=ips, now=now,
                                 days=mesh.spec.tls.cert_days)
    new = format(pair.cert.serial_number, "x")
    ensure_dir(target.cert_file.parent)
    write_atomic(target.key_file, pair.key_pem)
    write_atomic(target.cert_file, pair.cert_pem, mode=0o644)
    hosted = mesh.layout.node(target.name) if target.kind == "node" else None
    if hosted is not None and hosted.remote is not None:  # runtime: ssh: the host gets the pair, then the HUP
        from vaultmesh.hosts import runtime as hosts

        hosts.push(hosted, hosts.local_bundle(hosted, mesh.paths, static_seal=mesh.spec.seal.type == "static"))
    if pid is None or target.address is None:
        return Rotated(target.name, before, new, False)
    if hosted is not None and hosted.remote is not None:
        hosts.hup(hosted)
    else:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            return Rotated(target.name, before, new, False)
    address = target.address
    last: list[str | None] = [None]

    def serves_new() -> bool:
        facts, why = served_or_why(address, mesh.paths.ca_cert, target.server_name)
        last[0] = facts.serial if facts else why
        return facts is not None and facts.serial == new

    if not wait_until(serves_new, timeout=reload_timeout, interval=0.05):
        raise RuntimeFailure(
            f"{target.name} ({address}) still serves {str(last[0])[:40]}, not its new certificate {new[:12]}, "
            f"{reload_timeout:g} s after SIGHUP (pid {pid})",
            hint=f"its new certificate is in {target.cert_file}; see its log, then run `vaultmesh certs rotate` "
                 "again")
    return Rotated(target.name, before, new, True)


def check_entry(mesh: m.Mesh, targets: Iterable[Target], rotated: list[Rotated]) -> str | None:
    """After the nodes: the entry (which passes TLS through) serves the certificate a node serves now (the
    active one's), none of the old ones. Returns a sentence, None when there is no running entry or no node was
    renewed; raises RuntimeFailure when it still serves a replaced certificate."""
    entry = next((t for t in targets if t.kind == "entry"), None)
    nodes = {n.name for n in mesh.layout.nodes}
    renewed = [r for r in rotated if r.loaded and r.name in nodes]
    if entry is None or entry.address is None or not renewed or not running(mesh, entry):
        return None
    address = entry.address
    replaced = {r.old for r in renewed if r.old}
    current = {r.new for r in renewed} | {
        f.serial for t in targets if t.kind == "node" and t.name not in {r.name for r in renewed}
        and t.address is not None and (f := served_or_why(t.address, mesh.paths.ca_cert, t.server_name)[0])}
    seen: list[str | None] = [None]

    def serves_current() -> bool:
        facts, why = served_or_why(address, mesh.paths.ca_cert, entry.server_name)
        seen[0] = facts.serial if facts else why
        return facts is not None and facts.serial in current and facts.serial not in replaced

    if not wait_until(serves_current, timeout=RELOAD_TIMEOUT, interval=0.1):
        raise RuntimeFailure(f"entry ({address}) serves {str(seen[0])[:40]}, not a node's current certificate",
                             hint="check which node leads (`vaultmesh status`) and run `vaultmesh certs rotate` "
                                  "again")
    return f"entry: passes through the active node's certificate {str(seen[0])[:12]}"


def rotate(mesh: m.Mesh, *, only: Iterable[str] | None = None, progress: Progress = _quiet,
           now: dt.datetime | None = None, reload_timeout: float = RELOAD_TIMEOUT) -> list[Rotated]:
    """Renew every leaf of ``mesh`` (or the ones named in ``only``), one listener at a time: the transit seal
    node, the nodes, the issuer, the keeper; then check the entry. The caller holds the state lock."""
    all_targets = mesh_targets(mesh)
    wanted = set(only) if only is not None else None
    leaves = [t for t in all_targets if t.leaf and (wanted is None or t.name in wanted)]
    order = {"seal": 0, "node": 1, "issuer": 2, "keeper": 3}
    leaves.sort(key=lambda t: order.get(t.kind, 9))
    ca = _ca(mesh)
    now = now or dt.datetime.now(dt.UTC)
    done: list[Rotated] = []
    for target in leaves:
        result = renew(mesh, target, ca=ca, now=now, reload_timeout=reload_timeout)
        done.append(result)
        progress(result.sentence())
    sentence = check_entry(mesh, all_targets, done)
    if sentence:
        progress(sentence)
    return done
