"""The restore drill: restore a snapshot into a scratch mesh that can reach nothing, prove it works, measure RTO
and RPO, and tear it all down.

``drill(root)`` restores the latest (or a given) snapshot of the mesh in ``root`` into ``<root>/drills/<stamp>/``
with ``restore.restore_into``: its nodes run in network namespaces on a bridge with no uplink (``runtime:
netns``), so the restored database roles, JWT discovery URLs and lease revocations reach no production system;
no keeper, no entry. Then the checks, each a ``Check`` (``ok`` None: skipped, and ``detail`` says why):

  restore  the restore itself (a snapshot sealed with another key fails here, and the rest are skipped)
  plan     the mesh file's resources show no changes on the scratch mesh. The file's templated values are the
           SOURCE mesh's (``{{vaultmesh.issuer_url}}``, ``{{vaultmesh.ca_pem}}``): the restored storage is the
           source's config, which names the source's issuer and CA; the write-only fields' digests are the
           source's records (copied by the restore)
  canary   ``vaultmesh-canary/data/canary`` reads back the nonce the snapshot's manifest recorded
  transit  the manifest's transit ciphertext of that nonce decrypts to it (``vaultmesh-transit/decrypt/canary``)
  login    a workload logs in on a restored JWT role that trusts the mesh's issuer, with a freshly minted token

The login check: the scratch nodes have no route out, so the restored JWT config's ``oidc_discovery_url`` (the
source's issuer, on the machine's loopback) cannot be fetched from inside their namespaces. The drill re-points
that one mount, on the scratch mesh only, from discovery to ``jwt_validation_pubkeys`` holding the public keys of
the source's identity key ring (read in place, never copied), keeping its ``bound_issuer``; and signs the token
with that same ring and the source's issuer URL as ``iss``. So the token is exactly what the source's issuer
would mint, and the role, its claims, audiences and policies are the restored ones; only the way the node learns
the keys differs. (The scratch mesh's own issuer could not be reached from the namespaces either: it listens on
the root namespace's loopback.) The plan check runs before, so it sees the restored config untouched.

RTO: drill start to the first successful workload login (when login is skipped: to the end of the last check).
RPO: the snapshot's age when the drill starts. The report goes to ``drills/last.json`` (atomic, 0600). Whatever
happens, the scratch mesh's processes, namespaces, bridge and state dir are removed before ``drill`` returns.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.dr.restore import RestoreResult, remove_mesh_dir, restore_into
from vaultmesh.errors import StateError, VaultmeshError
from vaultmesh.fsutil import ensure_dir, write_json
from vaultmesh.lifecycle import mesh as m

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


CANARY_PATH = "vaultmesh-canary/data/canary"
TRANSIT_DECRYPT = "vaultmesh-transit/decrypt/canary"
DRILL_WORKLOAD = "vaultmesh-drill"
"""The workload name (``sub``, service account) of the drill's login token."""
TOKEN_TTL = 120.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None
    """True passed, False failed, None skipped (``detail`` says why)."""
    detail: str
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class DrillReport:
    ok: bool
    rto_s: float | None
    """Drill start to the first successful workload login (login skipped: to the last check); None when the
    drill failed before it."""
    rpo_s: float | None
    """The snapshot's age when the drill started."""
    checks: tuple[Check, ...]
    snapshot: str | None
    started_at: float
    seconds: float
    isolation: bool
    phases: dict[str, float] = field(default_factory=dict)
    """The restore's phases (create, up, restore, restart) and ``checks``, in seconds."""

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["checks"] = [c.to_json() for c in self.checks]
        doc["phases"] = {k: round(v, 3) for k, v in self.phases.items()}
        for key in ("rto_s", "rpo_s", "seconds"):
            if doc[key] is not None:
                doc[key] = round(doc[key], 3)
        return doc

    def lines(self) -> list[str]:
        """The report for a terminal: one line per check, then the verdict with RTO and RPO."""
        mark = {True: "ok  ", False: "FAIL", None: "skip"}
        out = [f"{mark[c.ok]} {c.name:<8} {c.detail}" + (f" ({c.seconds:.1f} s)" if c.seconds else "")
               for c in self.checks]
        rto = f"{self.rto_s:.1f} s" if self.rto_s is not None else "-"
        rpo = f"{self.rpo_s:.0f} s" if self.rpo_s is not None else "-"
        out.append(f"drill {'passed' if self.ok else 'FAILED'}: RTO {rto}, RPO {rpo}, snapshot {self.snapshot}")
        return out


