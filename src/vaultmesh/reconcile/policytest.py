"""``vaultmesh policy test``: evaluate the file's ``expect`` assertions for real.

Default: in a throwaway single-node OpenBao (``bao server -dev -dev-tls``, in memory, ~1 s) started for the
purpose and stopped by pid afterwards. The file's namespaces, policies, auth mounts and roles are applied into
it with the apply code (``apply.perform`` on the actions of ``plan_changes(desired, empty)``), except what
needs outside services or secret values (database connections and roles, KV seeds); JWT mounts trust a key
generated for the run instead of the file's issuer, so test JWTs carrying the assertion's claims can log in.

``--live``: the same assertions against a running mesh with its admin token; JWTs are minted from the mesh's
own identity issuer key ring. Every token, AppRole secret-id and JWT entity the run creates is revoked or
deleted afterwards.

Each assertion becomes a token (a real login for ``login:``, ``auth/token/create`` for ``policies:``) whose
capabilities are read with ``sys/capabilities-self``. ``can`` passes when the capability (or ``root``) is
there; ``cannot`` passes when it is not (``any``: no capability at all). A path ending in ``*`` is probed at a
few concrete paths under it (:func:`probe_paths`).

Pure parts (``probe_paths``, ``verdict``, ``login_claims``, ``Report``) are unit-tested without a server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.errors import EngineError, PermissionDenied, VaultmeshError
from vaultmesh.identity.keys import SigningKey, new_signing_key
from vaultmesh.reconcile.observe import ObservedState
from vaultmesh.reconcile.plan import plan_changes
from vaultmesh.reconcile.resources import Resource, desired_resources, secret_refs
from vaultmesh.runtime.local import free_ports, log_tail, pid_alive, start_process, stop_process, wait_until
from vaultmesh.spec.resources import (
    AppRoleAuth,
    Expectation,
    JwtAuth,
    JwtRole,
    KubernetesAuth,
    ResourcesSpec,
    walk_scopes,
)

SYS_PROBES = ("sys/policies/acl/x", "sys/mounts", "sys/auth")
"""Representative concrete paths probed for a wildcard that covers ``sys/``."""
PROBE_LEAF = "vaultmesh-probe"
"""Appended to a wildcard's prefix: a path under it that nothing else names."""

SKIPPED_KINDS = frozenset({"db_connection", "db_role", "kv_secret"})
"""Not applied to the throwaway server: they need outside services (a database) or secret values, and the
capabilities of a path do not depend on them."""

TEST_ISSUER = "https://policytest.vaultmesh.invalid"
"""Issuer of the JWTs minted for the throwaway server (its JWT mounts trust only this run's key)."""
TEST_TOKEN_TTL = "5m"
JWT_TTL = 120.0
START_TIMEOUT = 30.0
"""Seconds the throwaway server gets to answer; it normally takes about one."""


# -- pure parts ------------------------------------------------------------------------------------------

def probe_paths(path: str) -> list[str]:
    """The concrete paths asked about for ``path``: itself, or for ``prefix*`` a few paths under the prefix
    (``sys/*`` -> ``sys/policies/acl/x``, ``sys/mounts``, ``sys/auth``, ``sys/vaultmesh-probe``)."""
    if not path.endswith("*"):
        return [path]
    prefix = path[:-1]
    out = [p for p in SYS_PROBES if p.startswith(prefix)]
    out.append(prefix + PROBE_LEAF)
    return list(dict.fromkeys(out))


def has_capability(capability: str, found: Sequence[str]) -> bool:
    """Whether ``found`` (a ``capabilities-self`` answer) grants ``capability``; ``any``: anything at all."""
    granted = set(found) - {"deny"}
    if "root" in granted:
        return True
    if capability == "any":
        return bool(granted)
    return capability in granted


def verdict(capability: str, expected: bool, found: Sequence[str]) -> bool:
    """True when the token's capabilities on one path match the assertion (``can`` = expected True)."""
    return has_capability(capability, found) == expected


