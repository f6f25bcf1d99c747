"""Minting workload tokens, the discovery document, the JWKS, and duration parsing."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaultmesh.errors import VaultmeshError
from vaultmesh.identity.keys import KeyRing
from vaultmesh.identity.tokens import (
    REGISTERED_CLAIMS,
    discovery_document,
    jwks,
    mint,
    parse_duration,
    service_account_uid,
    subject_for,
)

ISSUER = "https://127.0.0.1:8443"
T0 = 1_700_000_000.0


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys", T0)


def _verify(token: str, key_set: dict[str, Any], *, audience: str = "vaultmesh", now: float = T0) -> dict[str, Any]:
    """Verify ``token`` the way a relying party does: pick the JWK by kid, check signature and claims."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in key_set["keys"] if k["kid"] == kid)
    key = jwt.PyJWK(jwk)
    # PyJWT checks times against its own clock; the tokens here are minted at T0, so check times by hand.
    claims = jwt.decode(
        token, key.key, algorithms=["ES256"], audience=audience, issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "require": ["exp", "iat"]},
    )
    assert claims["nbf"] <= now < claims["exp"]
    return claims


def _mint(ring: KeyRing, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "issuer": ISSUER, "workload": "billing", "audience": "vaultmesh", "ttl": 600, "now": T0, "claims": {},
    }
    args.update(overrides)
    return mint(ring, **args)


def test_minted_token_verifies_against_the_published_jwks(ring: KeyRing) -> None:
    token = _mint(ring)

    claims = _verify(token, jwks(ring.published(T0, 3600)))

    assert claims["sub"] == "system:serviceaccount:default:billing"


def test_token_verifies_with_pyjwt_clock_when_minted_now(ring: KeyRing) -> None:
    token = _mint(ring, now=time.time())
    jwk = jwks(ring.published(time.time(), 3600))["keys"][0]

    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="vaultmesh", issuer=ISSUER)

    assert claims["iss"] == ISSUER


def test_header_names_the_active_key(ring: KeyRing) -> None:
    header = jwt.get_unverified_header(_mint(ring))

    assert header == {"alg": "ES256", "kid": ring.active.kid, "typ": "JWT"}


def test_kubernetes_shaped_claims(ring: KeyRing) -> None:
    claims = _verify(_mint(ring, workload="billing", namespace="payments", ttl=600), jwks(ring.keys))

    assert claims["iss"] == ISSUER
    assert claims["sub"] == "system:serviceaccount:payments:billing"
    assert claims["aud"] == ["vaultmesh"]
    assert claims["iat"] == claims["nbf"] == int(T0)
    assert claims["exp"] == int(T0) + 600
    assert uuid.UUID(hex=claims["jti"]).version == 4
    assert claims["kubernetes.io"] == {
        "namespace": "payments",
        "serviceaccount": {"name": "billing", "uid": service_account_uid("billing", namespace="payments")},
    }


def test_spiffe_subject(ring: KeyRing) -> None:
    token = _mint(ring, namespace="payments", subject_format="spiffe", trust_domain="prod.example")

    claims = _verify(token, jwks(ring.keys))

    assert claims["sub"] == "spiffe://prod.example/ns/payments/sa/billing"
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "billing"


def test_several_audiences_are_kept_in_order(ring: KeyRing) -> None:
    claims = _verify(_mint(ring, audience=["vaultmesh", "other"]), jwks(ring.keys), audience="other")

    assert claims["aud"] == ["vaultmesh", "other"]


def test_service_account_uid_is_stable_and_per_namespace() -> None:
    uid = service_account_uid("billing", namespace="payments")

    assert uid == service_account_uid("billing", namespace="payments")
    assert uuid.UUID(uid).version == 5
    assert uid != service_account_uid("billing", namespace="default")
    assert uid != service_account_uid("billing2", namespace="payments")


def test_each_token_gets_a_fresh_jti(ring: KeyRing) -> None:
    first = jwt.decode(_mint(ring), options={"verify_signature": False})
    second = jwt.decode(_mint(ring), options={"verify_signature": False})

    assert first["jti"] != second["jti"]


def test_explicit_jti_is_used(ring: KeyRing) -> None:
    claims = jwt.decode(_mint(ring, jti="run-42"), options={"verify_signature": False})

    assert claims["jti"] == "run-42"


