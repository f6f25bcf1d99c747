"""The status table's rows: pure over a MeshView, the transit seal node included."""

from __future__ import annotations

from vaultmesh.lifecycle.status import STATUS_COLUMNS, status_rows
from vaultmesh.lifecycle.view import MeshView, NodeView


def node(name: str, **kw: object) -> NodeView:
    values: dict[str, object] = dict(pid=100, running=True, reachable=True, initialized=True, sealed=False,
                                     standby=name != "node-1", voter=True, autopilot_healthy=True)
    values.update(kw)
    return NodeView(name, "zone-a", f"https://127.0.0.1:8{name[-1]}00", **values)  # type: ignore[arg-type]


def test_every_row_has_every_column():
    rows = status_rows(MeshView((node("node-1"), node("node-2")), seal_node=node("seal")))
    assert all(len(r) == len(STATUS_COLUMNS) for r in rows)


def test_the_seal_node_has_a_row_of_its_own():
    rows = status_rows(MeshView((node("node-1"),), seal_node=node("seal")))
    assert [r[0] for r in rows] == ["node-1", "seal"]
    assert rows[1][5] == "seal" and rows[1][7] == "yes"


def test_a_dead_seal_node_is_shown_down_and_unhealthy():
    dead = NodeView("seal", "zone-a", "https://127.0.0.1:8900", None, False)
    view = MeshView((node("node-1"),), seal_node=dead)
    assert status_rows(view)[1][5] == "down" and status_rows(view)[1][7] == "no"
    assert not view.healthy


def test_without_a_seal_node_there_is_no_seal_row():
    assert [r[0] for r in status_rows(MeshView((node("node-1"),)))] == ["node-1"]
