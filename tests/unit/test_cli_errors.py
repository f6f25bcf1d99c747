"""The CLI speaks one way: every command reports through one handler with one exit-code table, and takes the
state dir and engine where a user types them."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from vaultmesh.cli.common import Ctx, handle_errors, mesh_options, pass_ctx
from vaultmesh.cli.main import cli
from vaultmesh.errors import EXIT_CODES, SpecError, VaultmeshError


def invoke(*args: str, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


# -- the state dir and the engine, before or after the command name --------------------------------------------


@pytest.mark.parametrize("command", [["up"], ["down"], ["destroy", "--yes"], ["status"], ["env"],
                                     ["plan", "-f", "m.yaml"], ["apply", "-f", "m.yaml"],
                                     ["policy", "test", "-f", "m.yaml"], ["leases", "reap", "--workload", "x"],
                                     ["bench", "steady"], ["chaos", "kill-leader"]])
def test_every_command_that_takes_the_state_dir_takes_it_after_its_name(command: list[str]) -> None:
    for cmd in (cli.get_command(click.Context(cli), command[0]),):
        assert cmd is not None
    result = CliRunner().invoke(cli, [*command, "--dir", "/nonexistent/state", "--help"])
    assert result.exit_code == 0, result.output
    assert "--dir" in result.output


def test_up_dir_after_the_command_is_the_state_dir(tmp_path: Path) -> None:
    result = invoke("up", "--dir", str(tmp_path / "d"), "--engine", "/bin/true")

    assert result.exit_code == 1
    assert "No such option" not in result.output
    assert "/bin/true is not an OpenBao or Vault binary" in result.output
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_status_names_the_dir_given_before_or_after(tmp_path: Path, where: str) -> None:
    state = str(tmp_path / "mine")
    args = ["--dir", state, "status"] if where == "before" else ["status", "--dir", state]

    result = invoke(*args, env={"VAULTMESH_DIR": str(tmp_path / "from-env")})

    assert result.exit_code == 1
    assert f"no mesh in {state}" in result.output


def test_the_dir_after_the_command_wins_over_the_one_before(tmp_path: Path) -> None:
    result = invoke("--dir", str(tmp_path / "first"), "status", "--dir", str(tmp_path / "second"))

    assert f"no mesh in {tmp_path / 'second'}" in result.output


def test_vaultmesh_dir_is_the_default_for_subcommands_too(tmp_path: Path) -> None:
    result = invoke("status", env={"VAULTMESH_DIR": str(tmp_path / "env")})

    assert f"no mesh in {tmp_path / 'env'}" in result.output


def test_a_subcommand_on_its_own_reads_the_environment(tmp_path: Path) -> None:
    @click.command()
    @mesh_options(engine=True)
    @pass_ctx
    def show(ctx: Ctx) -> None:
        click.echo(f"{ctx.dir} {ctx.engine}")

    result = CliRunner().invoke(show, [], env={"VAULTMESH_DIR": str(tmp_path), "VAULTMESH_ENGINE": "/x/bao"})
    assert result.output.strip() == f"{tmp_path} /x/bao"
    result = CliRunner().invoke(show, ["--dir", "rel", "--engine", "/y"])
    assert result.output.strip() == f"{Path('rel').absolute()} /y"


# -- one handler, one table ------------------------------------------------------------------------------------


def _failing(error: BaseException) -> click.Command:
    @click.command()
    @mesh_options()
    @handle_errors
    def fail() -> None:
        raise error

    return fail


def test_an_expected_failure_is_one_line_and_its_exit_code() -> None:
    result = CliRunner().invoke(_failing(SpecError("bad", file="m.yaml", line=3, field="nodes")), [])

    assert result.exit_code == 2
    assert result.output == "error: m.yaml:3: nodes: bad\n"


def test_debug_after_the_command_adds_the_traceback() -> None:
    result = CliRunner().invoke(_failing(VaultmeshError("it broke")), ["--debug"])

    assert result.exit_code == 1
    assert "Traceback" in result.output and result.output.endswith("error: it broke\n")


def test_a_bug_is_a_traceback_and_exit_70() -> None:
    result = CliRunner().invoke(_failing(ZeroDivisionError("x")), [])

    assert result.exit_code == 70
    assert "Traceback" in result.output and "please report it" in result.output


def test_the_exit_code_table_has_what_the_commands_use() -> None:
    from vaultmesh.errors import UnsafePlan

    assert {0, 1, 2, 3, 70, 130} <= set(EXIT_CODES)
    assert UnsafePlan("x").exit_code == 3 and SpecError("x").exit_code == 2 and VaultmeshError("x").exit_code == 1


def test_identity_errors_go_through_the_same_handler(tmp_path: Path) -> None:
    result = invoke("identity", "rotate", "--dir", str(tmp_path))

    assert result.exit_code == 1
    assert result.output.startswith("error: no identity keys in")
    assert "Error:" not in result.output


def test_identity_takes_debug(tmp_path: Path) -> None:
    result = invoke("--debug", "identity", "rotate", "--dir", str(tmp_path))

    assert result.exit_code == 1 and "Traceback" in result.output


def test_identity_takes_the_main_dir(tmp_path: Path) -> None:
    result = invoke("--dir", str(tmp_path / "main"), "identity", "rotate")

    assert f"no identity keys in {tmp_path / 'main'}" in result.output


# -- plan --detailed-exitcode ------------------------------------------------------------------------------------


def test_plan_detailed_exitcode_makes_every_error_1_without_touching_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("nodes: many\n")

    detailed = invoke("plan", "-f", str(bad), "--detailed-exitcode", "--dir", str(tmp_path))
    plain = invoke("plan", "-f", str(bad), "--dir", str(tmp_path))

    assert detailed.exit_code == 1
    assert plain.exit_code == 2
    assert detailed.output == plain.output


def test_plan_detailed_exitcode_usage_error_is_1_not_changes() -> None:
    result = CliRunner().invoke(cli, ["plan", "--detailed-exitcode", "--no-such-option"])

    assert result.exit_code == 1
    assert "No such option" in result.output
    assert CliRunner().invoke(cli, ["plan", "--no-such-option"]).exit_code == 2


def test_apply_help_says_what_exit_3_means() -> None:
    result = invoke("apply", "--help")

    assert "Exit 3" in result.output and "--force" in result.output
