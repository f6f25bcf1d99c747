"""The issuer's signing keys: a key ring kept in one private directory.

Layout of the directory (0700)::

    keyring.json        metadata: kid, algorithm, created_at, retired_at of every key (0600)
    <kid>.pem           one PKCS#8 private key per entry (0600)
    .lock               flock target serialising writers across processes

Every file is written atomically (temporary file in the same directory, then ``os.replace``), a key's PEM
before the metadata that names it, so a reader never sees metadata pointing at a missing key.

The newest key is *active*: it signs new tokens. ``rotate`` retires the active key at ``now`` and adds a new
one. A retired key stays *published* (in the JWKS) while tokens it signed may still be valid, i.e. until
``retired_at + max_token_ttl``; ``prune`` then deletes it. Time is always passed in as ``now`` (epoch
seconds); nothing here reads the clock.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from vaultmesh.errors import StateError
from vaultmesh.fsutil import fsync_dir, write_atomic

ALGORITHM = "ES256"
"""The only signing algorithm: ECDSA on P-256 signs in tens of microseconds and OpenBao verifies it."""

METADATA_FILE = "keyring.json"
METADATA_VERSION = 1
_LOCK_FILE = ".lock"
_KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One signing key: its id, its lifetime, and the parsed private key object (parsed once, reused)."""

    kid: str
    created_at: float
    private_key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)
    retired_at: float | None = None
    alg: str = ALGORITHM

    @property
    def active(self) -> bool:
        return self.retired_at is None

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> str:
        """Return the public key as PEM (SubjectPublicKeyInfo), e.g. for OpenBao's ``jwt_validation_pubkeys``."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def public_jwk(self) -> dict[str, Any]:
        """Return the public JWK with ``kid``, ``use`` and ``alg`` set, as published in the JWKS."""
        jwk = dict(ECAlgorithm.to_jwk(self.public_key, as_dict=True))
        jwk.update(kid=self.kid, use="sig", alg=self.alg)
        return jwk


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """Return the RFC 7638 thumbprint (SHA-256, base64url without padding) of a public JWK."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
    members = required.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"cannot compute a thumbprint for key type {jwk.get('kty')!r}")
    canonical = json.dumps({m: jwk[m] for m in members}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_signing_key(now: float) -> SigningKey:
    """Generate a fresh P-256 key whose ``kid`` is the thumbprint of its public JWK."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    kid = jwk_thumbprint(ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True))
    return SigningKey(kid=kid, created_at=float(now), private_key=private_key)


def retire_active(keys: Sequence[SigningKey], now: float, successor: SigningKey) -> tuple[SigningKey, ...]:
    """Return ``keys`` with the active key retired at ``now`` and ``successor`` appended as the new active key."""
    retired = tuple(
        replace(k, retired_at=max(float(now), k.created_at)) if k.active else k for k in keys
    )
    return (*retired, successor)


def select_published(
    keys: Sequence[SigningKey], now: float, max_token_ttl: float
) -> tuple[SigningKey, ...]:
    """Return the keys a verifier must still find: the active one, and retired ones whose tokens may live.

    A key retired at ``T`` signed its last token at ``T`` at the latest, and that token expires no later than
    ``T + max_token_ttl``; the key is published strictly before that instant.
    """
    return tuple(
        k for k in keys if k.retired_at is None or now < k.retired_at + max_token_ttl
    )


class KeyRing:
    """The signing keys of one issuer, stored in ``directory``; see the module docstring for the layout."""

    def __init__(self, directory: Path, keys: Sequence[SigningKey]) -> None:
        if not keys or not keys[-1].active or any(k.active for k in keys[:-1]):
            raise StateError(f"key ring in {directory} must end with exactly one active key")
        self._directory = Path(directory)
        self._keys = tuple(keys)
        self._stamp = _file_stamp(self._directory / METADATA_FILE)

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, directory: str | os.PathLike[str], now: float) -> KeyRing:
        """Load the ring in ``directory``, creating the directory and a first key if there is none."""
        path = Path(directory)
        _ensure_private_dir(path)
        with _locked(path, exclusive=True):
            if (path / METADATA_FILE).exists():
                return cls(path, _read_keys(path, {}))
            key = new_signing_key(now)
            _write_key(path, key)
            _write_metadata(path, (key,))
            return cls(path, (key,))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> KeyRing:
        """Load an existing ring; raise ``StateError`` if ``directory`` holds none."""
        path = Path(directory)
        if not (path / METADATA_FILE).exists():
            raise StateError(
                f"no identity keys in {path}", hint="run `vaultmesh identity serve` once to create them"
            )
        _check_private(path, directory=True)
        with _locked(path, exclusive=False):
            return cls(path, _read_keys(path, {}))

    # -- reading -----------------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every key still on disk, oldest first; the last one is active."""
        return self._keys

    @property
    def active(self) -> SigningKey:
        """The key that signs new tokens (the newest one)."""
        return self._keys[-1]

    def get(self, kid: str) -> SigningKey | None:
        return next((k for k in self._keys if k.kid == kid), None)

    def published(self, now: float, max_token_ttl: float) -> tuple[SigningKey, ...]:
        """The keys that must be in the JWKS at ``now``; see :func:`select_published`."""
        return select_published(self._keys, now, max_token_ttl)

    # -- changing ----------------------------------------------------------------------------------------

    def rotate(self, now: float) -> SigningKey:
        """Retire the active key at ``now``, add a new active key, and return it.

        The ring is re-read from disk under the lock first, so a rotation made by another process is kept.
        """
        with _locked(self._directory, exclusive=True):
            current = _read_keys(self._directory, self._by_kid())
            key = new_signing_key(now)
            keys = retire_active(current, now, key)
            _write_key(self._directory, key)
            _write_metadata(self._directory, keys)
            self._set(keys)
        return key

    def prune(self, now: float, max_token_ttl: float) -> tuple[str, ...]:
        """Delete the keys that are no longer published at ``now``; return their kids."""
        with _locked(self._directory, exclusive=True):
            current = _read_keys(self._directory, self._by_kid())
            keep = select_published(current, now, max_token_ttl)
            kept = {k.kid for k in keep}
            gone = tuple(k.kid for k in current if k.kid not in kept)
            if gone:
                _write_metadata(self._directory, keep)
                for kid in gone:
                    with contextlib.suppress(FileNotFoundError):
                        (self._directory / f"{kid}.pem").unlink()
                fsync_dir(self._directory)
            self._set(keep)
        return gone

    def refresh(self) -> bool:
        """Re-read the ring if its metadata file changed on disk (e.g. ``rotate`` in another process).

        Returns True when the keys were reloaded. Keys already loaded are reused, not parsed again.
        """
        if _file_stamp(self._directory / METADATA_FILE) == self._stamp:
            return False
        with _locked(self._directory, exclusive=False):
            self._set(_read_keys(self._directory, self._by_kid()))
        return True

    def _by_kid(self) -> dict[str, SigningKey]:
        return {k.kid: k for k in self._keys}

    def _set(self, keys: Sequence[SigningKey]) -> None:
        self._keys = tuple(keys)
        self._stamp = _file_stamp(self._directory / METADATA_FILE)


# -- files -------------------------------------------------------------------------------------------------


def write_private_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` (``fsutil.write_atomic``)."""
    write_atomic(Path(path), data, mode=mode)


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _ensure_private_dir(path: Path) -> None:
    if path.exists():
        _check_private(path, directory=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def _check_private(path: Path, *, directory: bool) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise StateError(f"{path} is missing from the identity key ring") from None
    if directory and not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{path} is not a directory")
    if st.st_mode & 0o077:
        want = "700" if directory else "600"
        raise StateError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o})",
            hint=f"run `chmod {want} {path}`",
        )


@contextlib.contextmanager
def _locked(directory: Path, *, exclusive: bool) -> Iterator[None]:
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _write_key(directory: Path, key: SigningKey) -> None:
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(directory / f"{key.kid}.pem", pem)


def _write_metadata(directory: Path, keys: Sequence[SigningKey]) -> None:
    doc = {
        "version": METADATA_VERSION,
        "keys": [
            {"kid": k.kid, "alg": k.alg, "created_at": k.created_at, "retired_at": k.retired_at}
            for k in keys
        ],
    }
    write_private_file(directory / METADATA_FILE, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def _read_keys(directory: Path, loaded: Mapping[str, SigningKey]) -> tuple[SigningKey, ...]:
    """Read the metadata and the keys it names, reusing parsed key objects from ``loaded``."""
    meta_path = directory / METADATA_FILE
    _check_private(meta_path, directory=False)
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StateError(f"cannot read {meta_path}: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise StateError(f"{meta_path} is not a vaultmesh key ring")
    if doc.get("version") != METADATA_VERSION:
        raise StateError(
            f"{meta_path} has version {doc.get('version')!r}, this vaultmesh reads version {METADATA_VERSION}",
            hint="use the vaultmesh release that wrote it",
        )
    keys = []
    for entry in doc["keys"]:
        keys.append(_read_entry(directory, meta_path, entry, loaded))
    if not keys:
        raise StateError(f"{meta_path} lists no keys")
    return tuple(keys)


def _read_entry(
    directory: Path, meta_path: Path, entry: Any, loaded: Mapping[str, SigningKey]
) -> SigningKey:
    try:
        kid = str(entry["kid"])
        alg = str(entry["alg"])
        created_at = float(entry["created_at"])
        retired_at = None if entry["retired_at"] is None else float(entry["retired_at"])
    except (TypeError, KeyError, ValueError):
        raise StateError(f"{meta_path} has a malformed key entry: {entry!r}") from None
    if not _KID_RE.match(kid):
        raise StateError(f"{meta_path} has an invalid key id {kid!r}")
    if alg != ALGORITHM:
        raise StateError(f"{meta_path}: key {kid} uses {alg!r}, only {ALGORITHM} is supported")
    previous = loaded.get(kid)
    if previous is not None:
        return replace(previous, created_at=created_at, retired_at=retired_at)
    pem_path = directory / f"{kid}.pem"
    _check_private(pem_path, directory=False)
    try:
        private_key = serialization.load_pem_private_key(pem_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise StateError(f"cannot load signing key {pem_path}: {err}") from None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        private_key.curve, ec.SECP256R1
    ):
        raise StateError(f"{pem_path} is not a P-256 private key")
    if jwk_thumbprint(ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)) != kid:
        raise StateError(f"{pem_path} does not match its key id {kid} (the file was replaced)")
    return SigningKey(
        kid=kid, created_at=created_at, private_key=private_key, retired_at=retired_at, alg=alg
    )
