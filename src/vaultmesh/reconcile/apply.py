"""The apply edge: read the mesh's state, plan against the file, perform the plan. All I/O is here; the
decisions are in ``resources``, ``observe`` and ``plan`` (pure).

State kept by apply, in ``<dir>/reconcile/`` (0700; files 0600), never any secret value:
  hash.key       the key of the keyed digests (HMAC-SHA256) of write-only fields
  applied.json   {resource id: {field: digest}} of write-only fields as last applied
  audit.json     the audit devices declared by the last apply (rendered into every node's config)
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultmesh.api.admin import retry_while_upgrading
from vaultmesh.api.client import EngineClient
from vaultmesh.errors import ApplyFailed, EngineError, StateError, VaultmeshError
from vaultmesh.fsutil import read_json, write_json
from vaultmesh.identity.server import read_issuer_record
from vaultmesh.lifecycle import mesh as m
from vaultmesh.reconcile.budget import budgets
from vaultmesh.reconcile.observe import Read, observed_state, parse_mounts, reads_needed
from vaultmesh.reconcile.plan import Action, Delete, Plan, applied_hashes, plan_changes, requests_for
from vaultmesh.reconcile.resources import Resource, desired_resources, secret_values
from vaultmesh.reconcile.state import ReconcileState
from vaultmesh.render.node import DEFAULT_AUDIT, AuditDevice
from vaultmesh.runtime.local import tracked_pid, wait_until
from vaultmesh.spec.models import MeshSpec
from vaultmesh.spec.resources import read_confined

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def placeholders(mesh: m.Mesh) -> dict[str, str]:
    """Values for ``{{vaultmesh.<name>}}`` in the mesh file: the mesh CA and its identity issuer's URL."""
    out = {"ca_pem": mesh.paths.ca_cert.read_text()}
    with contextlib.suppress(StateError):
        record = read_issuer_record(mesh.paths.root)
        if record is not None:
            out["issuer_url"] = record.issuer
    return out


def desired_for(mesh: m.Mesh, spec: MeshSpec, *, base_dir: Path,
                env: Mapping[str, str] | None = None) -> list[Resource]:
    def read_file(name: str) -> str:
        return read_confined(base_dir, name)

    values = secret_values(spec, env=os.environ if env is None else env, read_file=read_file)
    return desired_resources(spec, secrets=values, hash_key=ReconcileState(mesh.paths).hash_key(),
                             placeholders=placeholders(mesh))


def _read(client: EngineClient, read: Read) -> dict[str, Any] | None:
    ns = read.namespace or None
    if read.method == "LIST":
        resp = client.request("GET", read.path, params={"list": "true"}, namespace=ns, consistent=True)
    else:
        resp = client.request("GET", read.path, namespace=ns, consistent=True)
    return None if resp.status == 404 else resp.data


def gather(client: EngineClient, desired: list[Resource]) -> Any:
    """Run the read rounds ``observe.reads_needed`` asks for; returns the ObservedState."""
    responses: dict[Read, Any] = {}
    while todo := reads_needed(desired, responses):
        for read in todo:
            try:
                responses[read] = _read(client, read)
            except EngineError as err:
                if err.status == 403:
                    raise
                responses[read] = None
    return observed_state(desired, responses)


def make_plan(mesh: m.Mesh, client: EngineClient, spec: MeshSpec, *, base_dir: Path,
              env: Mapping[str, str] | None = None) -> tuple[Plan, list[Resource]]:
    desired = desired_for(mesh, spec, base_dir=base_dir, env=env)
    observed = gather(client, desired)
    previous = ReconcileState(mesh.paths).previous_hashes()
    return plan_changes(desired, observed, previous_hashes=previous), desired


def _accessors(client: EngineClient, namespace: str) -> dict[str, str]:
    resp = client.read("sys/auth", namespace=namespace or None, consistent=True)
    prefix = f"{namespace}/" if namespace else ""
    return {prefix + path: info.accessor for path, info in parse_mounts(resp).items()}


def perform(client: EngineClient, action: Action) -> None:
    """Send the writes of one action; accessors are read fresh (mounts of this apply exist by now)."""
    ns = action.key.namespace
    accessors: dict[str, str] = {}
    if action.kind == "policy" and not isinstance(action, Delete):
        accessors = _accessors(client, ns)
        if ns:
            accessors.update(_accessors(client, ""))
    for req in requests_for(action, accessors=accessors):
        def send(req: Any = req) -> None:
            client.request(req.method, req.path, dict(req.body) if req.body is not None else None,
                           namespace=req.namespace or None)

        if action.kind == "kv_secret":  # a KV v2 mount made earlier in this apply may still be setting up
            retry_while_upgrading(send)
        else:
            send()


VERIFY_TIMEOUT = 5.0
"""How long a write may take to become readable (a KV v2 mount made in this apply may still be setting up)."""


def unverified(client: EngineClient, desired: list[Resource], plan: Plan, previous: Mapping[str, Any],
               done: list[Action], *, timeout: float = VERIFY_TIMEOUT) -> list[Action]:
    """Read the mesh back after ``done``: the actions of ``done`` a fresh plan would still take (their writes
    were acknowledged but are not there), empty when the mesh holds what was declared. Deletes are done when
    OpenBao acknowledged them."""
    hashes = applied_hashes(plan, previous, executed=done)
    wanted = {a.key for a in done if not isinstance(a, Delete)}
    still: list[Action] = []

    def settled() -> bool:
        again = plan_changes(desired, gather(client, desired), previous_hashes=hashes)
        still[:] = [a for a in again.executable() if a.key in wanted and not isinstance(a, Delete)]
        return not still

    if wanted:
        wait_until(settled, timeout=timeout, interval=0.2)
    return [a for a in done if a.key in {b.key for b in still}]


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    performed: tuple[Action, ...]
    audit_changed: bool


