"""A second audit device streams every request off the node to a central receiver: a real rsyslog (Debian's
``rsyslogd``, listening with imtcp on a free loopback port) gets OpenBao's audit lines from a socket device
declared in the mesh file, and the doctor's second-device check passes. The seed's advice: two devices, so one
failing device does not stop the mesh."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultmesh.reconcile.apply import apply
from vaultmesh.runtime.local import free_ports, stop_processes
from vaultmesh.spec.load import parse_spec
from vaultmesh.waiting import wait_until

from .conftest import MeshHandle
from .test_lifecycle import run_cli

pytestmark = pytest.mark.integration

RSYSLOG_CONF = """global(workDirectory="{work}" maxMessageSize="256k")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="audit") {{ action(type="omfile" file="{out}" template="raw") }}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="audit")
"""


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("rsyslogd")
    if binary is None:
        pytest.skip("rsyslogd is not installed (Debian package rsyslog; .ci/run installs it)")
    port, out = free_ports(1)[0], tmp_path / "central.jsonl"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=tmp_path, out=out, port=port))
    proc = subprocess.Popen([binary, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import socket

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        assert wait_until(listening, timeout=10), "rsyslogd did not listen"
        yield port, out
    finally:
        stop_processes([proc.pid], timeout=5)
        proc.wait(timeout=5)


def test_a_socket_device_streams_audit_lines_to_rsyslog(make_mesh: Callable[..., MeshHandle],
                                                        rsyslog: tuple[int, Path]) -> None:
    port, out = rsyslog
    handle = make_mesh()
    text = (f"audit:\n  central:\n    type: socket\n    options:\n      address: 127.0.0.1:{port}\n"
            "      socket_type: tcp\n")
    result = apply(handle.mesh, handle.client(), parse_spec(text, source="central.yaml"), base_dir=handle.dir)
    assert result.audit_changed
    admin = handle.client()
    devices = admin.read("sys/audit")["data"]
    assert {"vaultmesh/", "central/"} <= set(devices) and devices["central/"]["type"] == "socket"
    admin.write("sys/policies/acl/streamed-marker", {"policy": 'path "secret/*" { capabilities = ["read"] }'})

    def streamed() -> list[dict[str, object]]:
        if not out.exists():
            return []
        docs = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
        mine = [d for d in docs if (d.get("request") or {}).get("path") == "sys/policies/acl/streamed-marker"]
        # the response line follows the request line: wait for both, not for the first
        return mine if {d["type"] for d in mine} >= {"request", "response"} else []

    docs = wait_until(streamed, timeout=20)
    assert {d["type"] for d in docs} == {"request", "response"}
    assert all(str((d.get("auth") or {}).get("client_token", "")).startswith("hmac-sha256:") for d in docs)
    checks = {c["id"]: c for c in json.loads(run_cli(handle.dir, "doctor", "--json", check=False).stdout)["checks"]}
    assert checks["audit.second"]["status"] == "pass", checks["audit.second"]
