"""`vaultmesh lab`: real namespaces, sshd and supervisord. From the root namespace, a paramiko client that verifies
host keys reaches each host at the address `lab up` reported, runs supervisorctl there, loses the host when it is
cut and has it back when it is mended; `lab down` leaves no namespace, link, process or folder, also after a
`lab up` that failed half-way."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import psutil
import pytest
from click.testing import CliRunner

from tests.polling import eventually
from vaultmesh.cli.lab import lab as lab_cli
from vaultmesh.errors import RuntimeFailure, VaultmeshError
from vaultmesh.lab import LabRecord, cut, lab_down, lab_up, load, mend, unavailable
from vaultmesh.lab import hosts as lab_hosts
from vaultmesh.lab.plan import LabHost
from vaultmesh.runtime import netns

pytestmark = pytest.mark.integration


@pytest.fixture
def lab_dir(tmp_path: Path) -> Iterator[Path]:
    why = unavailable()
    if why:
        pytest.skip(why)
    folder = tmp_path / "lab"
    try:
        yield folder
    finally:
        if (folder / "lab.json").exists():
            lab_down(folder)


def ssh(record: LabRecord, host: LabHost, *, known_hosts: Path | None = None,
        timeout: float = 10.0) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or record.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, port=22, username="root", key_filename=str(record.key_file), look_for_keys=False,
                   allow_agent=False, timeout=timeout, banner_timeout=timeout, auth_timeout=timeout)
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, out, _ = client.exec_command(command, timeout=30)
    text = out.read().decode()
    return out.channel.recv_exit_status(), text


def reachable(record: LabRecord, host: LabHost, timeout: float = 10.0) -> bool:
    try:
        ssh(record, host, timeout=timeout).close()
    except (OSError, paramiko.SSHException):
        return False
    return True


def leftovers(record: LabRecord) -> list[str]:
    """Whatever of the lab still exists: namespaces, links, processes, the folder."""
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found = [h.netns for h in record.hosts if h.netns in spaces]
    found += [name for name in record.links if f" {name}:" in links or f" {name}@" in links]
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and any(record.dir in part for part in proc.info["cmdline"] or ()):
                found.append(f"pid {proc.pid}: {' '.join(proc.info['cmdline'])}")
    if Path(record.dir).exists():
        found.append(record.dir)
    return found


def test_lab_hosts_answer_ssh_with_verified_keys_can_be_cut_and_mended_and_down_leaves_nothing(lab_dir: Path) -> None:
    res = CliRunner().invoke(lab_cli, ["up", "--hosts", "2", "--dir", str(lab_dir), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    record = load(lab_dir)
    assert doc == record.summary()
    assert [h["zone"] for h in doc["hosts"]] == ["zone-a", "zone-b"]
    assert Path(doc["mesh_file"]).is_file()
    assert record.key_file.stat().st_mode & 0o777 == 0o600
    assert all(h.files.host_key.stat().st_mode & 0o777 == 0o600 for h in record.hosts)

    for host in record.hosts:
        other = next(h for h in record.hosts if h != host)  # hosts reach each other over the bridge
        conf = host.files.supervisord_conf
        script = "; ".join([
            f"supervisorctl -c {conf} status", "echo status=$?", f"supervisorctl -c {conf} pid",
            "ip -4 -o addr show dev eth0 | awk '{print $4}'", f"{host.files.engine} version | cut -c1-9",
            f"timeout 5 bash -c 'exec 3<>/dev/tcp/{other.address}/22 && head -c 7 <&3'"])
        with contextlib.closing(ssh(record, host)) as client:  # one command: each costs a login shell
            code, out = run(client, script)
        assert code == 0, out
        assert out.splitlines() == ["status=0", str(host.supervisord_pid), f"{host.address}/24", "OpenBao v",
                                    "SSH-2.0"], out

    empty = lab_dir / "no_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        ssh(record, record.hosts[0], known_hosts=empty)

    with pytest.raises(VaultmeshError, match="holds a lab already"):
        lab_up(lab_dir, 2)

    h1, h2 = record.hosts
    cut(lab_dir, "h2")
    cut(lab_dir, "h2")
    assert not reachable(record, h2, timeout=2.0)  # its connect times out; a host not cut answers in ms
    assert reachable(record, h1)
    mend(lab_dir, "h2")
    mend(lab_dir, "h2")
    eventually(lambda: reachable(record, h2, timeout=2.0), timeout=20)

    conf = h1.files.supervisord_conf  # a program under the host's supervisor, written over SFTP, as a node is
    with contextlib.closing(ssh(record, h1)) as client:
        with contextlib.closing(client.open_sftp()) as sftp:
            sftp.putfo(io.BytesIO(b"[program:sleeper]\ncommand=/bin/sleep 600\nstartsecs=0\n"),
                       str(h1.files.conf_d / "sleeper.conf"))
        assert run(client, f"supervisorctl -c {conf} update")[0] == 0
        code, pid = run(client, f"supervisorctl -c {conf} pid sleeper")
    assert code == 0, pid
    sleeper = int(pid)
    assert sleeper in netns.namespace_pids(h1.netns)

    res = CliRunner().invoke(lab_cli, ["down", "--dir", str(lab_dir)])
    assert res.exit_code == 0, res.output
    assert leftovers(record) == []
    assert not psutil.pid_exists(sleeper) or psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE
    res = CliRunner().invoke(lab_cli, ["down", "--dir", str(lab_dir)])
    assert res.exit_code == 0 and "nothing to do" in res.stdout


def test_lab_down_removes_a_half_made_lab_and_what_else_runs_in_its_namespaces(lab_dir: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    start_host = lab_hosts._start_host

    def second_fails(host: LabHost) -> LabHost:
        if host.name == "h2":
            raise RuntimeFailure("h2 does not start (the test's doing)")
        return start_host(host)

    monkeypatch.setattr(lab_hosts, "_start_host", second_fails)
    with pytest.raises(RuntimeFailure, match="h2 does not start"):
        lab_up(lab_dir, 2)
    record = load(lab_dir)
    h1 = record.hosts[0]
    assert h1.sshd_pid and h1.supervisord_pid and record.hosts[1].sshd_pid is None
    stray = subprocess.Popen(["ip", "netns", "exec", h1.netns, "sleep", "600"], start_new_session=True)
    try:
        lab_down(lab_dir)
        assert stray.wait(timeout=10) is not None
        assert leftovers(record) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            stray.kill()
        stray.wait()


def test_lab_up_refuses_namespaces_or_links_left_by_a_lab_whose_folder_was_removed(lab_dir: Path) -> None:
    bridge = f"vmlb{netns.mesh_net_id(lab_dir)}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        with pytest.raises(VaultmeshError, match=f"{bridge} exists already"):
            lab_up(lab_dir, 1)
        assert not lab_dir.exists()
    finally:
        netns.delete("link", bridge)