@dataclass(frozen=True)
class CheckResult:
    """One assertion (capability on a path, expected or not) and what the server said about each probe."""

    subject: str
    capability: str
    path: str
    expected: bool
    found: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(probe path, capabilities) for each probe of ``path``."""
    error: str | None = None
    """Why the check could not be evaluated (the login failed, ...): counts as a failure."""

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.found) and all(
            verdict(self.capability, self.expected, caps) for _, caps in self.found)

    def describe_found(self) -> str:
        if self.error is not None:
            return self.error
        if len(self.found) == 1:
            return ", ".join(self.found[0][1]) or "none"
        groups: dict[str, list[str]] = {}
        for probe, caps in self.found:
            groups.setdefault(", ".join(caps) or "none", []).append(probe)
        return "; ".join(f"{caps} at {', '.join(probes)}" for caps, probes in groups.items())

    def line(self) -> str:
        word = "can" if self.expected else "cannot"
        return (f"{'PASS' if self.ok else 'FAIL'}  {self.subject}: {word} {self.capability} {self.path}"
                f"  (found: {self.describe_found()})")


@dataclass(frozen=True)
class Report:
    results: tuple[CheckResult, ...]
    where: str = ""
    """What the assertions ran against, for the summary line."""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def lines(self) -> list[str]:
        """One line per assertion, then a summary line."""
        failed = sum(not r.ok for r in self.results)
        tail = (f"{len(self.results)} assertion(s), {failed} failed" if failed
                else f"{len(self.results)} assertion(s) passed")
        return [r.line() for r in self.results] + [tail + (f" ({self.where})" if self.where else "")]


def subject_of(exp: Expectation) -> str:
    """How an expectation is named in report lines: its name, else its login or policies."""
    if exp.name:
        base = exp.name
    elif exp.login is not None:
        base = f"login {exp.login.mount}/{exp.login.role}"
    else:
        base = "policies " + ",".join(exp.policies or [])
    return f"[{exp.namespace}] {base}" if exp.namespace else base


def login_claims(role: JwtRole, claims: Mapping[str, Any], *, issuer: str, now: float,
                 user: str) -> dict[str, Any]:
    """The claims of a test JWT that ``role`` accepts: the assertion's claims, plus what the role's bounds
    require and the assertion did not give (an audience, bound claims, the subject, the user claim)."""
    out: dict[str, Any] = {"iss": issuer, "iat": int(now), "nbf": int(now), "exp": int(now + JWT_TTL),
                           "aud": list(role.bound_audiences) or ["vaultmesh-policytest"],
                           "sub": role.bound_subject or user}
    for name, value in role.bound_claims.items():
        first = value[0] if isinstance(value, list) else value
        out[name] = first.replace("*", "x") if role.bound_claims_type == "glob" else first
    out.update(claims)
    out.setdefault(role.user_claim, user)
    return out


def sign(key: SigningKey, claims: Mapping[str, Any]) -> str:
    return jwt.encode(dict(claims), key.private_key, algorithm=key.alg, headers={"kid": key.kid})


def all_probes(exp: Expectation) -> list[str]:
    return list(dict.fromkeys(p for _, path, _ in exp.checks() for p in probe_paths(path)))


def parse_capabilities(resp: Mapping[str, Any] | None, paths: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``sys/capabilities-self`` answer -> {path: capabilities}. The answer keys each path as asked (and,
    for one path, also ``capabilities``)."""
    data = dict((resp or {}).get("data") or resp or {})
    out = {}
    for p in paths:
        caps = data.get(p, data.get(p.lstrip("/")))
        if caps is None and len(paths) == 1:
            caps = data.get("capabilities")
        out[p] = tuple(str(c) for c in (caps or ()))
    return out


# -- the edge: tokens for assertions, on a throwaway server or a live mesh ---------------------------------

@dataclass
class _Target:
    client: EngineClient
    """A privileged client: the throwaway's root token, or the live mesh's admin token."""
    signer: SigningKey
    issuer: str
    scopes: Mapping[str, Any]
    where: str
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def undo(self) -> None:
        """Run and forget the cleanups, newest first; one failing does not stop the others."""
        while self.cleanup:
            with contextlib.suppress(VaultmeshError, OSError):
                self.cleanup.pop()()


def _token_for(target: _Target, exp: Expectation) -> str:
    """A token for the assertion; registers its revocation (and any other leftovers) in ``target.cleanup``."""
    c, ns = target.client, exp.namespace or None
    if exp.policies is not None:
        data = c.write("auth/token/create", {"policies": list(exp.policies), "ttl": TEST_TOKEN_TTL,
                                             "no_default_policy": "default" not in exp.policies,
                                             "display_name": "vaultmesh-policytest"}, namespace=ns)
        auth = (data or {}).get("auth") or {}
    else:
        assert exp.login is not None
        mount = target.scopes[exp.namespace].auth[exp.login.mount]
        auth = _login(target, exp, mount)
    token = str(auth["client_token"])
    target.cleanup.append(lambda: c.request("POST", "auth/token/revoke-self", {}, token=token, namespace=ns))
    return token


