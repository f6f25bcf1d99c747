"""The plan is a value: desired resources + observed state -> ordered, typed actions with a per-field diff.

Nothing here talks to a server or reads a clock. ``plan_changes`` is the only decision function; renderers
(``render.py``) and the apply edge consume its :class:`Plan`.

Order. Deletes come first, in reverse dependency order (roles before configs before policies before mounts
before namespaces, deeper namespaces first): a mount whose type changed must be gone before it is created
again, and nothing being deleted is referenced by the desired state. Then creates and updates in dependency
order: namespaces, mounts (enable + tune), policies, configs, roles, KV seeds.

Unmanaged objects (found on the server, absent from the file) become ``Delete(prune=True)``: listed in every
plan, executed only with ``--prune``. Built-ins are never listed: ``sys/``, ``identity/``, ``cubbyhole/``,
``token/`` auth, the ``default`` and ``root`` policies, and what vaultmesh's bootstrap made at the root
(``userpass/`` auth, the ``vaultmesh-admin`` policy). Nor are the bench's objects (root mounts and policies
named ``vaultmesh-bench...``, applied by ``vaultmesh bench`` and ``chaos`` from a file of their own).

Secrets. No secret value reaches a plan: a sensitive field shows as ``(sensitive) <8 hex>``, the start of a
keyed digest (see ``resources.digest`` for why keyed). Fields OpenBao never returns (passwords, KV values,
``verify_connection``, a PKI root's parameters) cannot be diffed against the server: they are compared with
the digests recorded at the last apply (``previous_hashes``, the content of ``applied.json``, which the apply
edge keeps and updates with :func:`applied_hashes`). Such a field is written when the object is created, and
again when its digest differs from the recorded one (or none was recorded).

Checksum. ``Plan.checksum()`` is the sha256 of the canonical JSON of the actions that apply would perform,
with digests instead of values. Apply re-plans, compares, and refuses if anything changed since review.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from vaultmesh.errors import UnsafePlan
from vaultmesh.reconcile.observe import Observed, ObservedState
from vaultmesh.reconcile.resources import (
    NESTED_FIELDS,
    PHASES,
    PRUNABLE,
    UNORDERED_FIELDS,
    Loc,
    Resource,
    ResourceKey,
    Sensitive,
    canonical_json,
    resource_order,
)
from vaultmesh.render.node import CANARY_KEY, CANARY_MOUNT, CANARY_TRANSIT
from vaultmesh.spec.policy import fill_accessors
from vaultmesh.spec.resources import BENCH_PREFIX, BOOTSTRAP_AUTH, BOOTSTRAP_POLICY, BUILTIN_POLICIES

DEFAULT_MAX_DELETES = 3
"""More deletes than this in one apply needs ``--force``: pruning a few stale roles is routine, a dozen
deletes is usually a wrong file or a wrong mesh."""

ALWAYS_UNSAFE_KINDS = frozenset({"namespace", "secrets_mount"})
"""Deleting these destroys everything stored inside (secrets, leases, child objects): always needs force."""

PreviousHashes = Mapping[str, Mapping[str, str]]
"""``applied.json`` hashes: {resource id: {field: digest}}."""


@dataclass(frozen=True)
class FieldChange:
    """One field's change, display-safe: ``old``/``new`` never hold secret values."""

    field: str
    old: Any
    new: Any
    sensitive: bool = False
    fingerprint: str | None = None
    """Full digest of the new value for fields compared by digest; feeds the checksum, never shown."""

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new, "sensitive": self.sensitive}