# -- pure ---------------------------------------------------------------------------------------------------

def verdict(checks: Sequence[Check]) -> bool:
    """A drill passes when the restore passed and no check failed (skipped ones do not fail it)."""
    return bool(checks) and checks[0].ok is True and all(c.ok is not False for c in checks)


def recovery_time(checks: Sequence[Check], ends: Mapping[str, float]) -> float | None:
    """RTO from the checks and the seconds (since the drill started) at which each ended: the login's end when it
    passed; when it was skipped, the last check's end; None when the login or an earlier check failed."""
    by_name = {c.name: c for c in checks}
    login = by_name.get("login")
    if login is not None and login.ok is True:
        return ends["login"]
    if login is not None and login.ok is False:
        return None
    if any(c.ok is False for c in checks) or not ends:
        return None
    return max(ends.values())


def skipped(names: Iterable[str], why: str) -> list[Check]:
    return [Check(name, None, why) for name in names]


def scratch_changes(*, isolation: bool) -> dict[str, Any]:
    """The scratch mesh's differences from the source's mesh file: nodes in network namespaces (with
    isolation), no keeper, no entry (one process less to start; nothing uses it)."""
    return {"runtime": "netns" if isolation else "local", "keeper": {"enabled": False}, "entry": {"mode": "none"}}


def _pointer_set(claims: dict[str, Any], claim: str, value: Any) -> None:
    """Set ``claim`` (a name, or a JSON pointer such as ``/kubernetes.io/serviceaccount/name``)."""
    if not claim.startswith("/"):
        claims[claim] = value
        return
    parts = [p.replace("~1", "/").replace("~0", "~") for p in claim.lstrip("/").split("/")]
    here = claims
    for part in parts[:-1]:
        nxt = here.get(part)
        if not isinstance(nxt, dict):
            nxt = here[part] = {}
        here = nxt
    here[parts[-1]] = value


def _pointer_has(claims: Mapping[str, Any], claim: str) -> bool:
    if not claim.startswith("/"):
        return claim in claims
    here: Any = claims
    for part in claim.lstrip("/").split("/"):
        if not isinstance(here, Mapping) or part not in here:
            return False
        here = here[part]
    return True


def login_claims(role: Mapping[str, Any], *, issuer: str, now: float, ttl: float = TOKEN_TTL) -> dict[str, Any]:
    """The claims of a token that ``role`` (a JWT auth role as OpenBao reads it back) accepts: the issuer's usual
    claims for the drill's workload, with the role's first bound audience, its bound subject, its bound claims'
    first values (a glob's ``*`` filled in) and its user claim present. Pure."""
    from vaultmesh.identity.tokens import token_claims

    audiences = [str(a) for a in role.get("bound_audiences") or []]
    claims = token_claims(issuer=issuer, workload=DRILL_WORKLOAD, audience=audiences[:1] or [DRILL_WORKLOAD],
                          ttl=ttl, now=now)
    if not audiences:
        del claims["aud"]  # a role without bound audiences refuses a token that has any
    if role.get("bound_subject"):
        claims["sub"] = str(role["bound_subject"])
    glob = role.get("bound_claims_type") == "glob"
    for claim, wanted in sorted((role.get("bound_claims") or {}).items()):
        value = wanted[0] if isinstance(wanted, list) and wanted else wanted
        if glob and isinstance(value, str):
            value = value.replace("*", "x")
        _pointer_set(claims, str(claim), value)
    user_claim = str(role.get("user_claim") or "sub")
    if not _pointer_has(claims, user_claim):
        _pointer_set(claims, user_claim, DRILL_WORKLOAD)
    return claims


@dataclass(frozen=True)
class JwtRole:
    """A JWT auth role found on the restored mesh, with its mount's config."""

    namespace: str
    mount: str
    name: str
    config: Mapping[str, Any]
    role: Mapping[str, Any]

    @property
    def where(self) -> str:
        return f"{self.namespace}{self.mount}/role/{self.name}"


