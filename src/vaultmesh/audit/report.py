"""The audit report: what OpenBao's audit devices recorded, summed up for a human. Pure: lines in, a report out.

An audit file holds one JSON document per line, a ``request`` and a ``response`` for every call. Values a
device HMACs (tokens, accessors, request data, error texts of plugins) stay HMAC'd: the report never needs the
clear values, and two equal values still show as equal (a failed login's role, say). It reads the ``response``
entries (they carry both the caller and the outcome):

- identities: requests and logins by who (display name, role, entity) and from where (remote addresses)
- denied: every request answered "permission denied", with its path, operation and who
- repeated authentication failures: logins that failed at least ``FAILURES`` times from the same address for
  the same mount and role
- unusual reads: a path read by one identity of a role that no other identity of that role read (only for
  roles with at least ``UNUSUAL_PEERS`` identities: a baseline needs peers)
- long-lived tokens: logins and token creations whose token TTL is over ``LONG_TTL`` seconds
- compliance: who read which path (read and list operations outside ``sys/`` and ``auth/``), with counts
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FAILURES = 3
UNUSUAL_PEERS = 3
LONG_TTL = 3600
READS = ("read", "list")


@dataclass(frozen=True)
class Event:
    """One audit ``response`` entry, reduced to what the report uses."""

    time: float
    node: str
    path: str
    operation: str
    mount_type: str
    who: str
    """The token's display name ("" for an unauthenticated request, such as a login)."""
    role: str
    entity: str
    remote: str
    error: str
    """The request's error ("" when it succeeded); a plugin's error text is HMAC'd, "failed" stands for it."""
    login_ttl: int | None = None
    """For a login or token creation: the TTL of the token it returned."""
    login_as: str = ""
    """For a login: the display name of the token it returned."""
    role_hmac: str = ""
    """The login request's ``role`` field as the device wrote it (HMAC'd): equal roles compare equal."""


def _when(text: str) -> float:
    """An audit time (RFC 3339, nanoseconds, ``Z``) as Unix seconds; microseconds are enough."""
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]:0<6}{rest[len(digits):]}"
    return dt.datetime.fromisoformat(text).timestamp()


