"""Render one node's OpenBao server config. Pure: values in, HCL text out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultmesh.layout import ADMIN_POLICY, ADMIN_USER, MeshLayout, NodeLayout, host_view
from vaultmesh.render.hcl import Block, Value, render_document
from vaultmesh.spec.models import LifecycleSpec

ADMIN_PASSWORD_ENV = "VAULTMESH_ADMIN_PASSWORD"
"""Self-initialisation reads the admin password from this variable of node 1's environment at its first
start only (the file it comes from is 0600; it is never in argv or in the config file)."""

SEAL_TOKEN_ENV = "VAULTMESH_SEAL_TOKEN"
TRANSIT_KEY = "vaultmesh-unseal"
TRANSIT_POLICY = "vaultmesh-seal"

ADMIN_POLICY_HCL = """\
# vaultmesh-admin: the operator's policy. Everything, including sudo paths; no root token survives bootstrap.
path "*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list", "sudo"]
}
"""


@dataclass(frozen=True)
class AuditDevice:
    """A declarative audit device. Options must be identical on every node (relative paths)."""

    type: str
    name: str
    options: dict[str, str] = field(default_factory=dict)


DEFAULT_AUDIT = AuditDevice("file", "vaultmesh", {"file_path": "audit.log"})


def _env(var: str) -> dict[str, Value]:
    return {"eval_type": "string", "eval_source": "env", "env_var": var, "require_present": True}


CANARY_MOUNT = "vaultmesh-canary"
"""The KV v2 mount bootstrap makes for the snapshot canary (``snapshot.save`` writes ``<mount>/data/canary``)."""
CANARY_TRANSIT = "vaultmesh-transit"
"""The transit mount bootstrap makes for the snapshot canary; its key ``CANARY_KEY`` encrypts the canary's nonce."""
CANARY_KEY = "canary"


def bootstrap_requests(spec: LifecycleSpec) -> list[tuple[str, str, str, dict[str, Value]]]:
    """The self-initialisation requests: (name, operation, path, data). Run once, on node 1 only (and by
    ``up`` with the root token of a Shamir init).

    They make the admin policy and the admin userpass login, tune autopilot for fast promotion, and make the
    snapshot canary's mounts: a KV v2 mount and a transit mount with one key, where every snapshot writes a
    nonce and its ciphertext, so a restore drill can prove that data written before a snapshot comes back.
    The internal root token that runs them is revoked by OpenBao afterwards.
    """
    ap = spec.raft.autopilot
    return [
        ("admin_policy", "update", f"sys/policies/acl/{ADMIN_POLICY}", {"policy": ADMIN_POLICY_HCL}),
        ("admin_auth", "update", "sys/auth/userpass",
         {"type": "userpass", "description": "vaultmesh operator login (bootstrap)"}),
        ("admin_user", "update", f"auth/userpass/users/{ADMIN_USER}",
         {"password": _env(ADMIN_PASSWORD_ENV), "token_policies": [ADMIN_POLICY],
          "token_ttl": "1h", "token_max_ttl": "8h"}),
        ("autopilot", "update", "sys/storage/raft/autopilot/configuration",
         {"server_stabilization_time": ap.server_stabilization_time,
          "cleanup_dead_servers": ap.cleanup_dead_servers,
          "dead_server_last_contact_threshold": "24h", "min_quorum": spec.nodes}),
        ("canary_kv", "update", f"sys/mounts/{CANARY_MOUNT}",
         {"type": "kv", "options": {"version": "2"}, "description": "vaultmesh snapshot canary (bootstrap)"}),
        ("canary_transit", "update", f"sys/mounts/{CANARY_TRANSIT}",
         {"type": "transit", "description": "vaultmesh snapshot canary (bootstrap)"}),
        ("canary_key", "update", f"{CANARY_TRANSIT}/keys/{CANARY_KEY}", {"type": "aes256-gcm96"}),
    ]


def _seal_block(spec: LifecycleSpec, layout: MeshLayout, seal_token: str | None) -> Block | None:
    seal = spec.seal
    if seal.type == "shamir":
        return None
    if seal.type == "static":
        return Block("seal", ("static",), {"current_key_id": "k1",
                                           "current_key": f"file://{layout.paths.static_key}"})
    if seal.type == "transit":
        assert layout.seal_node is not None
        return Block("seal", ("transit",), {
            "address": layout.seal_node.api_addr,
            **({"token": seal_token} if seal_token else {}),
            "key_name": TRANSIT_KEY,
            "mount_path": "transit/",
            "tls_ca_cert": str(layout.paths.ca_cert),
            "tls_server_name": "localhost",
        })
    return Block("seal", (seal.type,), dict(seal.options))