def trusts(config: Mapping[str, Any], issuer: str) -> bool:
    """The JWT mount's config trusts ``issuer``: its bound issuer, discovery URL or JWKS URL is the issuer's. Pure."""
    urls = [str(config.get(k) or "").rstrip("/") for k in ("bound_issuer", "oidc_discovery_url")]
    jwks = str(config.get("jwks_url") or "")
    return issuer in urls or (bool(jwks) and jwks.startswith(issuer + "/"))


def pick_role(roles: Sequence[JwtRole], issuer: str) -> JwtRole | None:
    """The first role (root namespace first, then by path) of type jwt on a mount that trusts ``issuer``. Pure."""
    fit = [r for r in roles if trusts(r.config, issuer) and (r.role.get("role_type") or "jwt") == "jwt"]
    return sorted(fit, key=lambda r: (r.namespace.count("/"), r.namespace, r.mount, r.name))[0] if fit else None


def pubkeys_config(config: Mapping[str, Any], *, issuer: str, public_pems: Sequence[str],
                   algorithm: str) -> dict[str, Any]:
    """The JWT config that trusts the same issuer by its public keys instead of its discovery URL (the drill's
    scratch mesh cannot reach the URL): bound issuer, default role and algorithms kept. Pure."""
    body: dict[str, Any] = {"jwt_validation_pubkeys": list(public_pems),
                            "bound_issuer": str(config.get("bound_issuer") or issuer),
                            "jwt_supported_algs": list(config.get("jwt_supported_algs") or [algorithm])}
    if config.get("default_role"):
        body["default_role"] = config["default_role"]
    return body


def plan_detail(actions: Sequence[Any], count: int, file: Path) -> tuple[bool, str]:
    """(ok, detail) of the plan check from the plan's executable actions. Pure."""
    if not actions:
        return True, f"the {count} resources of {file} show no changes"
    shown = ", ".join(f"{a.marker} {a.kind} {a.key.id}" for a in actions[:5])
    more = f" and {len(actions) - 5} more" if len(actions) > 5 else ""
    return False, f"{len(actions)} change(s) against {file}: {shown}{more}"


def canary_of(manifest: Any) -> tuple[str, str | None] | None:
    """The manifest's canary nonce and its transit ciphertext, or None when it recorded none."""
    canary = getattr(manifest, "canary", None)
    if canary is None:
        return None
    value = canary.get("value") if isinstance(canary, Mapping) else getattr(canary, "value", None)
    cipher = canary.get("ciphertext") if isinstance(canary, Mapping) else getattr(canary, "ciphertext", None)
    return (str(value), str(cipher) if cipher else None) if value else None


def stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{os.getpid()}"


# -- the checks (edges) -----------------------------------------------------------------------------------------

def _timed(name: str, fn: Callable[[], tuple[bool | None, str]]) -> Check:
    t = time.monotonic()
    try:
        ok, detail = fn()
    except VaultmeshError as err:
        ok, detail = False, str(err)
    return Check(name, ok, detail, time.monotonic() - t)


def check_plan(source: m.Mesh, scratch: m.Mesh, client: EngineClient, file: Path | None) -> tuple[bool | None, str]:
    from vaultmesh.reconcile.apply import gather, placeholders
    from vaultmesh.reconcile.plan import plan_changes
    from vaultmesh.reconcile.resources import desired_resources, secret_values
    from vaultmesh.reconcile.state import ReconcileState
    from vaultmesh.spec.load import load_spec
    from vaultmesh.spec.resources import read_confined

    if file is None:
        return None, "skipped: no mesh file given (--file), and vaultmesh does not record the file last applied"
    spec, _ = load_spec(file)
    base = file.parent.absolute()
    values = secret_values(spec, env=os.environ, read_file=lambda name: read_confined(base, name))
    state = ReconcileState(scratch.paths)  # the source's records, copied by the restore
    desired = desired_resources(spec, secrets=values, hash_key=state.hash_key(), placeholders=placeholders(source))
    plan = plan_changes(desired, gather(client, desired), previous_hashes=state.previous_hashes())
    return plan_detail(plan.executable(prune=False), len(desired), file)