def parse_line(line: str, node: str = "") -> Event | None:
    """One audit line as an ``Event``; None for a request entry, a blank or an unreadable line."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("type") != "response":
        return None
    auth: Mapping[str, Any] = doc.get("auth") or {}
    req: Mapping[str, Any] = doc.get("request") or {}
    resp: Mapping[str, Any] = doc.get("response") or {}
    issued: Mapping[str, Any] = resp.get("auth") or {}
    error = str(doc.get("error") or "")
    if not error and isinstance(resp.get("data"), Mapping) and "error" in resp["data"]:
        error = "failed"
    meta = auth.get("metadata") or issued.get("metadata") or {}
    try:
        when = _when(str(doc.get("time")))
    except ValueError:
        return None
    data = req.get("data") if isinstance(req.get("data"), Mapping) else {}
    return Event(time=when, node=node, path=str(req.get("path") or ""), operation=str(req.get("operation") or ""),
                 mount_type=str(req.get("mount_type") or ""), who=str(auth.get("display_name") or ""),
                 role=str(meta.get("role") or ""), entity=str(auth.get("entity_id") or issued.get("entity_id") or ""),
                 remote=str(req.get("remote_address") or ""), error=_error_text(error),
                 login_ttl=int(issued["token_ttl"]) if isinstance(issued.get("token_ttl"), int) else None,
                 login_as=str(issued.get("display_name") or ""), role_hmac=str((data or {}).get("role") or ""))


def _error_text(error: str) -> str:
    if "permission denied" in error:
        return "permission denied"
    return " ".join(error.replace("*", " ").split())[:200]


def is_login(e: Event) -> bool:
    """A login: ``auth/<mount>/login`` or below it (userpass: ``auth/<mount>/login/<user>``)."""
    parts = e.path.split("/")
    return parts[0] == "auth" and "login" in parts[2:]


@dataclass
class Report:
    since: float | None
    events: int = 0
    first: float | None = None
    last: float | None = None
    identities: list[dict[str, Any]] = field(default_factory=list)
    denied: list[dict[str, Any]] = field(default_factory=list)
    auth_failures: list[dict[str, Any]] = field(default_factory=list)
    unusual_reads: list[dict[str, Any]] = field(default_factory=list)
    long_ttl_tokens: list[dict[str, Any]] = field(default_factory=list)
    compliance: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "events": self.events, "first": self.first, "last": self.last,
                "identities": self.identities, "denied": self.denied, "auth_failures": self.auth_failures,
                "unusual_reads": self.unusual_reads, "long_ttl_tokens": self.long_ttl_tokens,
                "compliance": self.compliance}


def build(events: Iterable[Event], *, since: float | None = None) -> Report:
    """The report over ``events`` at or after ``since`` (Unix seconds; None: all)."""
    chosen = sorted((e for e in events if since is None or e.time >= since), key=lambda e: e.time)
    report = Report(since=since, events=len(chosen))
    if chosen:
        report.first, report.last = chosen[0].time, chosen[-1].time
    ids: dict[tuple[str, str, str], dict[str, Any]] = {}
    failures: Counter[tuple[str, str, str]] = Counter()
    failure_last: dict[tuple[str, str, str], float] = {}
    reads_by_role: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    compliance: Counter[tuple[str, str]] = Counter()
    for e in chosen:
        login = is_login(e)
        if login and e.error:
            key = (e.path, e.remote, e.role_hmac)
            failures[key] += 1
            failure_last[key] = e.time
        if e.who:
            row = ids.setdefault((e.who, e.role, e.entity), {"who": e.who, "role": e.role, "entity": e.entity,
                                                             "requests": 0, "denied": 0, "remote": set()})
            row["requests"] += 1
            row["denied"] += e.error == "permission denied"
            row["remote"].add(e.remote)
        if login and not e.error and e.login_as:
            row = ids.setdefault((e.login_as, e.role, e.entity), {"who": e.login_as, "role": e.role,
                                                                  "entity": e.entity, "requests": 0, "denied": 0,
                                                                  "remote": set()})
            row["logins"] = row.get("logins", 0) + 1
            row["remote"].add(e.remote)
        if e.error == "permission denied":
            report.denied.append({"time": e.time, "who": e.who, "role": e.role, "operation": e.operation,
                                  "path": e.path, "remote": e.remote, "node": e.node})
        if e.login_ttl is not None and e.login_ttl > LONG_TTL and not e.error:
            report.long_ttl_tokens.append({"time": e.time, "who": e.login_as or e.who, "path": e.path,
                                           "ttl": e.login_ttl})
        if e.operation in READS and not e.error and e.who and not e.path.startswith(("sys/", "auth/")):
            compliance[(e.who, e.path)] += 1
            if e.role:
                reads_by_role[e.role][e.path].add(e.entity or e.who)
    report.identities = sorted(({**r, "logins": r.get("logins", 0), "remote": sorted(r["remote"])}
                                for r in ids.values()), key=lambda r: (-r["requests"] - r["logins"], r["who"]))
    report.auth_failures = [{"path": path, "remote": remote, "role": role, "count": n, "last": failure_last[k]}
                            for k, n in failures.most_common() if n >= FAILURES for path, remote, role in [k]]
    for role, paths in sorted(reads_by_role.items()):
        peers = set().union(*paths.values())
        if len(peers) < UNUSUAL_PEERS:
            continue
        for path, readers in sorted(paths.items()):
            if len(readers) == 1:
                report.unusual_reads.append({"role": role, "path": path, "identity": next(iter(readers)),
                                             "peers": len(peers)})
    report.compliance = [{"who": who, "path": path, "reads": n}
                         for (who, path), n in sorted(compliance.items())]
    return report


def text(report: Report, *, limit: int = 20) -> list[str]:
    """The report for a terminal: one section per finding, at most ``limit`` rows each."""

    def stamp(t: float | None) -> str:
        return "-" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    out = [f"{report.events} audited responses, {stamp(report.first)} .. {stamp(report.last)}"]
    sections: list[tuple[str, list[str]]] = [
        ("identities (requests, logins, denied, from)", [
            f"  {r['who']}" + (f" role={r['role']}" if r["role"] else "") + f": {r['requests']} requests, "
            f"{r['logins']} logins, {r['denied']} denied, from {', '.join(r['remote']) or '-'}"
            for r in report.identities]),
        ("denied", [f"  {stamp(d['time'])} {d['who'] or '(no token)'} {d['operation']} {d['path']} from {d['remote']}"
                    for d in report.denied]),
        (f"repeated authentication failures (>= {FAILURES})", [
            f"  {f['count']}x {f['path']} from {f['remote']} (role {f['role'][:20]}...)"
            for f in report.auth_failures]),
        ("unusual reads", [f"  {u['identity']} (role {u['role']}) read {u['path']}, which none of its "
                           f"{u['peers'] - 1} peers read" for u in report.unusual_reads]),
        (f"tokens with a TTL over {LONG_TTL // 3600} h", [
            f"  {stamp(t['time'])} {t['who']} via {t['path']}: {t['ttl'] / 3600:g} h" for t in report.long_ttl_tokens]),
        ("who read which path", [f"  {c['who']}: {c['path']} ({c['reads']}x)" for c in report.compliance]),
    ]
    for title, rows in sections:
        out.append(f"{title}: {len(rows) if rows else 'none'}")
        out.extend(rows[:limit])
        if len(rows) > limit:
            out.append(f"  ... {len(rows) - limit} more (--json for all)")
    return out