def test_extra_claims_are_flat_at_top_level(ring: KeyRing) -> None:
    claims = _verify(_mint(ring, claims={"team": "payments", "tier": 2}), jwks(ring.keys))

    assert claims["team"] == "payments"
    assert claims["tier"] == 2


@pytest.mark.parametrize("name", sorted(REGISTERED_CLAIMS))
def test_extra_claims_cannot_override_registered_ones(ring: KeyRing, name: str) -> None:
    with pytest.raises(VaultmeshError, match=f"claim '{name}' is set by the issuer"):
        _mint(ring, claims={name: "forged"})


def test_extra_claims_must_be_json_values(ring: KeyRing) -> None:
    with pytest.raises(VaultmeshError, match="JSON"):
        _mint(ring, claims={"when": object()})


def test_token_signed_by_a_retired_key_verifies_while_it_is_published(ring: KeyRing) -> None:
    old_token = _mint(ring)
    ring.rotate(T0 + 60)
    new_token = _mint(ring, now=T0 + 60)

    key_set = jwks(ring.published(T0 + 120, 3600))

    assert jwt.get_unverified_header(new_token)["kid"] == ring.active.kid
    assert _verify(old_token, key_set, now=T0 + 120)["sub"].endswith(":billing")
    assert _verify(new_token, key_set, now=T0 + 120)["sub"].endswith(":billing")


def test_a_single_key_can_sign(ring: KeyRing) -> None:
    token = mint(ring.active, issuer=ISSUER, workload="billing", audience="vaultmesh", ttl=60, now=T0, claims={})

    assert jwt.get_unverified_header(token)["kid"] == ring.active.kid


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"workload": "Billing"}, "invalid workload name"),
        ({"workload": "a:b"}, "invalid workload name"),
        ({"workload": ""}, "invalid workload name"),
        ({"namespace": "x/y"}, "invalid namespace"),
        ({"ttl": 0}, "ttl must be at least 1 second"),
        ({"ttl": -5}, "ttl must be at least 1 second"),
        ({"audience": []}, "audience"),
        ({"audience": ""}, "audience"),
        ({"issuer": "http://127.0.0.1:8443"}, "invalid issuer URL"),
        ({"issuer": ISSUER + "/"}, "invalid issuer URL"),
        ({"subject_format": "x509"}, "unknown subject format"),
        ({"subject_format": "spiffe", "trust_domain": "Bad Domain"}, "trust domain"),
        ({"jti": ""}, "jti"),
    ],
)
def test_invalid_arguments_are_refused_with_a_message(
    ring: KeyRing, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(VaultmeshError, match=message):
        _mint(ring, **overrides)


def test_subject_for_matches_what_mint_sets(ring: KeyRing) -> None:
    claims = jwt.decode(_mint(ring, namespace="ops", subject_format="spiffe"), options={"verify_signature": False})

    assert claims["sub"] == subject_for("billing", namespace="ops", subject_format="spiffe")


def test_discovery_document() -> None:
    assert discovery_document(ISSUER) == {
        "issuer": ISSUER,
        "jwks_uri": ISSUER + "/keys",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }


def test_jwks_holds_public_keys_only(ring: KeyRing) -> None:
    ring.rotate(T0 + 1)

    key_set = jwks(ring.keys)

    assert [k["kid"] for k in key_set["keys"]] == [k.kid for k in ring.keys]
    for jwk in key_set["keys"]:
        assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
        assert jwk["use"] == "sig" and jwk["alg"] == "ES256"
        assert "d" not in jwk


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h", 3600), ("2h30m", 9000), ("1d", 86400), ("1h0m5s", 3605),
     ("1.5h", 5400), ("45", 45), (" 5m ", 300), ("0s", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "   ", "m", "10x", "1h1h", "30m2h", "-5s", "1 h", "5M", "h5", "1.s"])
def test_parse_duration_refuses_with_the_input_and_examples(text: str) -> None:
    with pytest.raises(VaultmeshError, match=r"invalid duration .*e\.g\. 90s, 10m, 1h"):
        parse_duration(text)


@given(st.integers(0, 99), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_parse_duration_adds_up_the_units(d: int, h: int, m: int, s: int) -> None:
    assert parse_duration(f"{d}d{h}h{m}m{s}s") == d * 86400 + h * 3600 + m * 60 + s