def check_canary(client: EngineClient, canary: tuple[str, str | None] | None) -> tuple[bool | None, str]:
    if canary is None:
        return None, "skipped: the snapshot's manifest records no canary (a mesh bootstrapped before canaries)"
    doc = client.read(CANARY_PATH) or {}
    data = (doc.get("data") or {}).get("data") or {}
    if canary[0] in {str(v) for v in data.values()}:
        version = (doc.get("data") or {}).get("metadata", {}).get("version")
        return True, f"{CANARY_PATH} holds the manifest's nonce (version {version})"
    if not doc:
        return False, f"{CANARY_PATH} is missing on the restored mesh"
    return False, f"{CANARY_PATH} does not hold the manifest's nonce: the data is not the snapshot's"


def check_transit(client: EngineClient, canary: tuple[str, str | None] | None) -> tuple[bool | None, str]:
    if canary is None or not canary[1]:
        return None, "skipped: the snapshot's manifest records no transit ciphertext"
    doc = client.write(TRANSIT_DECRYPT, {"ciphertext": canary[1]}) or {}
    plain = str((doc.get("data") or {}).get("plaintext") or "")
    try:
        text = base64.b64decode(plain).decode()
    except (ValueError, UnicodeDecodeError):
        text = plain
    if canary[0] in (text, plain):
        return True, "the manifest's ciphertext decrypts to its nonce with the restored transit key"
    return False, "the manifest's ciphertext decrypts to something else than its nonce"


def jwt_roles(client: EngineClient) -> list[JwtRole]:
    """Every JWT auth role of the mesh, in the root namespace and every child namespace."""
    from vaultmesh.lifecycle.revoke import child_namespaces

    found: list[JwtRole] = []
    for ns in ["", *child_namespaces(client, retry=lambda: RetryPolicy(deadline=5.0))]:
        auth = client.read("sys/auth", namespace=ns or None) or {}
        mounts = auth.get("data") if isinstance(auth.get("data"), dict) else auth
        for path, entry in sorted((mounts or {}).items()):
            if not isinstance(entry, Mapping) or entry.get("type") != "jwt":
                continue
            mount = str(path).strip("/")
            config = (client.read(f"auth/{mount}/config", namespace=ns or None) or {}).get("data") or {}
            for name in client.list(f"auth/{mount}/role", namespace=ns or None):
                role = (client.read(f"auth/{mount}/role/{name}", namespace=ns or None) or {}).get("data") or {}
                found.append(JwtRole(ns, mount, str(name), config, role))
    return found


def check_login(source: m.Mesh, client: EngineClient) -> tuple[bool | None, str]:
    import jwt

    from vaultmesh.identity.keys import KeyRing
    from vaultmesh.identity.server import read_issuer_record

    record = read_issuer_record(source.paths.root)
    if record is None:
        return None, "skipped: the mesh has never run an identity issuer, so no role can trust it"
    issuer = record.issuer
    roles = jwt_roles(client)
    chosen = pick_role(roles, issuer)
    if chosen is None:
        mounts = {(r.namespace, r.mount) for r in roles}
        return None, (f"skipped: no JWT role trusts the mesh's issuer {issuer} ({len(roles)} role(s) on "
                      f"{len(mounts)} JWT mount(s) checked)")
    ring = KeyRing.load(source.paths.identity_keys)
    now = time.time()
    ns = chosen.namespace or None
    client.write(f"auth/{chosen.mount}/config", pubkeys_config(
        chosen.config, issuer=issuer, public_pems=[k.public_pem() for k in ring.keys], algorithm=ring.active.alg),
        namespace=ns)
    key = ring.active
    token = jwt.encode(login_claims(chosen.role, issuer=issuer, now=now), key.private_key, algorithm=key.alg,
                       headers={"kid": key.kid})
    auth = client.login(chosen.mount, {"role": chosen.name, "jwt": token}, namespace=ns)
    policies = ", ".join(auth.get("policies") or []) or "none"
    return True, f"a workload logged in on {chosen.where} (policies: {policies})"


# -- the drill -------------------------------------------------------------------------------------------------