@dataclass(frozen=True, kw_only=True)
class Action:
    op: ClassVar[str]
    marker: ClassVar[str]
    kind: str
    key: ResourceKey
    changes: tuple[FieldChange, ...] = ()
    notes: tuple[str, ...] = ()
    source: Loc = ()

    @property
    def prunable_only(self) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, redacted: what renderers show and what the checksum covers (plus fingerprints)."""
        return {"op": self.op, "kind": self.kind, "namespace": self.key.namespace, "path": self.key.path,
                "id": self.key.id, "changes": [c.to_dict() for c in self.changes], "notes": list(self.notes)}

    def _checksum_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        d["fingerprints"] = {c.field: c.fingerprint for c in self.changes if c.fingerprint}
        return d


@dataclass(frozen=True, kw_only=True)
class Create(Action):
    op: ClassVar[str] = "create"
    marker: ClassVar[str] = "+"
    resource: Resource

    def _checksum_dict(self) -> dict[str, Any]:
        return {**super()._checksum_dict(), "after_create": list(self.resource.after_create)}


@dataclass(frozen=True, kw_only=True)
class Update(Action):
    op: ClassVar[str] = "update"
    marker: ClassVar[str] = "~"
    resource: Resource
    observed: Observed


@dataclass(frozen=True, kw_only=True)
class Delete(Action):
    op: ClassVar[str] = "delete"
    marker: ClassVar[str] = "-"
    observed: Observed
    prune: bool = False
    """Unmanaged: deleted only with ``--prune``."""
    replace: bool = False
    """Deleted so it can be created again (a mount whose type changed)."""

    @property
    def prunable_only(self) -> bool:
        return self.prune

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "prune": self.prune, "replace": self.replace}


@dataclass(frozen=True, kw_only=True)
class NoOp(Action):
    op: ClassVar[str] = "noop"
    marker: ClassVar[str] = "="
    resource: Resource


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    def executable(self, *, prune: bool = False) -> list[Action]:
        """What apply performs, in order: every change, and unmanaged deletes only with ``prune``."""
        return [a for a in self.actions if not isinstance(a, NoOp) and (prune or not a.prunable_only)]

    def checksum(self, *, prune: bool = False) -> str:
        """``sha256:<hex>`` of the canonical JSON of ``executable(prune=prune)``; no secret values inside."""
        payload = canonical_json([a._checksum_dict() for a in self.executable(prune=prune)])
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "delete": 0, "prune": 0, "noop": 0}
        for a in self.actions:
            out["prune" if a.prunable_only else a.op] += 1
        return out

    @property
    def has_changes(self) -> bool:
        return bool(self.executable(prune=False))

    def raise_if_unsafe(self, *, force: bool = False, prune: bool = False,
                        max_deletes: int = DEFAULT_MAX_DELETES) -> None:
        """Refuse (UnsafePlan) a plan that deletes more than ``max_deletes`` objects, or any namespace or
        secrets engine, unless ``force``."""
        if force:
            return
        deletes = [a for a in self.executable(prune=prune) if isinstance(a, Delete)]
        destructive = [a for a in deletes if a.kind in ALWAYS_UNSAFE_KINDS]
        if destructive:
            names = ", ".join(a.key.id for a in destructive[:3]) + (" ..." if len(destructive) > 3 else "")
            raise UnsafePlan(f"this plan deletes {len(destructive)} namespace(s) or secrets engine(s) and "
                             f"everything stored in them: {names}",
                             hint="review the plan, then apply with --force")
        if len(deletes) > max_deletes:
            names = ", ".join(a.key.id for a in deletes[:3]) + (" ..." if len(deletes) > 3 else "")
            raise UnsafePlan(f"this plan deletes {len(deletes)} objects ({names}), more than the limit of "
                             f"{max_deletes}", hint="review the plan, then apply with --force")


# -- comparison ------------------------------------------------------------------------------------------

def _norm(field: str, value: Any) -> Any:
    """Comparable form: strings stripped, empties as None, order-free lists sorted."""
    if isinstance(value, str):
        value = value.replace("\r\n", "\n").strip()
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, list):
        items = [_norm(field, v) for v in value]
        if field in UNORDERED_FIELDS:
            items = sorted(items, key=canonical_json)
        return items
    if isinstance(value, dict):
        items = {str(k): _norm(str(k), v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v is not None} or None
    return value


def _order_free_claims(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: sorted(v) if isinstance(v, list) else v for k, v in value.items()}
    return value


def _same(field: str, desired: Any, observed: Any) -> bool:
    if field == "bound_claims":
        desired, observed = _order_free_claims(desired), _order_free_claims(observed)
    return _norm(field, desired) == _norm(field, observed)


def _show(value: Any) -> Any:
    """Display-safe value: Secrets as ``(sensitive) <8 hex>``."""
    if isinstance(value, Sensitive):
        return str(value)
    if isinstance(value, dict):
        return {k: _show(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_show(v) for v in value]
    return value


def _flat(body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(field, value) with mount sub-objects flattened to ``config.max_lease_ttl``."""
    out = []
    for k, v in body.items():
        if k in NESTED_FIELDS and isinstance(v, Mapping):
            out.extend((f"{k}.{sub}", sv) for sub, sv in v.items())
        else:
            out.append((k, v))
    return out


