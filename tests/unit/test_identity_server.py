"""The HTTPS OIDC issuer and the `vaultmesh identity` commands, against a throwaway test CA."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import jwt
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.polling import eventually
from vaultmesh.cli.identity import identity
from vaultmesh.errors import RuntimeFailure, VaultmeshError
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.server import (
    IssuerRecord,
    IssuerServer,
    issuer_record_path,
    keys_dir,
    read_issuer_record,
    write_issuer_record,
)
from vaultmesh.identity.tokens import mint

# -- test PKI, generated per session, never written outside tmp ---------------------------------------------


@dataclass(frozen=True)
class PKIFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIFiles:
    out = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vaultmesh test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "identity issuer")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return PKIFiles(
        ca_file=_write_pem(out / "ca.pem", ca_cert.public_bytes(pem)),
        cert_file=_write_pem(out / "issuer.pem", cert.public_bytes(pem)),
        key_file=_write_pem(out / "issuer-key.pem", key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
    )


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def https_get(url: str, ca_file: Path | None) -> Reply:
    """GET ``url``, verifying the server against ``ca_file`` (or the system store when None)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            return Reply(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers.items()), err.read())


T_MINT = 3600.0


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys", time.time())


@pytest.fixture
def server(ring: KeyRing, pki: PKIFiles) -> Iterator[IssuerServer]:
    srv = IssuerServer(ring, certfile=pki.cert_file, keyfile=pki.key_file, port=0, max_token_ttl=T_MINT)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# -- the server ----------------------------------------------------------------------------------------------


def test_port_zero_picks_a_free_port_and_the_issuer_url_names_it(server: IssuerServer) -> None:
    assert server.port > 0
    assert server.issuer_url == f"https://127.0.0.1:{server.port}"


def test_serves_discovery_over_tls_verified_against_the_ca(server: IssuerServer, pki: PKIFiles) -> None:
    reply = https_get(server.issuer_url + "/.well-known/openid-configuration", pki.ca_file)

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Cache-Control"] == "max-age=60"
    assert reply.json() == {
        "issuer": server.issuer_url,
        "jwks_uri": server.issuer_url + "/keys",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }


def test_serves_the_jwks_a_minted_token_verifies_against(
    server: IssuerServer, ring: KeyRing, pki: PKIFiles
) -> None:
    token = mint(ring, issuer=server.issuer_url, workload="billing", audience="vaultmesh", ttl=60,
                 now=time.time(), claims={})

    discovery = https_get(server.issuer_url + "/.well-known/openid-configuration", pki.ca_file).json()
    reply = https_get(discovery["jwks_uri"], pki.ca_file)

    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "max-age=60"
    key = jwt.PyJWK(reply.json()["keys"][0])
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="vaultmesh", issuer=server.issuer_url)
    assert claims["sub"] == "system:serviceaccount:default:billing"


def test_unknown_path_is_404(server: IssuerServer, pki: PKIFiles) -> None:
    for path in ("/", "/keys/extra", "/.well-known/jwks.json", "/token"):
        assert https_get(server.issuer_url + path, pki.ca_file).status == 404


def test_query_string_is_ignored(server: IssuerServer, pki: PKIFiles) -> None:
    assert https_get(server.issuer_url + "/keys?x=1", pki.ca_file).status == 200


def test_client_that_does_not_trust_the_ca_is_refused(server: IssuerServer) -> None:
    with pytest.raises(urllib.error.URLError) as info:
        https_get(server.issuer_url + "/keys", None)

    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


def test_plain_http_gets_no_answer(server: IssuerServer) -> None:
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/keys", timeout=5)


def test_server_is_quiet_on_requests_and_failed_handshakes(
    server: IssuerServer, pki: PKIFiles, capfd: pytest.CaptureFixture[str]
) -> None:
    https_get(server.issuer_url + "/keys", pki.ca_file)
    https_get(server.issuer_url + "/nope", pki.ca_file)
    with pytest.raises(urllib.error.URLError):
        https_get(server.issuer_url + "/keys", None)

    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_rotation_in_another_process_shows_up_without_restart(
    server: IssuerServer, ring: KeyRing, pki: PKIFiles
) -> None:
    old_kid = ring.active.kid
    other_process_ring = KeyRing.load(ring.directory)

    new = other_process_ring.rotate(time.time())

    def kids() -> list[str]:
        return [k["kid"] for k in https_get(server.issuer_url + "/keys", pki.ca_file).json()["keys"]]

    assert eventually(lambda: kids() == [old_kid, new.kid])


