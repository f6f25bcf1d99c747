"""certs.report: which certificates a mesh has, the rows of `certs status`, and when a leaf is due."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from vaultmesh import pki
from vaultmesh.certs.report import (
    RENEW_AT,
    Facts,
    Row,
    Target,
    due,
    due_targets,
    expiry_gauges,
    facts_of_pem,
    host_port,
    reissue_names,
    renew_when,
    row_of,
    soonest,
    table_rows,
    targets,
)
from vaultmesh.layout import build_layout

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def facts(serial: str = "aa", *, start: dt.datetime = T0, days: int = 90, dns: tuple[str, ...] = ("localhost",),
          ips: tuple[str, ...] = ("127.0.0.1",)) -> Facts:
    return Facts("CN=node-1", "O=vaultmesh,CN=vaultmesh m CA", serial, start, start + days * DAY, dns, ips)


def layout(*, transit: bool = False):  # type: ignore[no-untyped-def]
    zones = [("node-1", "a"), ("node-2", "b"), ("node-3", "c")]
    return build_layout("m", Path("/s"), zones, list(range(9000, 9011)), transit_seal=transit)


def test_every_certificate_of_a_mesh_is_a_target_in_report_order() -> None:
    got = targets(layout(transit=True), entry=True, issuer="127.0.0.1:7000", keeper="127.0.0.1:7001")
    assert [(t.name, t.kind, t.address) for t in got] == [
        ("node-1", "node", "127.0.0.1:9000"), ("node-2", "node", "127.0.0.1:9002"),
        ("node-3", "node", "127.0.0.1:9004"), ("seal", "seal", "127.0.0.1:9007"),
        ("entry", "entry", "127.0.0.1:9006"), ("identity", "issuer", "127.0.0.1:7000"),
        ("keeper", "keeper", "127.0.0.1:7001"), ("ca", "ca", None)]
    assert got[0].cert_file == Path("/s/nodes/node-1/tls/cert.pem")
    assert got[3].key_file == Path("/s/seal/node/tls/key.pem")
    # the entry passes TLS through and the CA is not a listener's: neither is a leaf rotate renews
    assert [t.name for t in got if not t.leaf] == ["entry", "ca"]


def test_no_entry_and_no_seal_node_no_rows_for_them() -> None:
    names = [t.name for t in targets(layout(), entry=False, issuer=None, keeper=None)]
    assert names == ["node-1", "node-2", "node-3", "identity", "keeper", "ca"]


def test_host_port_of_a_url() -> None:
    assert host_port("https://127.0.0.1:8200/metrics") == "127.0.0.1:8200"
    assert host_port(None) is None and host_port("") is None


def test_a_leaf_is_due_at_two_thirds_of_its_life() -> None:
    f = facts(days=90)
    assert pytest.approx(2 / 3) == RENEW_AT
    assert renew_when(f) == T0 + 60 * DAY
    assert not due(f, T0 + 60 * DAY - dt.timedelta(seconds=1))
    assert due(f, T0 + 60 * DAY)
    assert due(f, T0 + 100 * DAY)  # expired: due too
    assert not due(facts(days=1), T0 + dt.timedelta(hours=15))
    assert due(facts(days=1), T0 + dt.timedelta(hours=16))


def test_facts_of_a_real_certificate() -> None:
    ca = pki.create_ca("vaultmesh m CA", now=T0, days=3650)
    leaf = pki.issue_server_cert(ca, "node-2", dns_names=["localhost", "node-2"], ip_addresses=["127.0.0.1"],
                                 now=T0, days=90)
    f = facts_of_pem(leaf.cert_pem)
    assert f.common_name == "node-2" and "vaultmesh m CA" in f.issuer
    assert f.serial == format(leaf.cert.serial_number, "x")
    assert f.not_after == T0 + 90 * DAY and f.dns_names == ("localhost", "node-2")
    assert f.ip_addresses == ("127.0.0.1",)
    assert f.days_left(T0 + 30 * DAY) == pytest.approx(60)


def test_a_successor_keeps_the_names_and_always_has_localhost() -> None:
    assert reissue_names(facts(dns=("localhost", "node-1"), ips=("127.0.0.1", "10.213.4.11")), [], []) == (
        ["localhost", "node-1"], ["127.0.0.1", "10.213.4.11"])
    assert reissue_names(None, ["localhost", "node-3"], ["127.0.0.1", "::1"]) == (
        ["localhost", "node-3"], ["127.0.0.1", "::1"])
    assert reissue_names(facts(dns=("node-1",), ips=("::1",)), [], []) == (["localhost", "node-1"],
                                                                          ["127.0.0.1", "::1"])


NODE = Target("node-1", "node", "127.0.0.1:9000", Path("/c"), Path("/k"))


def test_a_row_is_what_the_listener_serves_and_flags_a_pending_reload() -> None:
    same = row_of(NODE, served=facts("aa"), failure=None, file=facts("aa"))
    assert same.source == "listener" and not same.pending and same.down is None
    stale = row_of(NODE, served=facts("aa"), failure=None, file=facts("bb"))
    assert stale.pending and stale.file_serial == "bb" and stale.facts.serial == "aa"  # type: ignore[union-attr]


def test_a_listener_that_is_down_shows_its_file_and_why() -> None:
    row = row_of(NODE, served=None, failure="down: connection refused", file=facts("bb"))
    assert row.source == "file" and row.down == "down: connection refused" and row.facts.serial == "bb"  # type: ignore[union-attr]
    doc = row.to_json(T0 + 30 * DAY)
    assert doc == {"name": "node-1", "address": "127.0.0.1:9000", "subject": "CN=node-1", "serial": "bb",
                   "issuer": "O=vaultmesh,CN=vaultmesh m CA", "not_after": "2026-04-01T00:00:00Z",
                   "days_left": 60.0, "source": "file", "down": "down: connection refused", "file_serial": None}
    bare = row_of(NODE, served=None, failure="down: not running", file=None).to_json(T0)
    assert bare["serial"] is None and bare["days_left"] is None


def test_table_rows_say_where_each_certificate_was_read() -> None:
    rows = [row_of(NODE, served=facts("aabbccddeeff0011"), failure=None, file=facts("ff")),
            Row("ca", None, "file", facts("cc", days=3650))]
    table = table_rows(rows, T0)
    assert table[0][:4] == ("node-1", "127.0.0.1:9000", "node-1", "aabbccddeeff")
    assert table[0][4] == "vaultmesh m CA" and table[0][6] == "90"
    assert table[0][7] == "listener; file holds ff, reload pending"
    assert table[1][1] == "-" and table[1][7] == "file"


def test_the_soonest_expiry_and_the_gauges() -> None:
    rows = [Row("node-1", "a", "listener", facts("1", days=90)), Row("keeper", "b", "listener", facts("2", days=30)),
            Row("identity", "c", "file", None, down="never started")]
    first = soonest(rows)
    assert first is not None and first.name == "keeper"
    assert expiry_gauges(rows) == {"node-1": (T0 + 90 * DAY).timestamp(), "keeper": (T0 + 30 * DAY).timestamp()}
    assert soonest([]) is None


def test_due_targets_renew_a_due_file_a_due_listener_or_a_missing_file() -> None:
    ts = targets(layout(), entry=True, issuer="127.0.0.1:7000", keeper="127.0.0.1:7001")
    now = T0 + 61 * DAY
    fresh = facts("new", start=T0 + 59 * DAY)
    files = {"node-1": facts("old"), "node-2": fresh, "node-3": fresh, "identity": None, "keeper": fresh}
    rows = [Row("node-3", "x", "listener", facts("old")), Row("keeper", "y", "listener", fresh)]
    got = [t.name for t in due_targets(ts, rows, files, now)]
    # node-1: its file is due; node-3: its file is new but the listener still serves a due one; identity: no file
    assert got == ["node-1", "node-3", "identity"]
    assert [t.name for t in due_targets(ts, rows, {**files, "node-1": fresh, "identity": fresh, "node-3": fresh},
                                        now) if t.name != "node-3"] == []