def _lookup(body: Mapping[str, Any], dotted: str) -> Any:
    head, _, sub = dotted.partition(".")
    if sub and head in NESTED_FIELDS:
        inner = body.get(head)
        return inner.get(sub) if isinstance(inner, Mapping) else None
    return body.get(dotted)


def _fingerprint(r: Resource, field: str) -> str | None:
    return r.digests.get(field)


def _create(r: Resource) -> Create:
    changes = tuple(FieldChange(f, None, _show(v), sensitive=f in r.sensitive_fields,
                                fingerprint=_fingerprint(r, f)) for f, v in _flat(r.body))
    notes = tuple(f"then POST {p}" for p in r.after_create)
    return Create(kind=r.kind, key=r.key, changes=changes, notes=notes, source=r.source, resource=r)


def _diff(r: Resource, o: Observed, previous: Mapping[str, str]) -> tuple[list[FieldChange], list[str]]:
    changes: list[FieldChange] = []
    notes: list[str] = []
    for f, v in _flat(r.body):
        top = f.partition(".")[0] if f.partition(".")[0] in NESTED_FIELDS else f
        if top in r.write_only_fields:
            continue
        now = _lookup(o.body, f)
        if _same(f, v, now):
            continue
        if top in r.create_only_fields:
            notes.append(f"{f} is fixed at creation: the server has {now!r}, the file says {_show(v)!r}; "
                         "recreate it by hand to change it")
            continue
        changes.append(FieldChange(f, _show(now), _show(v)))
    for f in sorted(r.write_only_fields):
        prev, cur = previous.get(f), r.digests[f]
        if prev == cur:
            continue
        if f in r.create_only_fields:
            if prev is not None:
                notes.append(f"{f} changed since the last apply but is only sent at creation"
                             + (" (the root credential was rotated)" if r.after_create else ""))
            continue
        sensitive = f in r.sensitive_fields
        if sensitive:
            old = f"(sensitive) {prev[:8]}" if prev else "(sensitive, not recorded)"
        else:
            old = f"(not readable; last applied {prev[:8]})" if prev else "(not readable)"
        changes.append(FieldChange(f, old, _show(r.body[f]), sensitive=sensitive, fingerprint=cur))
    return changes, notes


def _replacement(r: Resource, o: Observed) -> str | None:
    """Why ``o`` must be deleted and created again to become ``r``, or None when a write is enough: a mount
    whose type changed, a rate-limit quota whose role changed (OpenBao ignores an empty role on a write, so
    a role can be set but never cleared)."""
    if r.kind in ("auth_mount", "secrets_mount") and o.body.get("type") not in (None, r.body.get("type")):
        return f"type changes from {o.body.get('type')}: delete and create again"
    if r.kind == "rate_limit_quota" and "role" in o.body and not _same("role", r.body.get("role"), o.body["role"]):
        return (f"role changes from {o.body['role'] or '(every role)'!r} to {r.body.get('role') or '(every role)'!r}: "
                "delete and create again (OpenBao cannot clear a quota's role)")
    return None


def is_bench(key: ResourceKey) -> bool:
    """An object of the bench's own file: at the root, in a mount or policy named ``vaultmesh-bench...``."""
    if key.namespace:
        return False
    parts = key.path.split("/")
    if parts[:2] in (["sys", "auth"], ["sys", "mounts"]) or parts[:3] == ["sys", "policies", "acl"]:
        parts = parts[3:] if parts[1] == "policies" else parts[2:]
    elif parts[0] == "auth":
        parts = parts[1:]
    return bool(parts) and parts[0].startswith(BENCH_PREFIX)