def test_retired_key_leaves_the_jwks_once_its_tokens_have_expired(ring: KeyRing, pki: PKIFiles) -> None:
    clock = [time.time()]
    old_kid = ring.active.kid
    new = ring.rotate(clock[0])
    with IssuerServer(ring, certfile=pki.cert_file, keyfile=pki.key_file, max_token_ttl=600,
                      clock=lambda: clock[0]) as srv:

        def kids() -> list[str]:
            return [k["kid"] for k in https_get(srv.issuer_url + "/keys", pki.ca_file).json()["keys"]]

        assert kids() == [old_kid, new.kid]
        clock[0] += 600
        assert kids() == [new.kid]


def test_stop_closes_the_port_and_is_idempotent(ring: KeyRing, pki: PKIFiles) -> None:
    srv = IssuerServer(ring, certfile=pki.cert_file, keyfile=pki.key_file)
    srv.start()
    url = srv.issuer_url + "/keys"
    assert https_get(url, pki.ca_file).status == 200

    srv.stop()
    srv.stop()

    with pytest.raises(urllib.error.URLError):
        https_get(url, pki.ca_file)


def test_serve_forever_runs_in_the_calling_thread_until_stopped(ring: KeyRing, pki: PKIFiles) -> None:
    srv = IssuerServer(ring, certfile=pki.cert_file, keyfile=pki.key_file)
    srv.listen()
    runner = threading.Thread(target=srv.serve_forever)
    runner.start()
    try:
        assert https_get(srv.issuer_url + "/keys", pki.ca_file).status == 200
    finally:
        srv.stop()
        runner.join(timeout=10)
    assert not runner.is_alive()


def test_port_in_use_is_a_runtime_failure(server: IssuerServer, ring: KeyRing, pki: PKIFiles) -> None:
    second = IssuerServer(ring, certfile=pki.cert_file, keyfile=pki.key_file, port=server.port)

    with pytest.raises(RuntimeFailure, match=f"cannot listen on 127.0.0.1:{server.port}"):
        second.start()


def test_missing_certificate_is_reported(ring: KeyRing, tmp_path: Path) -> None:
    srv = IssuerServer(ring, certfile=tmp_path / "nope.pem", keyfile=tmp_path / "nope-key.pem")

    with pytest.raises(VaultmeshError, match="cannot load the identity issuer's TLS certificate"):
        srv.start()


def test_issuer_record_round_trips(tmp_path: Path) -> None:
    record = IssuerRecord(issuer="https://127.0.0.1:1234", host="127.0.0.1", port=1234, max_token_ttl=3600,
                          certfile="/x/cert.pem", pid=42)

    write_issuer_record(tmp_path, record)

    assert read_issuer_record(tmp_path) == record
    assert stat.S_IMODE(issuer_record_path(tmp_path).stat().st_mode) == 0o600
    assert read_issuer_record(tmp_path / "elsewhere") is None


# -- the commands --------------------------------------------------------------------------------------------


def _serve_cmd(state_dir: Path, pki: PKIFiles, *extra: str) -> list[str]:
    code = "from vaultmesh.cli.identity import identity; identity(prog_name='vaultmesh identity')"
    return [sys.executable, "-c", code, "serve", "--dir", str(state_dir), "--cert", str(pki.cert_file),
            "--key", str(pki.key_file), *extra]