def _listener(node: NodeLayout, ca: Path) -> Block:
    return Block("listener", ("tcp",), {
        "address": f"{node.host}:{node.api_port}",
        "cluster_address": f"{node.host}:{node.cluster_port}",
        "tls_cert_file": str(node.cert_file),
        "tls_key_file": str(node.key_file),
        "tls_min_version": "tls12",
    }, [Block("telemetry", (), {"unauthenticated_metrics_access": True})])


def render_node_config(spec: LifecycleSpec, layout: MeshLayout, node: NodeLayout, *,
                       self_init: bool, audit: list[AuditDevice] | None = None,
                       seal_token: str | None = None) -> str:
    """The HCL config of ``node``. ``self_init`` adds the bootstrap ``initialize`` stanza (node 1 only:
    on every node, each would initialise a cluster of its own). ``seal_token``: the transit seal's token
    (the config file is 0600)."""
    ca = layout.paths.ca_cert
    ap = spec.raft.autopilot
    storage = Block("storage", ("raft",), {
        "path": str(node.data_dir),
        "node_id": node.name,
        "performance_multiplier": spec.raft.performance_multiplier,
        "autopilot_reconcile_interval": ap.reconcile_interval,
        "autopilot_update_interval": ap.update_interval,
    }, [Block("retry_join", (), {"leader_api_addr": peer.api_addr, "leader_ca_cert_file": str(ca),
                                 "leader_tls_servername": "localhost"})
        for peer in layout.nodes if peer.name != node.name])
    blocks = [_listener(node, ca), storage]
    seal = _seal_block(spec, layout, seal_token)
    if seal is not None:
        blocks.append(seal)
    blocks.append(Block("telemetry", (), {"prometheus_retention_time": "60s", "disable_hostname": True}))
    for dev in audit if audit is not None else [DEFAULT_AUDIT]:
        blocks.append(Block("audit", (dev.type, dev.name), {}, [Block("options", (), dict(dev.options))]))
    if self_init:
        blocks.append(Block("initialize", ("vaultmesh",), {}, [
            Block("request", (name,), {"operation": op, "path": path, "data": data})
            for name, op, path, data in bootstrap_requests(spec)
        ]))
    attrs: dict[str, Any] = {
        "ui": False,
        "cluster_name": layout.name,
        "api_addr": node.api_addr,
        "cluster_addr": node.cluster_addr,
        "log_level": spec.log_level,
    }
    return render_document(attrs, blocks)


def render_hosted_config(spec: LifecycleSpec, layout: MeshLayout, node: NodeLayout, *, self_init: bool,
                         audit: list[AuditDevice] | None = None, seal_token: str | None = None) -> str:
    """The config of ``node`` as the host it runs on reads it: ``render_node_config`` with the mesh seen from
    that host (``layout.host_view``: a hosted node's paths are those of the mesh's folder there; a local node's
    are the state dir's). What ``vaultmesh up`` stages and pushes and ``export ansible`` ships is this text."""
    seen, as_seen = host_view(layout, node)
    return render_node_config(spec, seen, as_seen, self_init=self_init, audit=audit, seal_token=seal_token)


def render_seal_node_config(layout: MeshLayout, *, log_level: str = "info") -> str:
    """The transit seal node: one node, its own static key, transit engine and a periodic token made
    by self-initialisation. The token's id comes from the seal node's environment at first start."""
    node = layout.seal_node
    assert node is not None
    requests: list[tuple[str, str, str, dict[str, Value]]] = [
        ("transit_mount", "update", "sys/mounts/transit", {"type": "transit"}),
        ("transit_key", "update", f"transit/keys/{TRANSIT_KEY}", {"type": "aes256-gcm96"}),
        ("seal_policy", "update", f"sys/policies/acl/{TRANSIT_POLICY}", {"policy": (
            f'path "transit/encrypt/{TRANSIT_KEY}" {{ capabilities = ["update"] }}\n'
            f'path "transit/decrypt/{TRANSIT_KEY}" {{ capabilities = ["update"] }}\n')}),
        ("seal_token", "update", "auth/token/create-orphan", {
            "id": _env(SEAL_TOKEN_ENV), "policies": [TRANSIT_POLICY], "period": "768h",
            "no_default_policy": True, "display_name": "vaultmesh-transit-seal"}),
    ]
    blocks = [
        _listener(node, layout.paths.ca_cert),
        Block("storage", ("raft",), {"path": str(node.data_dir), "node_id": "seal", "performance_multiplier": 1}),
        Block("seal", ("static",), {"current_key_id": "k1",
                                    "current_key": f"file://{node.dir / 'seal.key'}"}),
        Block("audit", ("file", "vaultmesh"), {}, [Block("options", (), {"file_path": "audit.log"})]),
        Block("initialize", ("seal",), {}, [
            Block("request", (name,), {"operation": op, "path": path, "data": data})
            for name, op, path, data in requests
        ]),
    ]
    return render_document({"ui": False, "api_addr": node.api_addr, "cluster_addr": node.cluster_addr,
                            "log_level": log_level}, blocks)