def is_builtin(kind: str, key: ResourceKey) -> bool:
    """Objects vaultmesh never prunes: OpenBao's own, what its bootstrap created at the root (the admin login and
    policy, the snapshot canary's mounts and key), and the bench's."""
    name = key.path.rsplit("/", 1)[-1]
    root = key.namespace == ""
    if is_bench(key) and kind in ("auth_mount", "secrets_mount", "policy"):
        return True
    if kind == "auth_mount":
        return name == "token" or (root and key.path == f"sys/auth/{BOOTSTRAP_AUTH}")
    if kind == "secrets_mount":
        return key.path in ("sys/mounts/sys", "sys/mounts/identity", "sys/mounts/cubbyhole") or (
            root and key.path in (f"sys/mounts/{CANARY_MOUNT}", f"sys/mounts/{CANARY_TRANSIT}"))
    if kind == "transit_key":
        return root and key.path == f"{CANARY_TRANSIT}/keys/{CANARY_KEY}"
    if kind == "policy":
        return name in BUILTIN_POLICIES or (root and name == BOOTSTRAP_POLICY)
    return False


def _delete_order(o: Observed) -> tuple[int, int, str, str]:
    depth = o.namespace.count("/") + (1 if o.namespace else 0)
    return (-PHASES.get(o.kind, 0), -depth, o.namespace, o.path)


def plan_changes(desired: Sequence[Resource], observed: ObservedState, *,
                 previous_hashes: PreviousHashes | None = None) -> Plan:
    """Ordered actions that take the mesh from ``observed`` to ``desired``.

    ``previous_hashes``: the digests recorded by the last apply (``applied.json``), for fields the server never
    returns. Policies' mount templates are filled from ``observed.accessors`` where the mount already exists.
    """
    previous = previous_hashes or {}
    reasons = {r.key: why for r in desired
               if (o := observed.resources.get(r.key)) is not None and (why := _replacement(r, o)) is not None}
    replaced_mounts = {(r.key.namespace, r.mount) for r in desired
                       if r.key in reasons and r.kind in ("auth_mount", "secrets_mount")}
    # OpenBao drops a mount's quotas with the mount: a quota on a replaced mount is created again after it
    replaced = set(reasons) | {r.key for r in desired if r.kind == "rate_limit_quota"
                               and r.key in observed.resources and any(d in reasons for d in r.depends_on)}
    accessors = {m: a for m, a in observed.accessors.items()
                 if not any(m == (f"{ns}/{mount}" if ns else mount) for ns, mount in replaced_mounts)}
    desired_keys = {r.key for r in desired}

    deletes: list[Delete] = []
    for key in sorted(reasons):
        o = observed.resources[key]
        deletes.append(Delete(kind=o.kind, key=key, observed=o, replace=True, notes=(reasons[key],)))
    for key, o in observed.resources.items():
        if key not in desired_keys and o.kind in PRUNABLE and not is_builtin(o.kind, key):
            deletes.append(Delete(kind=o.kind, key=key, observed=o, prune=True,
                                  notes=("not in the mesh file; deleted only with --prune",)))
    deletes.sort(key=lambda d: _delete_order(d.observed))

    rest: list[Action] = []
    for r in sorted(desired, key=resource_order):
        if r.pending_accessors:
            filled = fill_accessors(str(r.body["policy"]), accessors, namespace=r.namespace)
            r = replace(r, body={**r.body, "policy": filled.text}, pending_accessors=filled.pending)
        o = observed.resources.get(r.key)
        if o is None or r.key in replaced:
            rest.append(_create(r))
            continue
        changes, notes = _diff(r, o, previous.get(r.key.id, {}))
        if changes:
            rest.append(Update(kind=r.kind, key=r.key, changes=tuple(changes), notes=tuple(notes),
                               source=r.source, resource=r, observed=o))
        else:
            rest.append(NoOp(kind=r.kind, key=r.key, notes=tuple(notes), source=r.source, resource=r))
    return Plan(tuple(deletes) + tuple(rest))


def applied_hashes(plan: Plan, previous: PreviousHashes | None = None,
                   executed: Iterable[Action] | None = None) -> dict[str, dict[str, str]]:
    """The new ``applied.json`` hashes after ``executed`` (default: every change but prunes) succeeded.

    Records the digests of write-only fields that were sent; keeps the old record of create-only fields on
    update (they were not sent); forgets objects that are no longer in the file, except the bench's (which
    lives in a file of its own beside this one).
    """
    out = {k: dict(v) for k, v in (previous or {}).items()}
    for a in plan.executable(prune=False) if executed is None else executed:
        if isinstance(a, Create):
            out[a.key.id] = dict(a.resource.digests)
        elif isinstance(a, Update):
            old = out.get(a.key.id, {})
            rec = {f: d for f, d in a.resource.digests.items() if f not in a.resource.create_only_fields}
            rec.update({f: old[f] for f in a.resource.create_only_fields if f in old})
            out[a.key.id] = rec
        elif isinstance(a, Delete):
            out.pop(a.key.id, None)
    wanted = {a.key.id for a in plan.actions if isinstance(a, Create | Update | NoOp)}
    wanted |= {k for k in out if is_bench(ResourceKey("", k))}  # the bench's file keeps its records
    return {k: v for k, v in sorted(out.items()) if k in wanted and v}