@pytest.fixture
def served(tmp_path: Path, pki: PKIFiles) -> Iterator[tuple[Path, subprocess.Popen[bytes], IssuerRecord]]:
    """`vaultmesh identity serve` running in its own process; stopped by pid in teardown."""
    state_dir = tmp_path / "state"
    proc = subprocess.Popen(_serve_cmd(state_dir, pki, "--max-token-ttl", "30m"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def record() -> IssuerRecord | None:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited early: {proc.communicate()}")
            rec = read_issuer_record(state_dir)
            return rec if rec is not None and rec.pid == proc.pid else None

        yield state_dir, proc, eventually(record)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_serve_records_its_url_and_issue_mints_a_token_it_publishes(
    served: tuple[Path, subprocess.Popen[bytes], IssuerRecord], pki: PKIFiles
) -> None:
    state_dir, _, record = served
    assert record.issuer == f"https://127.0.0.1:{record.port}"
    assert record.max_token_ttl == 1800

    result = CliRunner().invoke(identity, ["issue", "--dir", str(state_dir), "--workload", "billing",
                                           "--claim", "team=payments", "--namespace", "payments"])

    assert result.exit_code == 0, result.output
    token = result.output.strip()
    key_set = https_get(record.issuer + "/keys", pki.ca_file).json()
    claims = jwt.decode(token, jwt.PyJWK(key_set["keys"][0]).key, algorithms=["ES256"],
                        audience="vaultmesh", issuer=record.issuer)
    assert claims["sub"] == "system:serviceaccount:payments:billing"
    assert claims["team"] == "payments"
    assert claims["exp"] - claims["iat"] == 600


def test_rotate_command_shows_up_in_the_running_server(
    served: tuple[Path, subprocess.Popen[bytes], IssuerRecord], pki: PKIFiles
) -> None:
    state_dir, _, record = served
    before = [k["kid"] for k in https_get(record.issuer + "/keys", pki.ca_file).json()["keys"]]

    result = CliRunner().invoke(identity, ["rotate", "--dir", str(state_dir)])

    assert result.exit_code == 0, result.output
    new_kid = KeyRing.load(keys_dir(state_dir)).active.kid
    assert f"active key {new_kid}" in result.output
    assert eventually(lambda: [k["kid"] for k in https_get(record.issuer + "/keys", pki.ca_file)
                               .json()["keys"]] == [*before, new_kid])


def test_sigterm_stops_serve_and_clears_the_pid(
    served: tuple[Path, subprocess.Popen[bytes], IssuerRecord],
) -> None:
    state_dir, proc, record = served

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=10) == 0
    after = read_issuer_record(state_dir)
    assert after is not None and after.pid is None and after.issuer == record.issuer


def test_second_serve_for_the_same_state_dir_is_refused(
    served: tuple[Path, subprocess.Popen[bytes], IssuerRecord], pki: PKIFiles
) -> None:
    state_dir, proc, _ = served

    result = subprocess.run(_serve_cmd(state_dir, pki), capture_output=True, text=True, timeout=30)

    assert result.returncode == 1
    assert f"already running for {state_dir} (pid {proc.pid}" in result.stderr


def test_serve_again_reuses_the_recorded_port(tmp_path: Path, pki: PKIFiles) -> None:
    state_dir = tmp_path / "state"
    first = subprocess.Popen(_serve_cmd(state_dir, pki), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = eventually(lambda: (r := read_issuer_record(state_dir)) and r.pid == first.pid and r.port)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=10)
        second = subprocess.Popen(_serve_cmd(state_dir, pki), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            record = eventually(lambda: (r := read_issuer_record(state_dir)) and r.pid == second.pid and r)
            assert record.port == port
        finally:
            second.kill()
            second.communicate(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=10)


def test_issue_without_a_served_issuer_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(identity, ["issue", "--dir", str(tmp_path), "--workload", "billing"])

    assert result.exit_code == 1
    assert "run `vaultmesh identity serve` first, or pass --issuer URL" in result.output


def _recorded_state(tmp_path: Path, max_token_ttl: float = 3600) -> Path:
    KeyRing.load_or_create(keys_dir(tmp_path), time.time())
    write_issuer_record(tmp_path, IssuerRecord(issuer="https://127.0.0.1:9", host="127.0.0.1", port=9,
                                               max_token_ttl=max_token_ttl, certfile="/x.pem"))
    return tmp_path


def test_issue_writes_the_token_to_a_private_file(tmp_path: Path) -> None:
    state_dir = _recorded_state(tmp_path / "state")
    out = tmp_path / "token.jwt"

    result = CliRunner().invoke(identity, ["issue", "--dir", str(state_dir), "--workload", "billing",
                                           "--output", str(out), "--subject-format", "spiffe",
                                           "--audience", "a", "--audience", "b", "--ttl", "90s"])

    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    claims = jwt.decode(out.read_text(), options={"verify_signature": False})
    assert claims["sub"] == "spiffe://vaultmesh.local/ns/default/sa/billing"
    assert claims["aud"] == ["a", "b"]
    assert claims["exp"] - claims["iat"] == 90


def test_issue_with_explicit_issuer_needs_no_record(tmp_path: Path) -> None:
    KeyRing.load_or_create(keys_dir(tmp_path), time.time())

    result = CliRunner().invoke(identity, ["issue", "--dir", str(tmp_path), "--workload", "billing",
                                           "--issuer", "https://issuer.example:8443"])

    assert result.exit_code == 0, result.output
    assert jwt.decode(result.output.strip(), options={"verify_signature": False})["iss"] == (
        "https://issuer.example:8443"
    )


def test_issue_refuses_a_ttl_beyond_the_issuers_max(tmp_path: Path) -> None:
    state_dir = _recorded_state(tmp_path, max_token_ttl=600)

    result = CliRunner().invoke(identity, ["issue", "--dir", str(state_dir), "--workload", "billing",
                                           "--ttl", "1h"])

    assert result.exit_code == 1
    assert "exceeds the issuer's max token ttl of 600s" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--claim", "novalue"], "use KEY=VALUE"),
        (["--claim", "a=1", "--claim", "a=2"], "given twice"),
        (["--claim", "sub=root"], "cannot be overridden"),
        (["--ttl", "soon"], "invalid duration 'soon'"),
        (["--ttl", "0s"], "must be longer than zero"),
        (["--workload", "Bad_Name"], "invalid workload name"),
    ],
)
def test_issue_reports_bad_input_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    state_dir = _recorded_state(tmp_path)

    result = CliRunner().invoke(identity, ["issue", "--dir", str(state_dir), "--workload", "billing", *args])

    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_rotate_without_keys_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(identity, ["rotate", "--dir", str(tmp_path)])

    assert result.exit_code == 1
    assert "run `vaultmesh identity serve` once" in result.output