def _login(target: _Target, exp: Expectation, mount: Any) -> dict[str, Any]:
    assert exp.login is not None
    c, ns, name, role_name = target.client, exp.namespace or None, exp.login.mount, exp.login.role
    if isinstance(mount, JwtAuth):
        role = mount.roles[role_name]
        if role.role_type != "jwt":
            raise VaultmeshError(f"role {role_name} is an oidc role (browser login): test it with policies:")
        user = f"vaultmesh-policytest-{secrets.token_hex(4)}"
        token = sign(target.signer, login_claims(role, exp.login.claims, issuer=target.issuer, now=time.time(),
                                                 user=user))
        auth = c.login(name, {"role": role_name, "jwt": token}, namespace=ns)
        entity = auth.get("entity_id")
        alias_ours = (role.user_claim not in exp.login.claims
                      and not (role.user_claim == "sub" and role.bound_subject))
        if entity and alias_ours:  # the entity this login made for a made-up user: delete it after
            target.cleanup.append(lambda: c.delete(f"identity/entity/id/{entity}", namespace=ns))
        return auth
    if isinstance(mount, AppRoleAuth):
        base = f"auth/{name}/role/{role_name}"
        role_id = ((c.read(f"{base}/role-id", namespace=ns) or {}).get("data") or {}).get("role_id")
        payload = {"role_id": role_id}
        if mount.roles[role_name].bind_secret_id is not False:
            sid = (c.write(f"{base}/secret-id", {"metadata": '{"purpose":"vaultmesh policy test"}'},
                           namespace=ns) or {}).get("data") or {}
            accessor = sid.get("secret_id_accessor")
            target.cleanup.append(lambda: c.write(f"{base}/secret-id-accessor/destroy",
                                                  {"secret_id_accessor": accessor}, namespace=ns))
            payload["secret_id"] = sid.get("secret_id")
        return c.login(name, payload, namespace=ns)
    if isinstance(mount, KubernetesAuth):
        raise VaultmeshError("kubernetes logins cannot be evaluated here (no Kubernetes): "
                             "write the assertion with policies: instead")
    raise VaultmeshError(f"cannot log in on a {type(mount).__name__} mount")


def _capabilities(target: _Target, token: str, probes: list[str], ns: str | None) -> dict[str, tuple[str, ...]]:
    """The token's capabilities on ``probes``: ``sys/capabilities-self`` as the token itself; a token without
    the ``default`` policy may not call that, so then ``sys/capabilities`` with the privileged client."""
    try:
        resp = target.client.request("POST", "sys/capabilities-self", {"paths": probes}, token=token,
                                     namespace=ns)
    except PermissionDenied:
        resp = target.client.request("POST", "sys/capabilities", {"token": token, "paths": probes},
                                     namespace=ns)
    return parse_capabilities(resp.data, probes)


def _evaluate(target: _Target, exp: Expectation) -> list[CheckResult]:
    subject = subject_of(exp)
    checks = exp.checks()
    try:
        token = _token_for(target, exp)
        probes = all_probes(exp)
        caps = _capabilities(target, token, probes, exp.namespace or None)
    except (VaultmeshError, KeyError) as err:
        what = "login" if exp.login is not None else "token"
        msg = f"{what} failed: " + " ".join(str(err).split())
        return [CheckResult(subject, cap, path, expected, error=msg) for cap, path, expected in checks]
    finally:
        target.undo()
    return [CheckResult(subject, cap, path, expected, tuple((p, caps[p]) for p in probe_paths(path)))
            for cap, path, expected in checks]


def _evaluate_all(target: _Target, spec: ResourcesSpec) -> Report:
    results: list[CheckResult] = []
    for exp in spec.expect:
        results.extend(_evaluate(target, exp))
    return Report(tuple(results), where=target.where)


# -- throwaway server ------------------------------------------------------------------------------------

