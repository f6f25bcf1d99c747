"""Renderers for a Plan, separate from the plan itself: text (for humans and review), JSON, summary.

The text is plain (no markup, no square brackets) so it prints the same through ``rich`` with markup on or
off; colour, if any, is the CLI's business, keyed on the first character of a line (``+ ~ - =``).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from vaultmesh.reconcile.plan import Action, Delete, NoOp, Plan
from vaultmesh.spec.types import format_duration

_LABELS = {
    "namespace": "namespace", "auth_mount": "auth method", "secrets_mount": "secrets engine",
    "policy": "policy", "jwt_config": "jwt config", "kubernetes_config": "kubernetes config",
    "db_connection": "database connection", "pki_root": "pki root CA", "pki_urls": "pki urls",
    "jwt_role": "jwt role", "approle_role": "approle role", "kubernetes_role": "kubernetes role",
    "db_role": "database role", "pki_role": "pki role", "transit_key": "transit key", "kv_secret": "kv seed",
}


_MARKUP_LIKE = re.compile(r"\[(?=[a-z#/@])")


def summary(plan: Plan, *, prune: bool = False) -> str:
    """One line: ``Plan: 3 to create, 1 to update, 0 to delete, 2 unmanaged (kept; --prune deletes), 9 unchanged.``"""
    c = plan.counts()
    deletes = c["delete"] + (c["prune"] if prune else 0)
    text = f"Plan: {c['create']} to create, {c['update']} to update, {deletes} to delete"
    if c["prune"] and not prune:
        text += f", {c['prune']} unmanaged (kept; --prune deletes them)"
    return text + f", {c['noop']} unchanged."


def _value(field: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and (field.endswith("ttl") or
                                                                   field.endswith("period")):
        return f"{value} ({format_duration(value)})"
    if isinstance(value, str) and value.startswith("(") and (value.startswith("(sensitive")
                                                             or value.startswith("(not readable")):
        return value
    # rich would read "[true]" as a markup tag and drop it: keep such brackets out of tag shape.
    return _MARKUP_LIKE.sub("[ ", json.dumps(value, sort_keys=True))


def _text_lines(old: Any, new: Any) -> list[str] | None:
    """A line diff for multi-line strings (policies, PEM), else None."""
    if (isinstance(new, str) and "\n" in new.strip()) or (isinstance(old, str) and "\n" in old.strip()):
        a = old.strip().splitlines() if isinstance(old, str) else []
        b = new.strip().splitlines() if isinstance(new, str) else []
        diff = [line for line in list(difflib.unified_diff(a, b, lineterm="", n=2))[2:]
                if not line.startswith("@@")]
        return [f"{line[0]} {line[1:]}" for line in diff] or [f"  {line}" for line in b]
    return None


def _action_lines(a: Action) -> list[str]:
    head = f"{a.marker} {_LABELS.get(a.kind, a.kind)}  {a.key.id}"
    if isinstance(a, Delete) and a.prune:
        head += "  (unmanaged)"
    lines = [head]
    for ch in a.changes:
        if a.op == "create" and ch.new in (None, "", [], {}):
            continue  # sent (it clears any old value) but says nothing to a reviewer
        sign = "+" if a.op == "create" else "~"
        diff = _text_lines(ch.old, ch.new)
        if diff is not None:
            lines.append(f"    {sign} {ch.field}:")
            lines.extend(f"        {line}" for line in diff)
        elif a.op == "create":
            lines.append(f"    + {ch.field} = {_value(ch.field, ch.new)}")
        else:
            lines.append(f"    ~ {ch.field}: {_value(ch.field, ch.old)} -> {_value(ch.field, ch.new)}")
    lines.extend(f"    # {note}" for note in a.notes)
    return lines


def render_text(plan: Plan, *, prune: bool = False, verbose: bool = False) -> str:
    """The reviewable plan: a summary, the checksum, then each action in the order apply performs them.

    Unchanged objects are shown only with ``verbose`` (or when they carry a note)."""
    out = [summary(plan, prune=prune), f"Checksum: {plan.checksum(prune=prune)}"]
    for a in plan.actions:
        if isinstance(a, NoOp) and not (verbose or a.notes):
            continue
        out.append("")
        out.extend(_action_lines(a))
    if not plan.has_changes and not (prune and plan.counts()["prune"]):
        out.append("")
        out.append("No changes: the mesh matches the file.")
    return "\n".join(out) + "\n"


def render_json(plan: Plan, *, prune: bool = False) -> str:
    """``--json``: the same information as the text, machine-readable; no secret values."""
    doc = {
        "checksum": plan.checksum(prune=prune),
        "summary": plan.counts(),
        "prune": prune,
        "actions": [a.to_dict() for a in plan.actions],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
