"""`vaultmesh identity ...`: run the workload identity issuer, mint tokens, rotate keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from vaultmesh.cli.common import Ctx, mesh_command
from vaultmesh.errors import VaultmeshError
from vaultmesh.identity.keys import KeyRing, write_private_file
from vaultmesh.identity.server import (
    issuer_record_path,
    keys_dir,
    read_issuer_record,
)
from vaultmesh.identity.tokens import mint, parse_duration

DEFAULT_MAX_TOKEN_TTL = 3600.0


class Duration(click.ParamType):
    """A duration such as 90s, 10m, 1h or 2h30m, converted to seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value) if isinstance(value, int | float) else parse_duration(value)
        except VaultmeshError as err:
            self.fail(str(err), param, ctx)
        if seconds <= 0:
            self.fail(f"duration {value!r} must be longer than zero", param, ctx)
        return seconds


DURATION = Duration()

@click.group("identity")
def identity() -> None:
    """Workload identity issuer: OIDC discovery + JWKS over HTTPS, and tokens shaped like
    Kubernetes service-account tokens or SPIFFE JWT-SVIDs."""


@identity.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port to listen on; 0 picks a free one. Default: the port recorded by the last serve, "
                   "so the issuer URL stays the same, else 0.")
@click.option("--cert", "certfile", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="TLS certificate (PEM) for the listener; must name the host, e.g. IP SAN 127.0.0.1.")
@click.option("--key", "keyfile", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="TLS private key (PEM) for the certificate.")
@click.option("--max-token-ttl", type=DURATION, default="1h", show_default=True,
              help="Longest lifetime of any token; retired keys stay published this long.")
@mesh_command()
def serve(ctx: Ctx, host: str, port: int | None, certfile: Path, keyfile: Path,
          max_token_ttl: float) -> None:
    """Serve the issuer in the foreground until interrupted (Ctrl-C or SIGTERM)."""
    from vaultmesh.identity.service import serve_issuer

    serve_issuer(ctx.dir, certfile=certfile, keyfile=keyfile, host=host, port=port, max_token_ttl=max_token_ttl,
                 announce=click.echo)


@identity.command("issue")
@click.option("--workload", required=True, help="Workload (service account) name.")
@click.option("--claim", "claim_pairs", multiple=True, metavar="KEY=VALUE",
              help="Extra claim (string value); repeatable.")
@click.option("--ttl", type=DURATION, default="10m", show_default=True, help="Token lifetime.")
@click.option("--audience", "audiences", multiple=True, default=("vaultmesh",), show_default=True,
              help="Audience; repeatable.")
@click.option("--namespace", default="default", show_default=True, help="Namespace of the workload.")
@click.option("--subject-format", type=click.Choice(["k8s", "spiffe"]), default="k8s", show_default=True,
              help="k8s: system:serviceaccount:NS:NAME; spiffe: spiffe://TRUST_DOMAIN/ns/NS/sa/NAME.")
@click.option("--trust-domain", default="vaultmesh.local", show_default=True,
              help="SPIFFE trust domain (with --subject-format spiffe).")
@click.option("--issuer", "issuer_url", default=None,
              help="Issuer URL; default: the one recorded by `vaultmesh identity serve`.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the token to this file (mode 0600) instead of stdout.")
@mesh_command()
def issue(ctx: Ctx, workload: str, claim_pairs: tuple[str, ...], ttl: float,
          audiences: tuple[str, ...], namespace: str, subject_format: str, trust_domain: str,
          issuer_url: str | None, output: Path | None) -> None:
    """Mint a signed token for a workload."""
    state_dir = ctx.dir
    claims = _parse_claims(claim_pairs)
    record = read_issuer_record(state_dir)
    if issuer_url is None:
        if record is None:
            raise VaultmeshError(
                f"no identity issuer recorded in {issuer_record_path(state_dir)}",
                hint="run `vaultmesh identity serve` first, or pass --issuer URL",
            )
        issuer_url = record.issuer
    # The cap holds whatever --issuer says: the keys are the same, so is the limit.
    cap = record.max_token_ttl if record is not None else DEFAULT_MAX_TOKEN_TTL
    if ttl > cap:
        raise VaultmeshError(
            f"--ttl {ttl:g}s exceeds the issuer's max token ttl of {cap:g}s",
            hint="use a shorter --ttl or restart `identity serve` with a larger --max-token-ttl",
        )
    ring = KeyRing.load(keys_dir(state_dir))
    token = mint(
        ring, issuer=issuer_url, workload=workload, audience=list(audiences), ttl=ttl, now=time.time(),
        claims=claims, namespace=namespace, trust_domain=trust_domain,
        subject_format="spiffe" if subject_format == "spiffe" else "k8s",
    )
    if output is None:
        click.echo(token)
    else:
        write_private_file(output, token.encode("ascii"))


@identity.command("rotate")
@click.option("--max-token-ttl", type=DURATION, default=None,
              help="Keep retired keys this long; default: the running issuer's --max-token-ttl, else 1h.")
@mesh_command()
def rotate(ctx: Ctx, max_token_ttl: float | None) -> None:
    """Make a new signing key active; the old one stays published until its tokens have expired."""
    state_dir = ctx.dir
    now = time.time()
    ring = KeyRing.load(keys_dir(state_dir))
    if max_token_ttl is None:
        record = read_issuer_record(state_dir)
        max_token_ttl = record.max_token_ttl if record is not None else DEFAULT_MAX_TOKEN_TTL
    key = ring.rotate(now)
    pruned = ring.prune(now, max_token_ttl)
    published = ring.published(now, max_token_ttl)
    click.echo(f"active key {key.kid}; {len(published)} published, {len(pruned)} removed")


def _parse_claims(pairs: tuple[str, ...]) -> dict[str, str]:
    claims: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise VaultmeshError(f"invalid --claim {pair!r}: use KEY=VALUE")
        if name in claims:
            raise VaultmeshError(f"--claim {name!r} is given twice")
        claims[name] = value
    return claims