@contextlib.contextmanager
def throwaway_server(engine_path: str) -> Iterator[EngineClient]:
    """A single in-memory dev OpenBao on a free port with TLS and a random root token; stopped by pid and its
    folder removed on exit, whatever happened."""
    tmp = Path(tempfile.mkdtemp(prefix="vaultmesh-policytest-"))
    pid: int | None = None
    client: EngineClient | None = None
    try:
        port = free_ports(1)[0]
        root_token = secrets.token_urlsafe(24)
        log = tmp / "server.log"
        # The root token goes in the environment, not argv, so `ps` does not show it.
        pid = start_process(
            [engine_path, "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={tmp}",
             f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token"],
            cwd=tmp, log_file=log, pid_file=tmp / "server.pid",
            env={"BAO_DEV_ROOT_TOKEN_ID": root_token, "VAULT_DEV_ROOT_TOKEN_ID": root_token})
        ca = tmp / "vault-ca.pem"
        addr = f"https://127.0.0.1:{port}"

        def ready() -> bool:
            if not pid_alive(pid):
                return True  # stop waiting: reported below
            if not ca.exists():
                return False
            try:
                probe = EngineClient([addr], ca_file=str(ca))
                try:
                    h = probe.health(addr, timeout=1.0)
                finally:
                    probe.close()
            except (OSError, ValueError):
                return False
            return bool(h.get("initialized")) and not h.get("sealed", True)

        if not wait_until(ready, timeout=START_TIMEOUT, interval=0.1) or not pid_alive(pid):
            state = "exited" if not pid_alive(pid) else f"did not answer within {START_TIMEOUT:g} s"
            raise VaultmeshError(f"the throwaway OpenBao for policy tests {state}; its log ends with:\n"
                                 + log_tail(log), hint="check --engine, or run with --live")
        client = EngineClient([addr], ca_file=str(ca), token=root_token, retry=RetryPolicy(deadline=10.0))
        yield client
    finally:
        if client is not None:
            client.close()
        stop_process(pid, timeout=5.0)
        shutil.rmtree(tmp, ignore_errors=True)


def throwaway_resources(spec: ResourcesSpec, *, ca_pem: str, public_pem: str) -> list[Resource]:
    """What goes into the throwaway server: the file's objects minus ``SKIPPED_KINDS``, with JWT mounts
    trusting ``public_pem`` for ``TEST_ISSUER``. Sensitive references get dummy values (never read)."""
    dummies = {ref: "vaultmesh-policytest" for _, ref in secret_refs(spec)}
    desired = desired_resources(spec, secrets=dummies, hash_key=secrets.token_bytes(32),
                                placeholders={"issuer_url": TEST_ISSUER, "ca_pem": ca_pem})
    out = []
    for r in desired:
        if r.kind in SKIPPED_KINDS:
            continue
        if r.kind == "jwt_config":
            r = dataclasses.replace(r, body={"jwt_validation_pubkeys": [public_pem], "bound_issuer": TEST_ISSUER},
                                    sensitive_fields=frozenset(), write_only_fields=frozenset(), digests={})
        out.append(r)
    return out


def _seed_throwaway(client: EngineClient, resources: list[Resource]) -> None:
    from vaultmesh.reconcile.apply import perform

    # dev mode mounts a kv-v2 at secret/; the file may declare its own there
    client.request("DELETE", "sys/mounts/secret")
    for action in plan_changes(resources, ObservedState()).executable():
        try:
            perform(client, action)
        except (EngineError, ValueError) as err:
            raise VaultmeshError(f"setting up the throwaway OpenBao failed at {action.op} {action.kind} "
                                 f"{action.key.id}: {err}") from None


def _run_throwaway(spec: ResourcesSpec, engine: str | None) -> Report:
    from vaultmesh.runtime.local import resolve_engine

    engine_path = resolve_engine(engine).path
    key = new_signing_key(time.time())
    with throwaway_server(engine_path) as client:
        ca_pem = Path(client.ca_file or "").read_text()
        _seed_throwaway(client, throwaway_resources(spec, ca_pem=ca_pem, public_pem=key.public_pem()))
        scopes = {ns: scope for ns, _, scope in walk_scopes(spec)}
        return _evaluate_all(_Target(client, key, TEST_ISSUER, scopes, "throwaway OpenBao"), spec)


def _run_live(spec: ResourcesSpec, live_dir: Path) -> Report:
    from vaultmesh.identity.keys import KeyRing
    from vaultmesh.identity.server import read_issuer_record
    from vaultmesh.lifecycle import mesh as m

    mesh = m.open_mesh(live_dir)
    needs_jwt = any(exp.login is not None for exp in spec.expect)
    issuer, signer = "", None
    if needs_jwt:
        try:
            record = read_issuer_record(live_dir)
            if record is None:
                raise FileNotFoundError(str(mesh.paths.issuer_record))
            issuer = record.issuer
            signer = KeyRing.load(mesh.paths.identity_keys).active
        except (FileNotFoundError, VaultmeshError) as err:
            raise VaultmeshError(f"the mesh's identity issuer is not set up in {mesh.paths.identity_dir} ({err})",
                                 hint="`vaultmesh up` starts it") from None
    client = mesh.client(token=m.admin_token(mesh))
    try:
        scopes = {ns: scope for ns, _, scope in walk_scopes(spec)}
        target = _Target(client, signer or new_signing_key(time.time()), issuer, scopes, f"live mesh {live_dir}")
        return _evaluate_all(target, spec)
    finally:
        client.close()


def run_policy_tests(spec: ResourcesSpec, *, base_dir: Path, live_dir: Path | None,
                     engine: str | None) -> Report:
    """Evaluate every ``expect`` assertion; ``live_dir`` None: in a throwaway server. ``base_dir`` is the mesh
    file's folder (policy files were read at load time; kept for symmetry with apply)."""
    del base_dir
    if not spec.expect:
        raise VaultmeshError("the mesh file has no expect blocks: there is nothing to test",
                             hint="add expect: [{login: {mount, role}, can: {...}, cannot: {...}}]")
    if live_dir is not None:
        return _run_live(spec, live_dir)
    return _run_throwaway(spec, engine)
