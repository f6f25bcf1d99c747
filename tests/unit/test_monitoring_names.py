"""The metric names the rules and the dashboard read: each one is emitted by a real OpenBao 2.7.2 node (a
recorded scrape) or by the keeper's own exporter, and ``metric_names`` finds the names in an expression."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from vaultmesh.keeper.metrics import families
from vaultmesh.lifecycle.keeper_process import KeeperStatus
from vaultmesh.monitoring.names import (
    CERT_EXPIRY,
    KNOWN_METRICS,
    OPENBAO_METRICS,
    VAULTMESH_METRICS,
    metric_names,
    unknown_metrics,
)

DATA = Path(__file__).parent / "data" / "rules"


def recorded(name: str) -> set[str]:
    return {line.strip() for line in (DATA / name).read_text().splitlines() if line and not line.startswith("#")}


def test_every_openbao_name_was_seen_on_a_real_node() -> None:
    seen = recorded("openbao-2.7.2-leader.names") | recorded("openbao-2.7.2-standby.names")
    assert seen >= OPENBAO_METRICS, sorted(OPENBAO_METRICS - seen)


def test_the_status_code_counter_openbao_does_not_emit_is_not_known() -> None:
    seen = recorded("openbao-2.7.2-leader.names")
    assert "vault_core_response_status_code" not in seen
    assert "vault_core_response_status_code" not in KNOWN_METRICS


def test_every_vaultmesh_name_is_what_the_keeper_exports() -> None:
    status = KeeperStatus(pid=1, started=1.0, cycle_at=2.0, healthy_since=1.0,
                          snapshot={"time": 3.0, "size": 10, "index": 7, "failures": 0},
                          drill={"time": 4.0, "ok": True, "rto_s": 5.0, "rpo_s": 6.0})

    class Collector:
        def collect(self):  # type: ignore[no-untyped-def]
            return families(status, {"ca": 9.0, "node-1": 8.0})

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    exported = {line.split(" ")[0].split("{")[0] for line in generate_latest(registry).decode().splitlines()
                if line and not line.startswith("#")}
    assert exported == VAULTMESH_METRICS


def test_the_certificate_gauge_is_the_keepers() -> None:
    from vaultmesh.keeper import metrics

    assert metrics.CERT_EXPIRY == CERT_EXPIRY


def test_metric_names_skips_functions_labels_durations_and_strings() -> None:
    expr = ('max by (node, zone) (vault_core_unsealed{mesh="m",cluster!=""}) == 0 or '
            'sum(increase(vault_audit_log_request_failure{job="x"}[5m])) > 0.5 and on (instance) '
            '(vault_core_active == 1) or vector(0) or time() - max(vaultmesh_drill_last_ok offset 1h) > 1e3')
    assert metric_names(expr) == {"vault_core_unsealed", "vault_audit_log_request_failure", "vault_core_active",
                                  "vaultmesh_drill_last_ok"}


def test_a_subquery_and_a_quantile_are_not_names() -> None:
    assert metric_names('max_over_time(vault_raft_commitTime{quantile="0.99"}[10m:30s])') == {
        "vault_raft_commitTime"}


def test_unknown_metrics_names_what_nobody_emits() -> None:
    assert unknown_metrics("sum(rate(vault_core_response_status_code[5m]))") == {"vault_core_response_status_code"}
    assert unknown_metrics('up{job="vaultmesh-node"} == 0') == set()
