"""`vaultmesh lab up|down`: local hosts (network namespaces with their own sshd and supervisor) to try and test
the multi-host runtime on one machine."""

from __future__ import annotations

from pathlib import Path

import click

from vaultmesh.cli.common import ENGINE_HELP, current, echo_json, err_console, handle_errors, json_option

DEFAULT_LAB_DIR = Path(".vaultmesh-lab")
LAB_DIR_HELP = "The lab's folder: its record, keys, mesh file and each host's root folder."


@click.group("lab")
def lab() -> None:
    """Local hosts on one machine: each a network namespace with its own address, sshd and supervisor."""


@lab.command("up")
@click.option("--hosts", type=click.IntRange(1, 7), required=True, help="How many hosts (1 to 7).")
@click.option("--dir", "dir_", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_LAB_DIR,
              show_default=True, help=LAB_DIR_HELP)
@click.option("--engine", default=None, help=ENGINE_HELP + " Installed on every host as usr/local/bin/bao.")
@json_option("The hosts (name, address, zone) and the mesh file naming them, as one JSON document on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@handle_errors
def up(hosts: int, dir_: Path, engine: str | None, as_json: bool, debug: bool) -> None:
    """Make HOSTS local hosts, each a network namespace with its own address on a bridge, its own sshd (a new
    host key, the lab's user key authorised) and its own supervisord; write a mesh file naming them. Needs root,
    iproute2, openssh-server and supervisor. Refuses a folder that already holds a lab."""
    from vaultmesh.lab import lab_up

    current().debug = current().debug or debug
    console = err_console()
    record = lab_up(dir_, hosts, engine=engine or current().engine,
                    progress=(lambda line: None) if as_json else console.print)
    if as_json:
        echo_json(record.summary())
        return
    click.echo(f"lab up: {len(record.hosts)} host(s) in {record.dir}; mesh file {record.mesh_file}")
    for host in record.hosts:
        click.echo(f"  {host.name}  {host.address}  {host.zone}  ssh -i {record.key_file} -o UserKnownHostsFile="
                   f"{record.known_hosts} root@{host.address}")


@lab.command("down")
@click.option("--dir", "dir_", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_LAB_DIR,
              show_default=True, help=LAB_DIR_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@handle_errors
def down(dir_: Path, debug: bool) -> None:
    """Remove the lab: stop what each host's supervisor runs and every process left in its namespace, then delete
    the namespaces, links and bridge and the folder. Nothing there: nothing to do."""
    from vaultmesh.lab import lab_down

    current().debug = current().debug or debug
    gone = lab_down(dir_, progress=err_console().print)
    click.echo(f"lab down: removed {len(gone) - 1} namespace(s) and link(s) and {gone[-1]}" if gone
               else f"lab down: no lab in {dir_.absolute()}, nothing to do")