def checksum_refusal(plan: Plan, reviewed: str | None, *, prune: bool) -> ApplyFailed | None:
    """Why ``plan`` is not the plan that was reviewed (``reviewed``: its checksum), or None when it is."""
    if not reviewed or plan.checksum(prune=prune) == reviewed:
        return None
    if plan.checksum(prune=not prune) == reviewed:
        said, now = ("with", "without") if not prune else ("without", "with")
        return ApplyFailed(f"the plan was reviewed {said} --prune and is applied {now} it (checksum differs)",
                           hint="give --prune to both plan and apply, or to neither")
    return ApplyFailed("the mesh or the file changed since the plan was reviewed (checksum differs)",
                       hint="run `vaultmesh plan` again and review it")


def apply(mesh: m.Mesh, client: EngineClient, spec: MeshSpec, *, base_dir: Path, prune: bool = False,
          force: bool = False, reviewed_checksum: str | None = None, progress: Progress = _quiet,
          env: Mapping[str, str] | None = None, partial: bool = False) -> ApplyResult:
    """Plan, check, then perform each action in order. Stops at the first failure with the action named;
    what was done stays done and is recorded, so a re-run continues from there.

    ``partial``: the file declares only objects of its own beside the user's file (bench and chaos apply
    theirs so): nothing is pruned, the records of objects it does not declare are kept, and the audit devices
    and lease budgets stay as the user's file set them."""
    if partial and prune:
        raise ValueError("a partial file prunes nothing")
    plan, desired = make_plan(mesh, client, spec, base_dir=base_dir, env=env)
    refusal = checksum_refusal(plan, reviewed_checksum, prune=prune)
    if refusal is not None:
        raise refusal
    plan.raise_if_unsafe(force=force, prune=prune)
    state = ReconcileState(mesh.paths)
    previous = state.previous_hashes()
    done: list[Action] = []
    try:
        for action in plan.executable(prune=prune):
            progress(f"{action.marker} {action.kind} {action.key.id}")
            try:
                perform(client, action)
            except (EngineError, ValueError) as err:
                raise ApplyFailed(f"{action.op} {action.kind} {action.key.id} failed: {err}",
                                  hint=f"{len(done)} earlier action(s) are done; fix the cause and re-run apply"
                                  ) from None
            done.append(action)
    finally:
        # Only what reads back as written is recorded: an acknowledged write that is not there is not "applied".
        try:
            missing = unverified(client, desired, plan, previous, done) if done else []
        except VaultmeshError:  # the read-back itself failed: keep the acknowledgements, as before
            missing = []
        verified = [a for a in done if a not in missing]
        if verified:
            hashes = applied_hashes(plan, previous, executed=verified)
            write_json(state.paths.reconcile_applied, {**previous, **hashes} if partial else hashes)
    if missing:
        first = missing[0]
        raise ApplyFailed(f"{first.op} {first.kind} {first.key.id}: OpenBao acknowledged the write but reading it "
                          f"back shows it is not there ({len(missing)} action(s) so); not recorded as applied",
                          hint="check the node logs (a standby answering after a failover?) and re-run apply")
    if partial:
        return ApplyResult(plan, tuple(done), False)
    # the lease budgets of the file last applied, for the keeper to watch (OpenBao has no lease quotas)
    write_json(state.paths.reconcile_budgets, [b.to_json() for b in budgets(spec)])
    audit_changed = apply_audit(mesh, spec, progress=progress)
    return ApplyResult(plan, tuple(done), audit_changed)


# -- audit devices: config-only in OpenBao, so apply renders them into every node and reloads ------------

def declared_audit(spec: MeshSpec) -> list[AuditDevice]:
    out = [DEFAULT_AUDIT]
    for name, dev in sorted(spec.audit.items()):
        opts = {k: (str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in dev.options.model_dump(exclude_none=True).items()}
        out.append(AuditDevice(dev.type, name, opts))
    return out


def apply_audit(mesh: m.Mesh, spec: MeshSpec, *, progress: Progress = _quiet) -> bool:
    """Render the declared audit devices into every node config and reload (SIGHUP) the running nodes when
    they changed. Returns whether anything changed."""
    state = ReconcileState(mesh.paths)
    wanted = [{"type": d.type, "name": d.name, "options": d.options} for d in declared_audit(spec)[1:]]
    try:
        current = read_json(state.paths.reconcile_audit)
    except FileNotFoundError:
        current = []
    if current == wanted:
        return False
    progress(f"~ audit devices: {', '.join(d['name'] for d in wanted) or '(default only)'}")
    write_json(state.paths.reconcile_audit, wanted)
    m.render_configs(mesh)
    for node in mesh.layout.nodes:
        pid = tracked_pid(node.pid_file, str(node.config_file))
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
    return True


def audit_devices_seen(client: EngineClient) -> set[str]:
    data = client.read("sys/audit", consistent=True) or {}
    body = data.get("data", data)
    return {str(k).strip("/") for k, v in body.items() if isinstance(v, Mapping) and "type" in v}


def wait_audit(client: EngineClient, names: set[str], timeout: float = 15.0) -> bool:
    return wait_until(lambda: names <= audit_devices_seen(client), timeout=timeout, interval=0.2)