# -- translating actions into API writes (pure; the apply edge sends them) -------------------------------

@dataclass(frozen=True)
class Request:
    """One API write. ``body`` may hold revealed secret values: never log or print it."""

    method: str  # "POST" | "PATCH" | "DELETE"
    namespace: str
    path: str
    body: Mapping[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Request({self.method} {self.namespace + '/' if self.namespace else ''}{self.path})"


def _reveal(value: Any) -> Any:
    if isinstance(value, Sensitive):
        return value.reveal()
    if isinstance(value, Mapping):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def _seconds(config: Mapping[str, Any]) -> dict[str, Any]:
    """Mount config TTLs as ``"900s"``: the mount endpoints take duration strings."""
    return {k: f"{v}s" if k.endswith("_ttl") and isinstance(v, int) else v for k, v in config.items()}


def requests_for(action: Action, *, accessors: Mapping[str, str] | None = None) -> list[Request]:
    """The writes that perform ``action``, in order. ``accessors``: auth-mount accessors known now (after the
    mount phase of the same apply), to fill policies that were waiting for them.

    Creating a mount sends its tune options in the enable call; updating one tunes it. A transit key is
    created, then configured; deleting one first allows deletion. Namespaces are patched (merge-patch).
    """
    ns = action.key.namespace
    path = action.key.path
    if isinstance(action, Delete):
        pre = [Request("POST", ns, f"{path}/config", {"deletion_allowed": True})] \
            if action.kind == "transit_key" else []
        return [*pre, Request("DELETE", ns, path)]
    if not isinstance(action, Create | Update):
        return []
    r = action.resource
    creating = isinstance(action, Create)
    body = {k: v for k, v in r.body.items() if creating or k not in r.create_only_fields}
    if r.kind == "policy" and r.pending_accessors:
        filled = fill_accessors(str(body["policy"]), accessors or {}, namespace=ns)
        if filled.pending:
            raise ValueError(f"policy {action.key.id} needs the accessor of {', '.join(sorted(filled.pending))}, "
                             "which does not exist yet")
        body["policy"] = filled.text
    body = _reveal(body)
    if r.kind in ("auth_mount", "secrets_mount"):
        config = _seconds(body.get("config", {}))
        if creating:
            return [Request("POST", ns, path, {**body, "config": config})]
        tune = {**config, **({"description": body["description"]} if "description" in body else {}),
                **({"options": body["options"]} if "options" in body else {})}
        return [Request("POST", ns, f"{path}/tune", tune)]
    if r.kind == "namespace":
        if creating:
            return [Request("POST", ns, path, body)]
        old = action.observed.body.get("custom_metadata") or {}  # type: ignore[union-attr]
        meta = {**{k: None for k in old}, **body.get("custom_metadata", {})}
        return [Request("PATCH", ns, path, {"custom_metadata": meta})]
    if r.kind == "kv_secret":
        return [Request("POST", ns, path, {"data": body} if f"/data/{r.name}" in path else body)]
    if r.kind == "transit_key":
        settings = {k: v for k, v in body.items() if k not in ("type", "exportable", "allow_plaintext_backup")}
        if not creating:
            return [Request("POST", ns, f"{path}/config", {k: v for k, v in body.items() if k != "type"})]
        first = {k: v for k, v in body.items() if k in ("type", "exportable", "allow_plaintext_backup",
                                                       "auto_rotate_period")}
        then = {k: v for k, v in settings.items() if k != "auto_rotate_period"}
        return [Request("POST", ns, path, first), *([Request("POST", ns, f"{path}/config", then)] if then else [])]
    out = [Request("POST", ns, path, body)]
    if creating:
        out.extend(Request("POST", ns, p, {}) for p in r.after_create)
    return out
