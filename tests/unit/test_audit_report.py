"""The audit report over audit lines in OpenBao 2.7.2's shape (taken from a real node's audit.log)."""

from __future__ import annotations

import json
from typing import Any

from vaultmesh.audit.report import FAILURES, LONG_TTL, UNUSUAL_PEERS, build, is_login, parse_line, text

H = "hmac-sha256:"


def line(path: str, *, op: str = "read", who: str = "", role: str = "", entity: str = "", error: str = "",
         plugin_error: bool = False, issued: dict[str, Any] | None = None, t: str = "2026-12-03T10:42:24.001319994Z",
         remote: str = "127.0.0.1", role_field: str = "", kind: str = "response") -> str:
    auth: dict[str, Any] = {"token_type": "service"}
    if who:
        auth.update(display_name=who, client_token=H + "aa", accessor=H + "bb", entity_id=entity,
                    metadata={"role": role} if role else {}, policies=["default"])
    request: dict[str, Any] = {"id": "x", "operation": op, "path": path, "namespace": {"id": "root"},
                               "remote_address": remote, "mount_type": "jwt" if path.startswith("auth/") else "kv"}
    if role_field:
        request["data"] = {"jwt": H + "cc", "role": role_field}
    response: dict[str, Any] = {"mount_point": path.split("/")[0] + "/"}
    if plugin_error:
        response["data"] = {"error": H + "dd"}
    if issued:
        response["auth"] = issued
    doc: dict[str, Any] = {"time": t, "type": kind, "auth": auth, "request": request, "response": response}
    if error:
        doc["error"] = error
    return json.dumps(doc)


def login_ok(sub: str, *, ttl: int = 60, role: str = "batch") -> str:
    return line("auth/jwt/login", op="update", role_field=H + role, issued={
        "display_name": f"jwt-{sub}", "metadata": {"role": role}, "entity_id": f"e-{sub}", "token_ttl": ttl})


def test_a_line_becomes_an_event_and_requests_are_skipped() -> None:
    e = parse_line(line("secret/data/a", who="jwt-a", role="batch", entity="e-a"), "node-2")
    assert e and e.node == "node-2" and e.who == "jwt-a" and e.role == "batch" and e.error == ""
    assert abs(e.time - 1796294544.001319) < 1e-3
    assert parse_line(line("secret/data/a", kind="request")) is None
    assert parse_line("not json") is None and parse_line("") is None


def test_logins_are_told_apart_from_other_auth_paths() -> None:
    for path, want in (("auth/jwt/login", True), ("auth/userpass/login/bob", True), ("auth/team/jwt/login", True),
                       ("auth/jwt/role/batch", False), ("secret/data/login", False)):
        e = parse_line(line(path))
        assert e and is_login(e) is want, path


def test_identities_count_requests_logins_and_denials() -> None:
    lines = [login_ok("a"), line("secret/data/a", who="jwt-a", role="batch", entity="e-a"),
             line("sys/mounts", who="jwt-a", role="batch", entity="e-a",
                  error="1 error occurred:\n\t* permission denied\n\n")]
    r = build(filter(None, (parse_line(x) for x in lines)))
    (ident,) = r.identities
    assert ident["who"] == "jwt-a" and ident["logins"] == 1 and ident["requests"] == 2 and ident["denied"] == 1
    (denied,) = r.denied
    assert denied["path"] == "sys/mounts" and denied["operation"] == "read" and denied["who"] == "jwt-a"


def test_repeated_failed_logins_from_one_address_are_flagged_and_fewer_are_not() -> None:
    bad = [line("auth/jwt/login", op="update", role_field=H + "r1", plugin_error=True, remote="10.1.1.1")
           for _ in range(FAILURES)]
    few = [line("auth/jwt/login", op="update", role_field=H + "r1", plugin_error=True, remote="10.2.2.2")
           for _ in range(FAILURES - 1)]
    r = build(filter(None, (parse_line(x) for x in bad + few)))
    assert [(f["remote"], f["count"]) for f in r.auth_failures] == [("10.1.1.1", FAILURES)]


def test_a_read_no_peer_of_its_role_made_is_unusual() -> None:
    lines = [line("secret/data/common", who=f"jwt-{i}", role="batch", entity=f"e-{i}") for i in range(UNUSUAL_PEERS)]
    lines.append(line("secret/data/payroll", who="jwt-0", role="batch", entity="e-0"))
    r = build(filter(None, (parse_line(x) for x in lines)))
    assert [(u["identity"], u["path"]) for u in r.unusual_reads] == [("e-0", "secret/data/payroll")]
    # with too few peers there is no baseline
    r = build(filter(None, (parse_line(x) for x in lines[UNUSUAL_PEERS - 1:])))
    assert r.unusual_reads == []


def test_long_lived_tokens_and_the_compliance_summary() -> None:
    lines = [login_ok("a", ttl=LONG_TTL + 1), login_ok("b", ttl=LONG_TTL),
             line("secret/data/x", who="jwt-a", role="batch", entity="e-a"),
             line("secret/data/x", who="jwt-a", role="batch", entity="e-a"),
             line("sys/health", who="jwt-a", role="batch", entity="e-a")]
    r = build(filter(None, (parse_line(x) for x in lines)))
    assert [(t["who"], t["ttl"]) for t in r.long_ttl_tokens] == [("jwt-a", LONG_TTL + 1)]
    assert r.compliance == [{"who": "jwt-a", "path": "secret/data/x", "reads": 2}]


def test_since_keeps_only_later_events_and_the_text_names_every_section() -> None:
    lines = [line("secret/data/x", who="jwt-a", t="2026-12-03T09:00:00Z"),
             line("secret/data/y", who="jwt-a", t="2026-12-03T11:00:00Z")]
    events = [e for e in (parse_line(x) for x in lines) if e]
    r = build(events, since=events[1].time)
    assert r.events == 1 and [c["path"] for c in r.compliance] == ["secret/data/y"]
    out = "\n".join(text(r))
    for title in ("identities", "denied: none", "repeated authentication failures", "unusual reads",
                  "tokens with a TTL over", "who read which path: 1"):
        assert title in out
    assert H not in out