def latest_snapshot(mesh: m.Mesh) -> Path:
    """The newest snapshot of the mesh (where ``snapshots.dir`` puts them)."""
    from vaultmesh.snapshot.save import listing

    found = listing(mesh)
    if not found:
        raise StateError(f"the mesh in {mesh.paths.root} has no snapshot to drill",
                         hint="take one with `vaultmesh snapshot save`, or pass --snapshot FILE")
    return Path(found[-1].path)


CHECKS = ("plan", "canary", "transit", "login")


def drill(root: Path, *, snapshot: Path | None = None, isolation: bool = True, file: Path | None = None,
          progress: Progress = _quiet) -> DrillReport:
    """Restore ``snapshot`` (default: the newest) of the mesh in ``root`` into an isolated scratch mesh, run the
    checks, tear the scratch mesh down, and return (and write to ``drills/last.json``) the report. Refused
    before anything starts when isolation is asked for and the machine cannot give it."""
    t0 = time.monotonic()
    started = time.time()
    source = m.open_mesh(root)
    if isolation:
        from vaultmesh.runtime import netns

        why = netns.unavailable()
        if why:
            raise VaultmeshError(f"the drill's scratch mesh cannot be isolated here: {why}",
                                 hint="run it as root with iproute2, or pass --no-isolation (the scratch mesh "
                                      "could then reach the databases and URLs the snapshot's config names)")
    snap = snapshot if snapshot is not None else latest_snapshot(source)
    rpo = _rpo(snap, started)
    scratch = ensure_dir(source.paths.drills_dir) / stamp(started)
    checks: list[Check] = []
    ends: dict[str, float] = {}
    phases: dict[str, float] = {}
    try:
        t = time.monotonic()
        result: RestoreResult | None = None
        try:
            result = restore_into(snap, scratch, source=root, spec_changes=scratch_changes(isolation=isolation),
                                  progress=progress)
        except VaultmeshError as err:
            checks.append(Check("restore", False, str(err), time.monotonic() - t))
            checks += skipped(CHECKS, "skipped: the restore failed")
        if result is not None:
            phases.update(result.phases)
            where = "in network namespaces" if isolation else "on this machine's network (no isolation)"
            checks.append(Check("restore", True, f"a {len(result.mesh.layout.nodes)}-node scratch mesh {where} "
                                f"serves the snapshot", time.monotonic() - t))
            rpo = _rpo(snap, started, result.manifest)
            tc = time.monotonic()
            with result.mesh.client(token=m.admin_token(result.mesh)) as client:
                canary = canary_of(result.manifest)
                for name, fn in (("plan", lambda: check_plan(source, result.mesh, client, file)),
                                 ("canary", lambda: check_canary(client, canary)),
                                 ("transit", lambda: check_transit(client, canary)),
                                 ("login", lambda: check_login(source, client))):
                    checks.append(_timed(name, fn))
                    ends[name] = time.monotonic() - t0
                    progress(f"{name}: {checks[-1].detail}")
            phases["checks"] = time.monotonic() - tc
    finally:
        progress(f"tearing down the scratch mesh in {scratch}")
        remove_mesh_dir(scratch)
    ok = verdict(checks)
    report = DrillReport(ok, recovery_time(checks, ends) if ok or ends else None, rpo, tuple(checks), str(snap),
                         started, time.monotonic() - t0, isolation, phases)
    write_json(source.paths.drill_report, report.to_json())
    return report


def _rpo(snap: Path, started: float, manifest: Any = None) -> float | None:
    """The snapshot's age when the drill started, from its manifest (None when it cannot be read)."""
    if manifest is None:
        try:
            from vaultmesh.snapshot import archive

            manifest = archive.read_manifest(snap)
        except (VaultmeshError, OSError, ValueError):
            return None
    taken = getattr(manifest, "time", None)
    return max(0.0, started - float(taken)) if taken is not None else None


def run_drill(root: Path) -> DrillReport:
    """The keeper's drill: as the mesh file's ``drills:`` says (isolation), the newest snapshot, no file. Never
    raises for a failed check (the report says it); raises VaultmeshError when the drill cannot run at all (no
    snapshot, no isolation possible)."""
    mesh = m.open_mesh(root)
    return drill(root, isolation=mesh.spec.drills.isolation)
