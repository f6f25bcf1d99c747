"""The light entry point: argument errors, exit codes, --on-change, reap matching, and what the run path imports."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vaultmesh.errors import VaultmeshError
from vaultmesh.workload.cli import main
from vaultmesh.workload.reap import TokenInfo, alias_matches, token_matches
from vaultmesh.workload.supervisor import OnChange

HEAVY = ("pydantic", "rich", "httpx", "cryptography", "click", "jwt", "vaultmesh.cli", "vaultmesh.reconcile",
         "vaultmesh.render", "vaultmesh.identity", "vaultmesh.lifecycle")


def test_the_run_path_imports_none_of_the_control_plane_stack() -> None:
    code = ("import sys, vaultmesh.workload.cli as c, vaultmesh.workload.supervisor, vaultmesh.workload.session, "
            "vaultmesh.workload.spec, vaultmesh.workload.deliver, vaultmesh.workload.book\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m.startswith({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_sdk_stays_off_the_control_plane_stack_too() -> None:
    code = ("import sys; from vaultmesh import Workload\n"
            f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--role", "batch", "--identity-file", "x", "--addr", "https://a"], "no command to run"),
    (["run", "--identity-file", "x", "--addr", "https://a", "--", "true"], "no role"),
    (["run", "--role", "batch", "--addr", "https://a", "--", "true"], "no identity token"),
    (["run", "--role", "batch", "--identity-file", "x", "--", "true"], "no OpenBao address"),
    (["run", "--role", "batch", "--identity-file", "x", "--addr", "https://a", "--secret", "X=kv:nope", "--",
      "true"], "--secret X: kv path 'nope' needs a mount"),
    (["run", "--role", "batch", "--identity-file", "x", "--addr", "https://a", "--on-change", "signal:NOPE", "--",
      "true"], "--on-change 'signal:NOPE'"),
])
def test_usage_errors_are_one_line_and_exit_125_before_anything_is_sent(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BAO_ADDR", "VAULT_ADDR", "VAULTMESH_IDENTITY_FILE", "VAULTMESH_ROLE"):
        monkeypatch.delenv(var, raising=False)
    assert main(argv) == 125
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("vaultmesh run: ") and message in err


def test_a_bad_secrets_file_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "secrets.yaml"
    f.write_text("env:\n  A: {kv: secret/a}\n  B: {db: database/creds/x, fields: u}\n")
    assert main(["run", "--role", "r", "--identity-file", "x", "--addr", "https://a", "--secrets", str(f), "--",
                 "true"]) == 125
    assert f"{f}:3: env.B: unknown key 'fields'" in capsys.readouterr().err


def test_the_mesh_being_unreachable_is_one_line_and_the_child_never_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ident = tmp_path / "jwt"
    ident.write_text("x.y.z")
    marker = tmp_path / "started"
    rc = subprocess.run([sys.executable, "-m", "vaultmesh.workload.cli", "run", "--role", "r", "--identity-file",
                         str(ident), "--addr", "https://127.0.0.1:9", "--deadline", "0.5s", "--", "touch", str(marker)],
                        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert rc.returncode == 125
    assert "login as role 'r' at auth/jwt failed: no OpenBao node could serve" in rc.stderr
    assert rc.stderr.count("\n") == 1
    assert not marker.exists()


def test_a_plain_http_address_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    ident = tmp_path / "jwt"
    ident.write_text("x.y.z")
    marker = tmp_path / "started"
    rc = subprocess.run([sys.executable, "-m", "vaultmesh.workload.cli", "run", "--role", "r", "--identity-file",
                         str(ident), "--deadline", "0.5s", "--", "touch", str(marker)],
                        capture_output=True, text=True, timeout=60,
                        env={"PATH": "/usr/bin:/bin", "BAO_ADDR": "http://127.0.0.1:9"})
    assert rc.returncode == 125
    assert "http://127.0.0.1:9" in rc.stderr and "https" in rc.stderr
    assert rc.stderr.count("\n") == 1
    assert not marker.exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("none", OnChange("none")), ("restart", OnChange("restart")),
    ("signal:HUP", OnChange("signal", signal.SIGHUP)), ("signal:SIGUSR1", OnChange("signal", signal.SIGUSR1)),
    ("signal:term", OnChange("signal", signal.SIGTERM)),
])
def test_on_change_forms(text: str, expected: OnChange) -> None:
    assert OnChange.parse(text) == expected


@pytest.mark.parametrize("text", ["signal:KILL", "signal:", "reload", "signal:NOPE"])
def test_on_change_refuses_what_cannot_tell_the_child(text: str) -> None:
    with pytest.raises(VaultmeshError):
        OnChange.parse(text)


# -- reap matching ---------------------------------------------------------------------------------------------


def info(display: str, path: str = "auth/jwt/login", **meta: str) -> TokenInfo:
    return TokenInfo("acc", display, path, meta, None)


@pytest.mark.parametrize(("alias", "ok"), [
    ("nightly", True), ("system:serviceaccount:default:nightly", True), ("system:serviceaccount:ci:nightly", True),
    ("spiffe://vaultmesh.local/ns/default/sa/nightly", True), ("system:serviceaccount:default:nightly-2", False),
    ("system:serviceaccount:default:pre-nightly", False), ("spiffe://td/ns/default/sa/nightly/x", False),
    ("nightly2", False),
])
def test_the_entity_alias_names_the_workload_exactly(alias: str, ok: bool) -> None:
    assert alias_matches(alias, "nightly") is ok


def test_a_token_matches_by_mapped_workload_metadata_or_by_its_alias() -> None:
    assert token_matches(info("jwt-whatever", workload="nightly"), "nightly")
    assert token_matches(info("jwt-system:serviceaccount:default:nightly"), "nightly")
    assert token_matches(info("jwt-wl-system:serviceaccount:default:nightly", "auth/jwt-wl/login"), "nightly")
    assert not token_matches(info("jwt-system:serviceaccount:default:nightly-x"), "nightly")


def test_a_workload_of_the_same_name_in_another_namespace_is_not_reaped() -> None:
    at_root = TokenInfo.from_lookup("a", {"display_name": "jwt-nightly", "path": "auth/jwt/login",
                                          "meta": {"workload": "nightly"}, "namespace_path": ""})
    in_sandbox = TokenInfo.from_lookup("b", {"display_name": "jwt-nightly", "path": "auth/jwt/login",
                                             "meta": {"workload": "nightly"}, "namespace_path": "sandbox/"})
    assert token_matches(at_root, "nightly") and not token_matches(in_sandbox, "nightly")
    assert token_matches(in_sandbox, "nightly", namespace="sandbox")
    assert not token_matches(at_root, "nightly", namespace="sandbox")


def test_only_login_tokens_of_the_named_mount_and_role_match() -> None:
    t = info("jwt-wl-nightly", "auth/jwt-wl/login", role="batch")
    assert token_matches(t, "nightly", auth_mount="jwt-wl", role="batch")
    assert not token_matches(t, "nightly", auth_mount="jwt")
    assert not token_matches(t, "nightly", role="other")
    assert not token_matches(info("token-nightly", "auth/token/create", workload="nightly"), "nightly")