def test_state_dir_comes_from_vaultmesh_dir(tmp_path: Path) -> None:
    state_dir = _recorded_state(tmp_path / "from-env")

    result = CliRunner().invoke(identity, ["rotate"], env={"VAULTMESH_DIR": str(state_dir)})

    assert result.exit_code == 0, result.output
    assert len(KeyRing.load(keys_dir(state_dir)).keys) == 2
    assert os.listdir(tmp_path) == ["from-env"]


def test_state_dir_comes_from_the_main_command_when_not_given(tmp_path: Path) -> None:
    state_dir = _recorded_state(tmp_path / "from-main")
    main = click.Group("vaultmesh", params=[click.Option(["--dir", "dir_"], type=click.Path(path_type=Path))],
                       callback=click.pass_context(lambda ctx, dir_: setattr(ctx, "obj", SimpleNamespace(dir=dir_))))
    main.add_command(identity)

    result = CliRunner().invoke(main, ["--dir", str(state_dir), "identity", "rotate"])

    assert result.exit_code == 0, result.output
    assert len(KeyRing.load(keys_dir(state_dir)).keys) == 2


# -- hardening (issue 8) -------------------------------------------------------------------------------------

@pytest.mark.parametrize("issuer", ["https://127.0.0.1:9", "https://localhost:9", "https://127.0.0.1:10"])
def test_the_lifetime_cap_holds_however_the_issuer_is_spelled(tmp_path: Path, issuer: str) -> None:
    state_dir = _recorded_state(tmp_path / "state", max_token_ttl=600)
    result = CliRunner().invoke(identity, ["issue", "--dir", str(state_dir), "--workload", "billing",
                                           "--issuer", issuer, "--ttl", "2h"])
    assert result.exit_code != 0
    assert "exceeds the issuer's max token ttl of 600s" in result.output


def test_slow_clients_cannot_hold_more_than_the_connection_bound(server: IssuerServer, pki: PKIFiles) -> None:
    import socket as socketlib

    from vaultmesh.identity.server import MAX_CONNECTIONS
    from vaultmesh.runtime.local import wait_until

    before = threading.active_count()
    port = int(server.issuer_url.rsplit(":", 1)[1])
    held = []
    try:
        for _ in range(MAX_CONNECTIONS + 40):  # connect and never say a word (slowloris)
            held.append(socketlib.create_connection(("127.0.0.1", port), timeout=5))
        samples: list[int] = []
        wait_until(lambda: samples.append(threading.active_count()) or len(samples) >= 20, timeout=3.0,
                   interval=0.05)
        assert max(samples) <= before + MAX_CONNECTIONS + 2

        def served() -> Reply | None:
            try:
                return https_get(server.issuer_url + "/keys", pki.ca_file)
            except (OSError, urllib.error.URLError):
                return None

        reply = eventually(served, timeout=10.0)
        assert reply is not None and reply.status == 200
    finally:
        for s in held:
            s.close()


def test_serve_with_a_bad_certificate_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    state_dir = tmp_path / "state"
    result = CliRunner().invoke(identity, ["serve", "--dir", str(state_dir), "--cert", str(bad), "--key", str(bad)])
    assert result.exit_code != 0
    assert "cannot serve TLS" in result.output
    assert not keys_dir(state_dir).exists()
