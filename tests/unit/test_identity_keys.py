"""The identity key ring: private files on disk, rotation, publication window, pruning."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm

from vaultmesh.errors import StateError
from vaultmesh.identity.keys import (
    METADATA_FILE,
    KeyRing,
    jwk_thumbprint,
    select_published,
    write_private_file,
)

T0 = 1_700_000_000.0
HOUR = 3600.0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ring_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "identity" / "keys"


def test_creates_private_directory_and_files(ring_dir: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        ring = KeyRing.load_or_create(ring_dir, T0)
    finally:
        os.umask(old_umask)

    assert _mode(ring_dir) == 0o700
    assert _mode(ring_dir / METADATA_FILE) == 0o600
    assert _mode(ring_dir / f"{ring.active.kid}.pem") == 0o600
    assert not [p for p in ring_dir.iterdir() if p.name.endswith(".tmp")]


def test_first_key_is_active_es256_with_creation_time(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)

    assert len(ring.keys) == 1
    assert ring.active.alg == "ES256"
    assert ring.active.created_at == T0
    assert ring.active.retired_at is None


def test_reload_returns_the_same_key_without_creating_another(ring_dir: Path) -> None:
    first = KeyRing.load_or_create(ring_dir, T0)
    again = KeyRing.load_or_create(ring_dir, T0 + 10)
    loaded = KeyRing.load(ring_dir)

    assert [k.kid for k in again.keys] == [first.active.kid]
    assert loaded.active.kid == first.active.kid
    assert loaded.active.created_at == T0
    assert len(list(ring_dir.glob("*.pem"))) == 1


def test_kid_is_the_rfc7638_thumbprint_of_the_public_key(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)
    jwk = ECAlgorithm.to_jwk(ring.active.public_key, as_dict=True)
    canonical = f'{{"crv":"{jwk["crv"]}","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()

    assert ring.active.kid == expected == jwk_thumbprint(jwk)


def test_thumbprint_matches_the_rfc7638_example() -> None:
    # RFC 7638 section 3.1; optional members (alg, kid) do not change the digest.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
        "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicA"
        "taSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPks"
        "INHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }

    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_public_pem_holds_the_public_key_only(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)

    pem = ring.active.public_pem()

    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert serialization.load_pem_public_key(pem.encode()).public_numbers() == (
        ring.active.public_key.public_numbers()
    )


def test_load_without_a_ring_tells_the_user_to_serve(ring_dir: Path) -> None:
    with pytest.raises(StateError, match="identity serve"):
        KeyRing.load(ring_dir)


def test_rotate_adds_a_new_active_key_and_retires_the_old_one(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)
    old = ring.active

    new = ring.rotate(T0 + 100)

    assert ring.active == new
    assert new.kid != old.kid
    assert new.created_at == T0 + 100
    assert [k.kid for k in ring.keys] == [old.kid, new.kid]
    assert ring.keys[0].retired_at == T0 + 100
    assert _mode(ring_dir / f"{new.kid}.pem") == 0o600
    assert [k.kid for k in KeyRing.load(ring_dir).keys] == [old.kid, new.kid]


def test_retired_key_stays_published_until_its_tokens_may_have_expired(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)
    old = ring.active
    new = ring.rotate(T0 + 100)
    retired_until = T0 + 100 + HOUR

    assert [k.kid for k in ring.published(T0 + 100, HOUR)] == [old.kid, new.kid]
    assert [k.kid for k in ring.published(retired_until - 1, HOUR)] == [old.kid, new.kid]
    assert [k.kid for k in ring.published(retired_until, HOUR)] == [new.kid]


def test_active_key_is_always_published(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)

    assert ring.published(T0 + 100 * 365 * 86400, HOUR) == (ring.active,)


def test_prune_keeps_keys_still_published(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)
    old = ring.active
    ring.rotate(T0 + 100)

    assert ring.prune(T0 + 100 + HOUR - 1, HOUR) == ()
    assert (ring_dir / f"{old.kid}.pem").exists()


def test_prune_deletes_keys_no_longer_published(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)
    old = ring.active
    new = ring.rotate(T0 + 100)

    assert ring.prune(T0 + 100 + HOUR, HOUR) == (old.kid,)
    assert not (ring_dir / f"{old.kid}.pem").exists()
    assert [k.kid for k in ring.keys] == [new.kid]
    assert [k.kid for k in KeyRing.load(ring_dir).keys] == [new.kid]


def test_rotation_by_another_process_is_seen_after_refresh(ring_dir: Path) -> None:
    server_side = KeyRing.load_or_create(ring_dir, T0)
    first = server_side.active
    other = KeyRing.load(ring_dir)

    new = other.rotate(T0 + 5)

    assert server_side.refresh() is True
    assert [k.kid for k in server_side.keys] == [first.kid, new.kid]
    assert server_side.keys[0].private_key is first.private_key  # reused, not parsed again
    assert server_side.refresh() is False


def test_rotating_a_stale_ring_keeps_keys_added_elsewhere(ring_dir: Path) -> None:
    a = KeyRing.load_or_create(ring_dir, T0)
    b = KeyRing.load(ring_dir)
    from_b = b.rotate(T0 + 1)

    from_a = a.rotate(T0 + 2)

    assert [k.kid for k in KeyRing.load(ring_dir).keys][1:] == [from_b.kid, from_a.kid]
    assert [k.active for k in KeyRing.load(ring_dir).keys] == [False, False, True]


def test_key_file_readable_by_others_is_refused(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)
    pem = ring_dir / f"{ring.active.kid}.pem"
    pem.chmod(0o644)

    with pytest.raises(StateError, match="chmod 600"):
        KeyRing.load(ring_dir)


def test_directory_open_to_others_is_refused(ring_dir: Path) -> None:
    KeyRing.load_or_create(ring_dir, T0)
    ring_dir.chmod(0o755)

    with pytest.raises(StateError, match="chmod 700"):
        KeyRing.load(ring_dir)


def test_corrupt_metadata_is_a_state_error(ring_dir: Path) -> None:
    KeyRing.load_or_create(ring_dir, T0)
    write_private_file(ring_dir / METADATA_FILE, b"{not json")

    with pytest.raises(StateError, match=METADATA_FILE):
        KeyRing.load(ring_dir)


def test_metadata_from_a_newer_version_is_refused(ring_dir: Path) -> None:
    KeyRing.load_or_create(ring_dir, T0)
    doc = json.loads((ring_dir / METADATA_FILE).read_text())
    doc["version"] = 99
    write_private_file(ring_dir / METADATA_FILE, json.dumps(doc).encode())

    with pytest.raises(StateError, match="version 99"):
        KeyRing.load(ring_dir)


def test_key_id_that_is_not_a_plain_name_is_refused(ring_dir: Path) -> None:
    KeyRing.load_or_create(ring_dir, T0)
    doc = json.loads((ring_dir / METADATA_FILE).read_text())
    doc["keys"][0]["kid"] = "../escape"
    write_private_file(ring_dir / METADATA_FILE, json.dumps(doc).encode())

    with pytest.raises(StateError, match="invalid key id"):
        KeyRing.load(ring_dir)


def test_key_file_swapped_for_another_key_is_refused(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)
    other_dir = ring_dir.parent / "other"
    other = KeyRing.load_or_create(other_dir, T0)
    (other_dir / f"{other.active.kid}.pem").replace(ring_dir / f"{ring.active.kid}.pem")

    with pytest.raises(StateError, match="does not match"):
        KeyRing.load(ring_dir)


def test_select_published_is_pure_over_values(ring_dir: Path) -> None:
    ring = KeyRing.load_or_create(ring_dir, T0)
    ring.rotate(T0 + 10)
    ring.rotate(T0 + 20)
    keys = ring.keys

    assert select_published(keys, T0 + 10 + 60, 60) == keys[1:]
    assert select_published(keys, T0 + 20 + 60, 60) == keys[2:]


def test_write_private_file_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "token"
    target.write_text("old")
    target.chmod(0o644)

    write_private_file(target, b"new")

    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]
