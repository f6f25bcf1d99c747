"""Rendering: each node's OpenBao config (HCL) and the entry's HAProxy config, from the spec and the layout."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vaultmesh import pki
from vaultmesh.layout import MeshLayout, NodeLayout, build_layout
from vaultmesh.render.entry import render_entry_config
from vaultmesh.render.hcl import Block, render_block, render_document
from vaultmesh.render.node import (
    ADMIN_PASSWORD_ENV,
    ADMIN_POLICY_HCL,
    AuditDevice,
    bootstrap_requests,
    render_node_config,
    render_seal_node_config,
)
from vaultmesh.spec.models import LifecycleSpec, zone_layout

ROOT = Path("/state/mesh")
PORTS = list(range(18200, 18220))


def mesh(spec: LifecycleSpec, root: Path = ROOT) -> MeshLayout:
    return build_layout("vaultmesh", root, zone_layout(spec), PORTS, transit_seal=spec.seal.type == "transit")


def config(spec: LifecycleSpec | None = None, node: int = 0, *, self_init: bool = False, **kw) -> str:
    spec = spec or LifecycleSpec()
    layout = mesh(spec)
    return render_node_config(spec, layout, layout.nodes[node], self_init=self_init, **kw)


def blocks(text: str, header: str) -> list[str]:
    """The top-level blocks whose first line starts with ``header`` (e.g. ``storage "raft"``), as text."""
    found, current = [], None
    for line in text.splitlines():
        if current is None and line.startswith(header) and line.endswith("{"):
            current = [line]
        elif current is not None:
            current.append(line)
            if line == "}":
                found.append("\n".join(current))
                current = None
    return found


def block(text: str, header: str) -> str:
    [only] = blocks(text, header)
    return only


def balanced(text: str) -> bool:
    """A tiny HCL syntax check: braces and brackets balance outside strings; strings close on their line."""
    depth: list[str] = []
    in_string = escaped = False
    pairs = {"}": "{", "]": "["}
    for ch in text:
        if in_string:
            if ch == "\n":
                return False
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth.append(ch)
        elif ch in "}]" and (not depth or depth.pop() != pairs[ch]):
            return False
    return not depth and not in_string


# -- listener ------------------------------------------------------------------------------------------------

def test_the_listener_serves_tls_with_that_node_s_own_certificate_and_key():
    listener = block(config(node=1), 'listener "tcp"')
    node = mesh(LifecycleSpec()).nodes[1]
    assert f'address = "127.0.0.1:{node.api_port}"' in listener
    assert f'cluster_address = "127.0.0.1:{node.cluster_port}"' in listener
    assert f'tls_cert_file = "{ROOT}/nodes/node-2/tls/cert.pem"' in listener
    assert f'tls_key_file = "{ROOT}/nodes/node-2/tls/key.pem"' in listener
    assert "tls_disable" not in listener


def test_the_listener_allows_unauthenticated_metrics():
    listener = block(config(), 'listener "tcp"')
    assert "telemetry {" in listener
    assert "unauthenticated_metrics_access = true" in listener


def test_the_node_advertises_its_own_api_and_cluster_addresses():
    text = config(node=2)
    node = mesh(LifecycleSpec()).nodes[2]
    assert f'api_addr = "https://127.0.0.1:{node.api_port}"' in text
    assert f'cluster_addr = "https://127.0.0.1:{node.cluster_port}"' in text


# -- storage -------------------------------------------------------------------------------------------------

def test_raft_storage_is_named_for_the_node_and_keeps_data_in_its_dir():
    storage = block(config(node=1), 'storage "raft"')
    assert 'node_id = "node-2"' in storage
    assert f'path = "{ROOT}/nodes/node-2/data"' in storage


def test_retry_join_lists_every_other_node_and_never_the_node_itself():
    spec = LifecycleSpec(nodes=5)
    layout = mesh(spec)
    for node in layout.nodes:
        storage = block(render_node_config(spec, layout, node, self_init=False), 'storage "raft"')
        joined = re.findall(r'leader_api_addr = "([^"]+)"', storage)
        assert joined == [n.api_addr for n in layout.nodes if n.name != node.name]


def test_retry_join_verifies_the_leader_against_the_mesh_ca():
    storage = block(config(), 'storage "raft"')
    assert storage.count(f'leader_ca_cert_file = "{ROOT}/pki/ca.pem"') == 2
    assert storage.count('leader_tls_servername = "localhost"') == 2


def test_the_raft_performance_multiplier_comes_from_the_spec():
    storage = block(config(LifecycleSpec(raft={"performance_multiplier": 5})), 'storage "raft"')
    assert "performance_multiplier = 5" in storage


# -- telemetry and audit -------------------------------------------------------------------------------------

def test_telemetry_keeps_prometheus_metrics():
    assert "prometheus_retention_time = " in block(config(), "telemetry")


def test_the_audit_stanza_is_identical_on_every_node():
    spec = LifecycleSpec(nodes=5)
    layout = mesh(spec)
    audits = {block(render_node_config(spec, layout, n, self_init=n.name == "node-1"), "audit")
              for n in layout.nodes}
    assert len(audits) == 1


def test_the_default_audit_device_writes_to_a_relative_file_path():
    audit = block(config(), 'audit "file" "vaultmesh"')
    assert 'file_path = "audit.log"' in audit


def test_declared_audit_devices_replace_the_default():
    text = config(audit=[AuditDevice("socket", "siem", {"address": "127.0.0.1:9090"})])
    assert blocks(text, 'audit "file"') == []
    assert 'address = "127.0.0.1:9090"' in block(text, 'audit "socket" "siem"')


# -- self-initialisation -------------------------------------------------------------------------------------

def test_the_initialize_stanza_is_rendered_with_self_init():
    assert blocks(config(self_init=True), 'initialize "vaultmesh"')


def test_the_initialize_stanza_is_absent_without_self_init():
    for node in range(3):
        assert blocks(config(node=node, self_init=False), "initialize") == []


def test_the_admin_password_is_read_from_the_environment_never_written(monkeypatch: pytest.MonkeyPatch):
    secret = "s3cret-admin-password-value"
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, secret)
    text = config(self_init=True)
    assert secret not in text
    init = block(text, 'initialize "vaultmesh"')
    assert f'"env_var" = "{ADMIN_PASSWORD_ENV}"' in init
    assert '"eval_source" = "env"' in init


def test_self_initialisation_sets_autopilot_min_quorum_to_the_node_count():
    assert '"min_quorum" = 5' in block(config(LifecycleSpec(nodes=5), self_init=True), "initialize")


def test_bootstrap_makes_the_snapshot_canary_mounts_and_key():
    requests = {path: data for _, _, path, data in bootstrap_requests(LifecycleSpec())}
    assert requests["sys/mounts/vaultmesh-canary"]["type"] == "kv"
    assert requests["sys/mounts/vaultmesh-canary"]["options"] == {"version": "2"}
    assert requests["sys/mounts/vaultmesh-transit"]["type"] == "transit"
    assert "vaultmesh-transit/keys/canary" in requests
    init = block(config(self_init=True), 'initialize "vaultmesh"')
    assert 'path = "vaultmesh-transit/keys/canary"' in init


def test_the_admin_policy_lets_the_keeper_write_the_canary():
    from vaultmesh.spec.policy import parse_policy

    (rule,) = parse_policy(ADMIN_POLICY_HCL)  # one glob over every path: the canary's write and encrypt too
    assert rule.path == "*" and {"create", "update", "read"} <= set(rule.capabilities)


# -- seals ---------------------------------------------------------------------------------------------------

def test_the_static_seal_reads_the_key_file():
    seal = block(config(), 'seal "static"')
    assert f'current_key = "file://{ROOT}/seal/static.key"' in seal


def test_the_transit_seal_points_at_the_seal_node_and_trusts_the_mesh_ca():
    spec = LifecycleSpec(seal={"type": "transit"})
    layout = mesh(spec)
    assert layout.seal_node is not None
    seal = block(config(spec), 'seal "transit"')
    assert f'address = "{layout.seal_node.api_addr}"' in seal
    assert f'tls_ca_cert = "{ROOT}/pki/ca.pem"' in seal
    assert layout.seal_node.api_addr not in {n.api_addr for n in layout.nodes}


def test_the_transit_seal_carries_its_token_only_when_given():
    spec = LifecycleSpec(seal={"type": "transit"})
    assert 'token = "vmseal-abc"' in block(config(spec, seal_token="vmseal-abc"), 'seal "transit"')
    assert "token" not in block(config(spec), 'seal "transit"')


def test_a_shamir_mesh_has_no_seal_block():
    assert blocks(config(LifecycleSpec(seal={"type": "shamir"})), "seal") == []


def test_kms_seal_options_are_passed_through_verbatim():
    spec = LifecycleSpec(seal={"type": "awskms", "options": {"region": "eu-west-1", "kms_key_id": "alias/m"}})
    seal = block(config(spec), 'seal "awskms"')
    assert 'region = "eu-west-1"' in seal
    assert 'kms_key_id = "alias/m"' in seal


def test_the_seal_node_config_has_its_own_static_seal_and_no_peers():
    layout = mesh(LifecycleSpec(seal={"type": "transit"}))
    assert layout.seal_node is not None
    text = render_seal_node_config(layout)
    assert f'current_key = "file://{layout.seal_node.dir}/seal.key"' in text
    assert "retry_join" not in text
    assert balanced(text)


# -- HCL -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    LifecycleSpec(),
    LifecycleSpec(nodes=5, seal={"type": "transit"}),
    LifecycleSpec(seal={"type": "shamir", "key_shares": 3, "key_threshold": 2}),
    LifecycleSpec(seal={"type": "gcpckms", "options": {"project": "p", "key_ring": "r"}}),
], ids=["static", "transit", "shamir", "gcpckms"])
def test_every_rendered_node_config_has_balanced_braces(spec: LifecycleSpec):
    layout = mesh(spec)
    for i, node in enumerate(layout.nodes):
        assert balanced(render_node_config(spec, layout, node, self_init=i == 0))


def test_hcl_strings_escape_quotes_backslashes_and_newlines():
    text = render_block(Block("x", ("a\"b",), {"s": 'say "hi"\nthen \\ leave'}))
    assert text == 'x "a\\"b" {\n  s = "say \\"hi\\"\\nthen \\\\ leave"\n}\n'
    assert balanced(text)


def test_hcl_values_render_bools_numbers_lists_and_maps():
    text = render_document({"on": True, "off": False, "n": 3, "l": ["a", 1]}, [Block("b", (), {"m": {"k": "v"}})])
    assert text == 'on = true\noff = false\nn = 3\nl = ["a", 1]\n\nb {\n  m = {\n    "k" = "v"\n  }\n}\n'


def test_a_state_dir_with_quotes_renders_valid_hcl():
    spec = LifecycleSpec()
    layout = mesh(spec, root=Path('/tmp/we"ird dir'))
    text = render_node_config(spec, layout, layout.nodes[0], self_init=True)
    assert balanced(text)
    assert 'tls_cert_file = "/tmp/we\\"ird dir/nodes/node-1/tls/cert.pem"' in text


# -- entry (HAProxy) -----------------------------------------------------------------------------------------

def server_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("server ")]


def test_the_entry_lists_every_node_once():
    layout = mesh(LifecycleSpec(nodes=5))
    names = [line.split()[1] for line in server_lines(render_entry_config(layout))]
    assert names == [n.name for n in layout.nodes]


def test_the_entry_checks_every_node_over_verified_tls_against_the_mesh_ca():
    layout = mesh(LifecycleSpec())
    for line in server_lines(render_entry_config(layout)):
        assert " check " in f"{line} "
        assert " check-ssl " in line
        assert " verify required " in line
        assert f" ca-file {ROOT}/pki/ca.pem " in line


def test_the_entry_points_each_server_at_that_node_s_api_port():
    layout = mesh(LifecycleSpec())
    lines = server_lines(render_entry_config(layout))
    for node in layout.nodes:
        assert any(line.startswith(f"server {node.name} 127.0.0.1:{node.api_port} ") for line in lines)


def test_the_entry_routes_only_to_the_active_node():
    text = render_entry_config(mesh(LifecycleSpec()))
    assert re.search(r"uri /v1/sys/health\n", text), "only the active node answers 200 without standbyok"
    assert "standbyok" not in text, "no standby fallback: TCP connections would stay pinned to a standby"
    assert "on-marked-down shutdown-sessions" in text


def test_the_entry_listens_on_the_entry_port_on_loopback():
    layout = mesh(LifecycleSpec())
    assert f"bind 127.0.0.1:{layout.entry_port}\n" in render_entry_config(layout)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_rendered_entry_config(tmp_path: Path):
    layout = mesh(LifecycleSpec(), root=tmp_path)
    ca = pki.create_ca("test", now=dt.datetime.now(dt.UTC), days=1)
    layout.paths.ca_cert.parent.mkdir(parents=True)
    layout.paths.ca_cert.write_bytes(ca.cert_pem)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_entry_config(layout))
    result = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr


# -- layout --------------------------------------------------------------------------------------------------

def test_the_layout_gives_each_node_two_ports_then_the_entry_then_the_seal_node():
    layout = build_layout("m", ROOT, [("node-1", "a"), ("node-2", "b")], [1, 2, 3, 4, 5, 6, 7], transit_seal=True)
    assert [(n.api_port, n.cluster_port) for n in layout.nodes] == [(1, 2), (3, 4)]
    assert layout.entry_port == 5
    assert layout.seal_node == NodeLayout("seal", "seal", 6, 7, ROOT / "seal" / "node")
    assert sorted(layout.all_ports()) == [1, 2, 3, 4, 5, 6, 7]


def test_the_layout_refuses_too_few_ports():
    with pytest.raises(ValueError, match="need 5 ports, got 4"):
        build_layout("m", ROOT, [("node-1", "a"), ("node-2", "b")], [1, 2, 3, 4], transit_seal=False)


# -- HCL as OpenBao reads it (hashicorp/hcl v1) --------------------------------------------------------------

def test_characters_outside_the_basic_plane_are_not_written_as_surrogate_escapes():
    text = render_block(Block("audit", ("file", "x"), {"file_path": "/srv/\U0001f512/audit.log"}))
    assert not re.search(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}", text)


def test_a_dollar_brace_in_a_value_is_escaped_for_hcl():
    text = render_block(Block("audit", ("file", "x"), {"prefix": "cost=${"}))
    assert "${" not in text
