"""What the CLI prints: help without markup, each bench scenario's own help, versions, whole lines when not a
TTY, one JSON document for --json, and `vaultmesh --dir D run` reaching the mesh in D."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner

from vaultmesh.cli.main import cli
from vaultmesh.errors import VaultmeshError
from vaultmesh.workload.reap import TokenInfo

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "playdream" / "mesh.yaml"


def invoke(*args: str, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def every_command(group: click.Group = cli, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += every_command(cmd, (*path, name))
        elif name != "run":  # run's help is argparse's (vaultmesh run --help)
            out.append((*path, name))
    return out


# -- help ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", every_command(), ids=lambda p: " ".join(p) or "vaultmesh")
def test_no_help_shows_rst_markup(path: tuple[str, ...]) -> None:
    result = invoke(*path, "--help")

    assert result.exit_code == 0, result.output
    assert "``" not in result.output and ":class:" not in result.output


def test_policy_help_is_plain_text() -> None:
    assert "the mesh file's expect blocks" in invoke("policy", "--help").output


def test_each_bench_scenario_has_its_own_help() -> None:
    helps = {s: invoke("bench", s, "--help").output for s in ("rollout", "steady", "kv-read", "jwt-login",
                                                              "db-creds")}

    assert len(set(helps.values())) == 5
    assert "--window" in helps["rollout"] and "--window" not in helps["steady"]
    assert "--rate" in helps["steady"] and "--rate" not in helps["rollout"]
    assert "open-loop" in helps["steady"] and "A rollout" in helps["rollout"]


def test_a_bench_scenario_still_accepts_the_options_its_help_does_not_show(tmp_path: Path) -> None:
    result = invoke("bench", "steady", "--window", "1", "--rate", "5", "--dir", str(tmp_path))

    assert result.exit_code == 1
    assert f"no mesh in {tmp_path}" in result.output


def test_vaultmesh_version() -> None:
    from vaultmesh import __version__

    assert invoke("--version").output == f"vaultmesh, version {__version__}\n"


@pytest.mark.parametrize(("argv", "name"), [(["-m", "vaultmesh.cli.entry", "run", "--version"], "vaultmesh run"),
                                             (["-c", "from vaultmesh.workload.cli import run_main; run_main()",
                                               "--version"], "vaultmesh-run")])
def test_run_prints_its_version_not_usage(argv: list[str], name: str) -> None:
    from vaultmesh import __version__

    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{name}, version {__version__}\n"


# -- whole lines when not a TTY -----------------------------------------------------------------------------------


def test_progress_lines_are_never_wrapped_when_stderr_is_not_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    from vaultmesh.cli.common import err_console

    line = "node-2 joined the Raft cluster and waits for autopilot to promote it to a voter " * 3
    console = err_console()
    with console.status("starting") as st:
        st.update(line)
        console.print(f"  {line}", markup=False)

    assert capsys.readouterr().err == f"  {line}\n"


def _fake_status(monkeypatch: pytest.MonkeyPatch, addr: str) -> None:
    import vaultmesh.lifecycle.status as status

    node = SimpleNamespace(name="node-1", zone="zone-a", api_addr=addr, pid=4242, sealed=False, leader=True,
                           reachable=True, error=None, voter=True, healthy=True)
    view = SimpleNamespace(nodes=[node], seal_node=None)
    mesh = SimpleNamespace(spec=SimpleNamespace(name="vaultmesh"))
    monkeypatch.setattr(status, "status", lambda root: (mesh, view, addr))
    monkeypatch.setattr(status, "status_json", lambda m, v, a: {"healthy": True, "address": a,
                                                                "keeper": {"summary": "running"}})


def test_status_does_not_cut_the_address_column_when_not_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    addr = "https://vaultmesh-node-1.zone-a.internal.example.org:40001"
    _fake_status(monkeypatch, addr)

    result = invoke("status")

    assert result.exit_code == 0, result.output
    assert addr in result.output
    assert "…" not in result.output


# -- --json: one document on stdout ------------------------------------------------------------------------------


def test_lint_json_is_one_document(tmp_path: Path) -> None:
    bad = tmp_path / "mesh.yaml"
    bad.write_text("policies:\n  p:\n    hcl: 'path \"*\" { capabilities = [\"read\"] }'\n"
                   "auth:\n  approle:\n    type: approle\n    roles:\n      r:\n        token_policies: [p]\n")

    result = CliRunner().invoke(cli, ["lint", "-f", str(bad), "--json"])

    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["file"] == str(bad) and doc["count"] == len(doc["warnings"]) > 0
    assert set(doc["warnings"][0]) == {"line", "field", "code", "message"}
    assert {"line": 2, "field": "policies.p", "code": "policy-wildcard"}.items() <= doc["warnings"][0].items()


def test_lint_json_of_a_clean_file_exits_0() -> None:
    result = CliRunner().invoke(cli, ["lint", "-f", str(EXAMPLE), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"file": str(EXAMPLE), "count": 0, "warnings": []}


def test_policy_test_json_shape() -> None:
    from vaultmesh.cli.reconcile import _report_json
    from vaultmesh.reconcile.policytest import CheckResult, Report

    report = Report((CheckResult("batch", "read", "secret/data/jobs/x", True,
                                 found=(("secret/data/jobs/x", ("read",)),)),
                     CheckResult("batch", "update", "sys/policies/acl/x", False, error="login failed")),
                    where="a throwaway server")

    doc = _report_json(report)

    assert json.loads(json.dumps(doc)) == doc
    assert doc["ok"] is False and doc["passed"] == 1 and doc["failed"] == 1 and doc["where"] == "a throwaway server"
    assert doc["results"][0] == {"subject": "batch", "expect": "can", "capability": "read",
                                 "path": "secret/data/jobs/x", "ok": True,
                                 "found": {"secret/data/jobs/x": ["read"]}, "error": None}
    assert doc["results"][1]["expect"] == "cannot" and doc["results"][1]["error"] == "login failed"


def test_policy_test_json_prints_only_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    import vaultmesh.reconcile.policytest as pt

    monkeypatch.setattr(pt, "run_policy_tests", lambda spec, **kw: pt.Report((), where="here"))

    result = CliRunner().invoke(cli, ["policy", "test", "-f", str(EXAMPLE), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "where": "here", "passed": 0, "failed": 0, "results": []}


def _fake_mesh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    import vaultmesh.lifecycle.mesh as m

    mesh = SimpleNamespace(node_addrs=["https://127.0.0.1:40001", "https://127.0.0.1:40003"],
                           paths=SimpleNamespace(ca_cert=tmp_path / "pki" / "ca.pem"),
                           client=lambda token=None: _NullClient())
    opened: list[Path] = []
    monkeypatch.setattr(m, "open_mesh", lambda root: opened.append(root) or mesh)
    monkeypatch.setattr(m, "admin_token", lambda mesh: "s.admin")
    mesh.opened = opened
    return mesh


class _NullClient:
    def __enter__(self) -> _NullClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_apply_json_is_one_document_with_progress_on_stderr(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    import vaultmesh.reconcile.apply as ap

    _fake_mesh(monkeypatch, tmp_path)
    plan = SimpleNamespace(checksum=lambda prune=False: "sha256:abc")
    action = SimpleNamespace(to_dict=lambda: {"op": "create", "kind": "policy", "id": "policy:batch"})

    def fake_apply(mesh: Any, client: Any, spec: Any, *, progress: Any, **kw: Any) -> Any:
        progress("+ policy batch")
        return SimpleNamespace(plan=plan, performed=(action,), audit_changed=False)

    monkeypatch.setattr(ap, "apply", fake_apply)
    monkeypatch.setattr("vaultmesh.reconcile.render.summary", lambda p, prune=False: "Plan: 1 to create")

    result = CliRunner().invoke(cli, ["apply", "-f", str(EXAMPLE), "--json", "--dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"changed": True, "performed": [action.to_dict()], "audit_changed": False,
                                         "prune": False, "checksum": "sha256:abc", "summary": "Plan: 1 to create"}
    assert "+ policy batch" in result.stderr


TOKENS = [TokenInfo("acc1", "jwt-nightly", "auth/jwt/login", {}, "2026-01-01T00:00:00Z")]


def test_leases_reap_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import vaultmesh.workload.reap as rp

    mesh = _fake_mesh(monkeypatch, tmp_path)
    monkeypatch.setattr(rp, "reap", lambda client, workload, **kw: TOKENS)

    result = CliRunner().invoke(cli, ["leases", "reap", "--workload", "nightly", "--json", "--dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert mesh.opened == [tmp_path]
    assert json.loads(result.stdout) == {
        "workload": "nightly", "dry_run": False, "revoked": 1,
        "tokens": [{"accessor": "acc1", "display_name": "jwt-nightly", "path": "auth/jwt/login", "namespace": "",
                    "expire_time": "2026-01-01T00:00:00Z"}]}


def test_leases_reap_lines_and_dry_run() -> None:
    from vaultmesh.workload.cli import reap_json, reap_lines

    assert reap_lines("nightly", TOKENS, dry_run=True) == [
        "would revoke token acc1 (jwt-nightly, auth/jwt/login, expires 2026-01-01T00:00:00Z)",
        "would revoke 1 token(s) of workload nightly and the leases they created"]
    assert reap_json("nightly", TOKENS, dry_run=True)["revoked"] == 0


def test_light_leases_reap_reports_through_the_one_handler(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from vaultmesh.workload.cli import main

    for name in ("BAO_TOKEN", "VAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    code = main(["leases", "reap", "--workload", "x", "--json", "--addr", "https://127.0.0.1:1"])

    out = capsys.readouterr()
    assert code == 1 and out.out == ""
    assert out.err == ('error: leases reap needs an admin token in BAO_TOKEN (or VAULT_TOKEN) '
                       '(eval "$(vaultmesh env)")\n')


def test_the_light_reap_error_line_is_the_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    from vaultmesh.errors import report

    assert report(VaultmeshError("x", hint="y")) == 1
    assert capsys.readouterr().err == "error: x (y)\n"


# -- vaultmesh --dir D run ---------------------------------------------------------------------------------------


def _capture_run(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    import vaultmesh.workload.cli as wc

    seen: list[list[str]] = []
    monkeypatch.setattr(wc, "main", lambda argv: seen.append(list(argv)) or 0)
    return seen


def test_dir_before_run_gives_run_the_meshs_addresses_and_ca(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    mesh = _fake_mesh(monkeypatch, tmp_path)
    seen = _capture_run(monkeypatch)

    result = CliRunner().invoke(cli, ["--dir", str(tmp_path), "run", "--role", "batch", "--", "./job", "--addr"])

    assert result.exit_code == 0, result.output
    assert mesh.opened == [tmp_path]
    assert seen == [["run", "--addr", "https://127.0.0.1:40001,https://127.0.0.1:40003", "--ca-cert",
                     str(tmp_path / "pki" / "ca.pem"), "--role", "batch", "--", "./job", "--addr"]]


def test_runs_own_addr_and_ca_win_over_the_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_mesh(monkeypatch, tmp_path)
    seen = _capture_run(monkeypatch)

    CliRunner().invoke(cli, ["--dir", str(tmp_path), "run", "--addr=https://x:1", "--ca-cert", "ca.pem", "--",
                             "./job"])

    assert seen == [["run", "--addr=https://x:1", "--ca-cert", "ca.pem", "--", "./job"]]


def test_run_without_a_typed_dir_reads_no_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mesh = _fake_mesh(monkeypatch, tmp_path)
    seen = _capture_run(monkeypatch)

    CliRunner().invoke(cli, ["run", "--", "./job"], env={"VAULTMESH_DIR": str(tmp_path)})

    assert mesh.opened == [] and seen == [["run", "--", "./job"]]


def test_dir_before_run_without_a_mesh_is_runs_failure(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--dir", str(tmp_path / "none"), "run", "--", "./job"])

    assert result.exit_code == 125
    assert result.output.startswith(f"vaultmesh run: no mesh in {tmp_path / 'none'}")


def test_dir_after_run_gives_run_the_meshs_addresses_and_ca(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    mesh = _fake_mesh(monkeypatch, tmp_path)
    seen = _capture_run(monkeypatch)

    result = CliRunner().invoke(cli, ["run", "--role", "batch", "--dir", str(tmp_path), "--", "./job", "--dir",
                                      "x"])

    assert result.exit_code == 0, result.output
    assert mesh.opened == [tmp_path]
    assert seen == [["run", "--addr", "https://127.0.0.1:40001,https://127.0.0.1:40003", "--ca-cert",
                     str(tmp_path / "pki" / "ca.pem"), "--role", "batch", "--", "./job", "--dir", "x"]]


def test_dir_after_run_wins_over_the_one_before(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mesh = _fake_mesh(monkeypatch, tmp_path)
    _capture_run(monkeypatch)

    CliRunner().invoke(cli, ["--dir", str(tmp_path / "other"), "run", f"--dir={tmp_path}", "--", "./job"])

    assert mesh.opened == [tmp_path]


def test_dir_after_run_goes_to_the_click_cli_from_the_entry_point() -> None:
    code = ("import sys; sys.argv = ['vaultmesh', 'run', '--role', 'batch', '--dir', '/nonexistent/d', '--', "
            "'true']; from vaultmesh.cli.entry import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 125
    assert "no mesh in /nonexistent/d" in proc.stderr


@pytest.mark.parametrize(("argv", "values", "rest"), [
    (["--dir", "D", "--", "job"], ["D"], ["--", "job"]),
    (["--role", "batch", "--dir=D", "job", "--dir", "E"], ["D"], ["--role", "batch", "job", "--dir", "E"]),
    (["--role", "--dir", "job"], [], ["--role", "--dir", "job"]),  # --dir is --role's value
    (["-v", "--dir", "D", "--dir", "E", "job"], ["D", "E"], ["-v", "job"]),
    (["--dir"], [], ["--dir"]),  # no value: argparse says so
    (["job", "--dir", "D"], [], ["job", "--dir", "D"]),
])
def test_split_option_reads_only_runs_own_arguments(argv: list[str], values: list[str], rest: list[str]) -> None:
    from vaultmesh.workload.cli import split_option

    assert split_option(argv, "--dir") == (values, rest)


def test_leases_takes_the_dir_before_its_subcommand_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import vaultmesh.workload.reap as rp

    mesh = _fake_mesh(monkeypatch, tmp_path)
    monkeypatch.setattr(rp, "reap", lambda client, workload, **kw: TOKENS)

    result = CliRunner().invoke(cli, ["leases", "--dir", str(tmp_path), "reap", "--workload", "nightly"])

    assert result.exit_code == 0, result.output
    assert mesh.opened == [tmp_path]


def test_dir_before_run_goes_to_the_click_cli_from_the_entry_point() -> None:
    code = ("import sys; sys.argv = ['vaultmesh', '--dir', '/nonexistent/d', 'run', '--', 'true']; "
            "from vaultmesh.cli.entry import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 125
    assert "no mesh in /nonexistent/d" in proc.stderr
