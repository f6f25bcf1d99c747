"""Workload identity tokens: minting, the OIDC discovery document, the JWKS, and durations.

Tokens are shaped like Kubernetes projected service-account tokens (or SPIFFE JWT-SVIDs, by subject)::

    header   {"alg": "ES256", "kid": "<thumbprint>", "typ": "JWT"}
    claims   {"iss": issuer, "sub": "system:serviceaccount:<ns>:<workload>"
                                    | "spiffe://<trust_domain>/ns/<ns>/sa/<workload>",
              "aud": [...], "iat": t, "nbf": t, "exp": t + ttl, "jti": "<uuid4 hex>",
              "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": workload, "uid": <uuid5>}},
              ...the caller's extra claims, flat}

Everything here is pure: time comes in as ``now`` (epoch seconds).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import jwt

from vaultmesh.durations import parse_seconds
from vaultmesh.errors import VaultmeshError
from vaultmesh.identity.keys import ALGORITHM, KeyRing, SigningKey

SubjectFormat = Literal["k8s", "spiffe"]

REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "kubernetes.io"})
"""Claims ``mint`` sets itself; extra claims may not replace them."""

JWKS_PATH = "/keys"
DISCOVERY_PATH = "/.well-known/openid-configuration"

_SA_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://vaultmesh.local/serviceaccount")
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # DNS-1123 label
_NAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # DNS-1123 subdomain
_TRUST_DOMAIN_RE = re.compile(r"^[a-z0-9._-]{1,255}$")


def mint(signer: KeyRing | SigningKey, **fields: Any) -> str:
    """Return a signed JWT with the claims ``token_claims(**fields)`` (same keyword arguments): for
    ``workload``, valid from ``now`` for ``ttl`` seconds.

    ``signer`` is a key ring (its active key signs) or one key. ``claims`` are added flat at the top level
    and may not name a registered claim (see ``REGISTERED_CLAIMS``).
    """
    key = signer.active if isinstance(signer, KeyRing) else signer
    payload = token_claims(**fields)
    try:
        return jwt.encode(payload, key.private_key, algorithm=key.alg, headers={"kid": key.kid})
    except TypeError as err:
        raise VaultmeshError(f"token claims must be JSON values: {err}") from None


def token_claims(
    *,
    issuer: str,
    workload: str,
    audience: str | Sequence[str],
    ttl: float,
    now: float,
    claims: Mapping[str, Any] | None = None,
    namespace: str = "default",
    trust_domain: str = "vaultmesh.local",
    subject_format: SubjectFormat = "k8s",
    jti: str | None = None,
) -> dict[str, Any]:
    """Return the claims ``mint`` signs (same arguments, no key)."""
    _check_issuer(issuer)
    audiences = [audience] if isinstance(audience, str) else list(audience)
    if not audiences or not all(isinstance(a, str) and a for a in audiences):
        raise VaultmeshError(f"token audience must be one or more non-empty strings, got {audience!r}")
    if not ttl >= 1:
        raise VaultmeshError(f"token ttl must be at least 1 second, got {ttl!r}")
    if jti is not None and not jti:
        raise VaultmeshError("token id (jti) must not be empty")
    extra = dict(claims or {})
    clashing = sorted(REGISTERED_CLAIMS.intersection(extra))
    if clashing:
        raise VaultmeshError(
            f"claim {', '.join(repr(c) for c in clashing)} is set by the issuer and cannot be overridden",
            hint="choose another claim name",
        )
    issued_at = int(now)
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": subject_for(workload, namespace=namespace, subject_format=subject_format,
                           trust_domain=trust_domain),
        "aud": audiences,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": int(now + ttl),
        "jti": jti or uuid.uuid4().hex,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": workload, "uid": service_account_uid(workload, namespace=namespace)},
        },
    }
    payload.update(extra)
    return payload


def subject_for(
    workload: str,
    *,
    namespace: str = "default",
    subject_format: SubjectFormat = "k8s",
    trust_domain: str = "vaultmesh.local",
) -> str:
    """Return the ``sub`` a token for ``workload`` carries (what an OpenBao role's ``bound_subject`` names)."""
    _check_names(workload, namespace)
    if subject_format == "k8s":
        return f"system:serviceaccount:{namespace}:{workload}"
    if subject_format == "spiffe":
        if not _TRUST_DOMAIN_RE.match(trust_domain):
            raise VaultmeshError(
                f"invalid SPIFFE trust domain {trust_domain!r}: use lowercase letters, digits, '.', '-', '_'"
            )
        return f"spiffe://{trust_domain}/ns/{namespace}/sa/{workload}"
    raise VaultmeshError(f"unknown subject format {subject_format!r}: use 'k8s' or 'spiffe'")


def service_account_uid(workload: str, *, namespace: str = "default") -> str:
    """Return the stable uuid5 standing in for the Kubernetes service account uid of ``namespace/workload``."""
    return str(uuid.uuid5(_SA_UID_NAMESPACE, f"{namespace}/{workload}"))


def discovery_document(issuer: str) -> dict[str, Any]:
    """Return the OpenID Provider metadata served at ``<issuer>/.well-known/openid-configuration``."""
    _check_issuer(issuer)
    return {
        "issuer": issuer,
        "jwks_uri": issuer + JWKS_PATH,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
    }


def jwks(keys: Iterable[SigningKey]) -> dict[str, Any]:
    """Return the JSON Web Key Set (public keys only) for ``keys``."""
    return {"keys": [k.public_jwk() for k in keys]}


def parse_duration(text: str) -> float:
    """Return the seconds in a duration such as ``90s``, ``10m``, ``1h``, ``2h30m``, ``1d`` or ``45``."""
    try:
        return parse_seconds(text)
    except ValueError as err:
        raise VaultmeshError(str(err)) from None


def _check_issuer(issuer: str) -> None:
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment or issuer.endswith("/"):
        raise VaultmeshError(
            f"invalid issuer URL {issuer!r}: use https://host:port with no trailing slash, query or fragment"
        )


def _check_names(workload: str, namespace: str) -> None:
    if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
        raise VaultmeshError(
            f"invalid namespace {namespace!r}: use at most 63 lowercase letters, digits and '-'"
        )
    if not isinstance(workload, str) or not _NAME_RE.match(workload):
        raise VaultmeshError(
            f"invalid workload name {workload!r}: use lowercase letters, digits, '-' and '.' (at most 253)"
        )
