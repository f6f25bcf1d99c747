"""Raft snapshot files checked offline, and the manifest vaultmesh writes beside each. Pure: bytes in, values out.

A snapshot (``GET /v1/sys/storage/raft/snapshot``, ``bao operator raft snapshot save``) is one gzip stream of a
ustar archive, written by OpenBao's ``physical/raft/snapshot`` (from hashicorp/raft-snapshot) with four members:

- ``meta.json``: Raft's ``SnapshotMeta`` (``Version``, ``ID``, ``Index``, ``Term``, ``Configuration``, ``Size``)
- ``state.bin``: the storage itself, ``Size`` bytes
- ``SHA256SUMS``: ``<hex>  <name>`` lines for meta.json and state.bin
- ``SHA256SUMS.sealed``: the same list encrypted by the mesh's seal. OpenBao's restore opens it with the seal
  (so a snapshot restores only into a mesh with the same seal key) and fails without it; offline it can only be
  checked for presence and size.

``verify_bytes`` and ``verify_file`` stream the file in 64 KiB pieces (memory stays bounded whatever its size)
and check, in this order, each failure a ``SnapshotInvalid`` naming its check and where:

1. ``gzip``: one complete gzip member, its CRC-32 and length, nothing after it;
2. ``tar``: ustar headers with valid checksums, regular files only, zero padding, the two end-of-archive
   blocks (and only zeros after them);
3. ``member``: exactly the four members above, each once, the three small ones under 8 KiB (OpenBao reads at
   most that);
4. ``SHA256SUMS``: it lists meta.json and state.bin, nothing else, and their sha256 match;
5. ``meta.json``: a JSON object with integer ``Index``, ``Term`` and ``Size``, ``Size`` being state.bin's length;
6. ``manifest`` (when one is given, or a ``<file>.json`` sidecar is beside the file): the file's size and sha256,
   and ``Index``/``Term`` equal the manifest's.

What no offline check without the manifest can see: the 6 bytes of the gzip header no checksum covers (MTIME,
XFL, OS) and the content of ``SHA256SUMS.sealed``. The manifest's sha256 covers every byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vaultmesh.errors import SnapshotInvalid

MANIFEST_FORMAT = 1
"""The newest manifest format this vaultmesh writes and reads."""

CHUNK = 64 * 1024
"""Bytes read (and inflated) at a time: the memory a verify needs, whatever the snapshot's size."""

SMALL_LIMIT = 8192
"""OpenBao reads meta.json and the SHA256SUMS files with ``copyEOFOrN(.., 8192)`` and refuses one that long."""

MEMBERS = ("meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed")
SUMMED = ("meta.json", "state.bin")
"""The members ``SHA256SUMS`` lists (OpenBao's ``hashList``)."""

BLOCK = 512
HINT = ("the file is damaged or is not an OpenBao Raft snapshot: do not restore it; use another copy, or take a "
        "new one with `vaultmesh snapshot save`")


# -- the manifest ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Canary:
    """What ``save`` wrote just before the snapshot: a random nonce (not a secret) at
    ``vaultmesh-canary/data/canary``, its KV version, and the nonce encrypted by ``vaultmesh-transit/keys/canary``.
    A restore that brings these back proves the data and the transit key came back."""

    value: str
    version: int
    ciphertext: str

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "version": self.version, "ciphertext": self.ciphertext}


@dataclass(frozen=True)
class Manifest:
    """The sidecar ``<file>.snap.json`` of a snapshot: where it comes from and how to tell it is whole.

    - ``mesh``: the mesh's id (sha256 of its CA's public key: unique per mesh, kept for its life)
    - ``name``: the mesh's name (``spec.name``); ``index``/``term``: from the snapshot's meta.json
    - ``version``: the OpenBao version that served it
    - ``seal``: the seal type; ``key_id``: the seal's key id (static: ``k1``); ``key_fingerprint``:
      ``sha256:<hex>`` of the static key file (transit: of the seal node's own key file), so restore can tell a
      wrong key without trying; None where nothing can be said (Shamir, KMS)
    - ``time`` (Unix seconds) and ``time_iso``: when it was taken; ``size`` and ``sha256`` of the .snap file
    - ``reason``: ``manual``, ``schedule``, ...; ``canary``: see ``Canary`` (None on a mesh made before it)
    - ``path``: where the .snap file is; not written to the sidecar (it is the sidecar's name less ``.json``)
    """

    mesh: str
    name: str
    index: int
    term: int
    version: str
    seal: str
    key_id: str | None
    key_fingerprint: str | None
    time: float
    time_iso: str
    size: int
    sha256: str
    reason: str
    canary: Canary | None = None
    path: Path | None = None
    format: int = MANIFEST_FORMAT

    def to_json(self) -> dict[str, Any]:
        """The sidecar's JSON document (``path`` left out)."""
        return {"format": self.format, "mesh": self.mesh, "name": self.name, "index": self.index,
                "term": self.term, "version": self.version, "seal": self.seal, "key_id": self.key_id,
                "key_fingerprint": self.key_fingerprint, "time": self.time, "time_iso": self.time_iso,
                "size": self.size, "sha256": self.sha256, "reason": self.reason,
                "canary": self.canary.to_json() if self.canary else None}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | str | bytes, *, path: Path | None = None,
                  source: str = "manifest") -> Manifest:
        """Read a sidecar document (a mapping, or its JSON text); ``SnapshotInvalid`` (check ``manifest``)
        naming the first wrong field."""
        if isinstance(doc, (str, bytes)):
            try:
                doc = json.loads(doc)
            except ValueError as err:
                raise _invalid(source, "manifest", f"not JSON ({err})") from None
        if not isinstance(doc, Mapping):
            raise _invalid(source, "manifest", "not a JSON object")
        fmt = _field(doc, "format", int, source)
        if fmt > MANIFEST_FORMAT:
            raise SnapshotInvalid(f"{source}: manifest: format {fmt} was written by a newer vaultmesh (this one "
                                  f"reads up to {MANIFEST_FORMAT})", check="manifest", hint="upgrade vaultmesh")
        canary = doc.get("canary")
        if canary is not None:
            if not isinstance(canary, Mapping):
                raise _invalid(source, "manifest", "canary: not an object or null")
            canary = Canary(_field(canary, "value", str, source, "canary."),
                            _field(canary, "version", int, source, "canary."),
                            _field(canary, "ciphertext", str, source, "canary."))
        sha = _field(doc, "sha256", str, source)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise _invalid(source, "manifest", f"sha256: {sha[:80]!r} is not 64 hex digits")
        return cls(mesh=_field(doc, "mesh", str, source), name=_field(doc, "name", str, source),
                   index=_field(doc, "index", int, source), term=_field(doc, "term", int, source),
                   version=_field(doc, "version", str, source), seal=_field(doc, "seal", str, source),
                   key_id=_field(doc, "key_id", str, source, optional=True),
                   key_fingerprint=_field(doc, "key_fingerprint", str, source, optional=True),
                   time=float(_field(doc, "time", float, source)), time_iso=_field(doc, "time_iso", str, source),
                   size=_field(doc, "size", int, source), sha256=sha, reason=_field(doc, "reason", str, source),
                   canary=canary, path=path, format=fmt)


def _field(doc: Mapping[str, Any], key: str, kind: type, source: str, prefix: str = "", *,
           optional: bool = False) -> Any:
    if key not in doc:
        raise _invalid(source, "manifest", f"{prefix}{key}: missing")
    value = doc[key]
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
    if not ok:
        wanted = {float: "a number", int: "an integer", str: "a string"}[kind]
        raise _invalid(source, "manifest", f"{prefix}{key}: {str(value)[:80]!r} is not {wanted}")
    return value


def sidecar_of(snapshot: Path) -> Path:
    """``<file>.snap`` -> ``<file>.snap.json``."""
    return snapshot.with_name(snapshot.name + ".json")


def read_manifest(path: Path) -> Manifest:
    """The manifest of a snapshot: ``path`` is the sidecar (``.json``) or the snapshot beside it. Raises
    ``SnapshotInvalid`` (check ``manifest``) when it is missing or wrong."""
    sidecar = path if path.name.endswith(".json") else sidecar_of(path)
    snapshot = sidecar.with_name(sidecar.name.removesuffix(".json"))
    try:
        text = sidecar.read_bytes()
    except OSError as err:
        raise _invalid(str(sidecar), "manifest", f"cannot be read ({err.strerror or err})") from None
    return Manifest.from_json(text, path=snapshot, source=str(sidecar))


# -- verification --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SnapshotMeta:
    """What a verified snapshot says of itself: Raft ``index`` and ``term``, the file's ``size`` and ``sha256``,
    state.bin's size, meta.json's ``Version`` and ``ID``, the node ids of its Raft configuration, and the members
    in archive order."""

    index: int
    term: int
    size: int
    sha256: str
    state_size: int
    raft_version: int
    id: str
    servers: tuple[str, ...]
    members: tuple[str, ...]


def verify_bytes(data: bytes, *, manifest: Manifest | None = None, source: str = "snapshot") -> SnapshotMeta:
    """Check a snapshot held in memory (see the module's list); ``SnapshotInvalid`` at the first failed check."""
    return verify_stream(io.BytesIO(data), manifest=manifest, source=source)


def verify_file(path: Path) -> SnapshotMeta:
    """Check a snapshot file, streaming, against its sidecar manifest when there is one."""
    sidecar = sidecar_of(path)
    manifest = read_manifest(path) if sidecar.exists() else None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; open() errors are the user's file, named
    except OSError as err:
        raise _invalid(str(path), "file", f"cannot be read ({err.strerror or err})",
                       hint="name a snapshot file (`vaultmesh snapshot list` shows them)") from None
    with f:
        return verify_stream(f, manifest=manifest, source=str(path))


def verify_stream(src: BinaryIO, *, manifest: Manifest | None = None, source: str = "snapshot") -> SnapshotMeta:
    """Check the snapshot read from ``src`` to its end (see the module's list)."""
    stream = _Inflated(src, source)
    found = _read_archive(stream, source)
    stream.finish()
    meta = _check_members(found, source)
    if manifest is not None:
        _check_manifest(manifest, meta, stream, source)
    return SnapshotMeta(index=meta["Index"], term=meta["Term"], size=stream.size,
                        sha256=stream.sha.hexdigest(), state_size=found.sizes["state.bin"],
                        raft_version=meta["Version"], id=meta["ID"], servers=meta["servers"],
                        members=tuple(found.order))


def _invalid(source: str, check: str, detail: str, *, hint: str | None = HINT) -> SnapshotInvalid:
    return SnapshotInvalid(f"{source}: {check}: {detail}", check=check, hint=hint)


class _Inflated:
    """The file read in ``CHUNK`` pieces: its sha256 and size, and its gzip stream inflated on demand, at most
    ``CHUNK`` bytes at a time (a small file that inflates to gigabytes costs no memory either)."""

    def __init__(self, src: BinaryIO, source: str) -> None:
        self.src, self.source = src, source
        self.sha = hashlib.sha256()
        self.size = 0
        """Bytes of the file read so far."""
        self.inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip only, CRC-32 and length checked
        self.pending = b""
        self.buf = bytearray()
        self.offset = 0
        """Offset in the inflated (tar) stream of the first byte of ``buf``."""
        self.end_at: int | None = None
        """Where the gzip member ended in the file, once it has."""
        self.after = 0
        """Bytes that followed the gzip member."""

    def _fill(self) -> bool:
        """Inflate some more into ``buf``; False once the gzip stream has ended."""
        if self.end_at is not None:
            return False
        if not self.pending:
            chunk = self.src.read(CHUNK)
            if not chunk:
                # inflate may still hold output it had no room for (a match cut by the last call's limit)
                out = self.inflate.decompress(b"", CHUNK)
                if not out and not self.inflate.eof:
                    raise _invalid(self.source, "gzip", f"the stream stops early, at byte {self.size} of the file "
                                                        "(it is truncated)")
                self._took(out)
                return True
            self.sha.update(chunk)
            self.size += len(chunk)
            self.pending = chunk
        start = self.size - len(self.pending)
        try:
            out = self.inflate.decompress(self.pending, CHUNK)
        except zlib.error as err:
            words = str(err).rpartition(": ")[2] or str(err)
            what = "not a gzip stream" if start == 0 and "header" in words else "the stream is corrupt"
            raise _invalid(self.source, "gzip", f"{what} ({words}) in bytes {start}..{self.size} of the file") \
                from None
        self.pending = self.inflate.unconsumed_tail
        self._took(out)
        return True

    def _took(self, out: bytes) -> None:
        if self.inflate.eof:
            self.after = len(self.inflate.unused_data)
            self.end_at = self.size - self.after
            self.pending = b""
        self.buf += out

    def read(self, n: int, what: str) -> bytes:
        """Exactly ``n`` inflated bytes; ``SnapshotInvalid`` (check ``tar``) when the archive ends first."""
        while len(self.buf) < n:
            if not self._fill():
                end = self.offset + len(self.buf)
                if what == "a header" and not self.buf:
                    raise _invalid(self.source, "tar", f"the archive stops at tar offset {end} without its "
                                                       "end-of-archive blocks (it is truncated)")
                raise _invalid(self.source, "tar", f"the archive ends inside {what}, at tar offset {end}")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        self.offset += n
        return out

    def finish(self) -> None:
        """Past the archive's end: only zeros may be left in the tar stream, and nothing after the gzip member."""
        while True:
            if self.buf.strip(b"\0"):
                first = next(i for i, b in enumerate(self.buf) if b)
                raise _invalid(self.source, "tar", f"data after the end of the archive, at tar offset "
                                                   f"{self.offset + first}")
            self.offset += len(self.buf)
            self.buf.clear()
            if not self._fill():
                break
        while chunk := self.src.read(CHUNK):
            self.sha.update(chunk)
            self.size += len(chunk)
            self.after += len(chunk)
        if self.after:
            raise _invalid(self.source, "gzip", f"{self.after} bytes follow the end of the stream at byte "
                                                f"{self.end_at} of the file")


@dataclass
class _Found:
    order: list[str]
    sizes: dict[str, int]
    digests: dict[str, str]
    small: dict[str, bytes]


_OCTAL = re.compile(rb"[ \0]*([0-7]*)[ \0]*")


def _number(field: bytes, name: str, at: int, source: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256 (sizes of 8 GiB and more)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    m = _OCTAL.fullmatch(field)
    if m is None or not m.group(1):
        raise _invalid(source, "tar", f"the header at tar offset {at} has a bad {name} field {field!r}")
    return int(m.group(1), 8)


def _header_ok(block: bytes, at: int, source: str) -> None:
    stored = _number(block[148:156], "checksum", at, source)
    blanked = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blanked)
    signed = sum(b - 256 if b > 127 else b for b in blanked)
    if stored not in (unsigned, signed):
        raise _invalid(source, "tar", f"the header at tar offset {at} fails its checksum (it is corrupt)")
    if block[257:263] not in (b"ustar\x00", b"ustar "):
        raise _invalid(source, "tar", f"the header at tar offset {at} is not a ustar header")


def _pax(data: bytes, at: int, source: str) -> dict[str, str]:
    """The records of a PAX extended header (``<len> <key>=<value>\\n``)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        m = re.match(rb"(\d+) ", data[pos:pos + 21])
        if m is None or int(m.group(1)) < len(m.group(0)) + 2 or pos + int(m.group(1)) > len(data):
            raise _invalid(source, "tar", f"the PAX header at tar offset {at} has a bad record at byte {pos}")
        record = data[pos + len(m.group(0)):pos + int(m.group(1))]
        key, sep, value = record.partition(b"=")
        if not sep or not record.endswith(b"\n"):
            raise _invalid(source, "tar", f"the PAX header at tar offset {at} has a bad record at byte {pos}")
        out[key.decode(errors="replace")] = value[:-1].decode(errors="replace")
        pos += int(m.group(1))
    return out


def _read_archive(stream: _Inflated, source: str) -> _Found:
    found = _Found([], {}, {}, {})
    pax: dict[str, str] = {}
    while True:
        at = stream.offset
        block = stream.read(BLOCK, "a header")
        if not block.strip(b"\0"):
            if pax:
                raise _invalid(source, "tar", f"a PAX header at tar offset {at - BLOCK} describes no member")
            if stream.read(BLOCK, "the end-of-archive blocks").strip(b"\0"):
                raise _invalid(source, "tar", f"a lone zero block at tar offset {at}: the archive is corrupt")
            return found
        _header_ok(block, at, source)
        kind = block[156:157]
        size = _number(block[124:136], "size", at, source)
        if kind in (b"x", b"g"):
            if size >= SMALL_LIMIT:
                raise _invalid(source, "tar", f"the PAX header at tar offset {at} is {size} bytes")
            data = stream.read(size, f"the PAX header at tar offset {at}")
            _padding(stream, size, f"the PAX header at tar offset {at}", source)
            if kind == b"x":
                pax = _pax(data, at, source)
            continue
        name = block[:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0] if block[257:263] == b"ustar\x00" else b""
        try:
            text = pax.get("path") or ((prefix + b"/" if prefix else b"") + name).decode()
            size = int(pax["size"]) if "size" in pax else size
        except (UnicodeDecodeError, ValueError):
            raise _invalid(source, "tar", f"the header at tar offset {at} has a bad name or size") from None
        pax = {}
        if kind not in (b"0", b"\0"):
            raise _invalid(source, "member", f"{text!r} at tar offset {at} is not a regular file (type {kind!r})")
        if text not in MEMBERS:
            raise _invalid(source, "member", f"unexpected member {text!r} at tar offset {at} (a snapshot holds "
                                             f"{', '.join(MEMBERS)})")
        if text in found.sizes:
            raise _invalid(source, "member", f"{text} appears twice (again at tar offset {at})")
        if text != "state.bin" and size >= SMALL_LIMIT:
            raise _invalid(source, "member", f"{text} at tar offset {at} is {size} bytes; OpenBao reads at most "
                                             f"{SMALL_LIMIT - 1}")
        digest = hashlib.sha256()
        left, keep = size, bytearray()
        while left:
            piece = stream.read(min(left, CHUNK), f"{text} (tar offset {at})")
            digest.update(piece)
            if text != "state.bin":
                keep += piece
            left -= len(piece)
        _padding(stream, size, text, source)
        found.order.append(text)
        found.sizes[text] = size
        found.digests[text] = digest.hexdigest()
        if text != "state.bin":
            found.small[text] = bytes(keep)


def _padding(stream: _Inflated, size: int, what: str, source: str) -> None:
    pad = -size % BLOCK
    if pad:
        at = stream.offset
        if stream.read(pad, f"the padding after {what}").strip(b"\0"):
            raise _invalid(source, "tar", f"non-zero padding after {what}, at tar offset {at}")


_SUM_LINE = re.compile(r"([0-9a-fA-F]{64})  (\S+)")


def _check_members(found: _Found, source: str) -> dict[str, Any]:
    missing = [m for m in MEMBERS if m not in found.sizes]
    if missing:
        raise _invalid(source, "member", f"{', '.join(missing)} missing (the archive holds "
                                         f"{', '.join(found.order) or 'nothing'})")
    try:
        lines = found.small["SHA256SUMS"].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise _invalid(source, "SHA256SUMS", "not ASCII text") from None
    listed: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        m = _SUM_LINE.fullmatch(line)
        if m is None:
            raise _invalid(source, "SHA256SUMS", f"line {n} is not '<sha256>  <name>': {line[:100]!r}")
        name = m.group(2)
        if name not in SUMMED:
            raise _invalid(source, "SHA256SUMS", f"line {n} lists {name!r}, which is not summed")
        if name in listed:
            raise _invalid(source, "SHA256SUMS", f"line {n} lists {name} a second time")
        listed[name] = m.group(1).lower()
    for name in SUMMED:
        if name not in listed:
            raise _invalid(source, "SHA256SUMS", f"{name} is not listed")
        if listed[name] != found.digests[name]:
            raise _invalid(source, "SHA256SUMS", f"{name}'s sha256 is {found.digests[name]}, SHA256SUMS says "
                                                 f"{listed[name]}: {name} is corrupt")
    if found.sizes["SHA256SUMS.sealed"] == 0:
        raise _invalid(source, "member", "SHA256SUMS.sealed is empty")
    try:
        meta = json.loads(found.small["meta.json"])
    except ValueError as err:
        raise _invalid(source, "meta.json", f"not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise _invalid(source, "meta.json", "not a JSON object")
    for key in ("Index", "Term", "Size", "Version"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _invalid(source, "meta.json", f"{key} is {value!r}, not a whole number")
    if meta["Size"] != found.sizes["state.bin"]:
        raise _invalid(source, "meta.json", f"Size is {meta['Size']} but state.bin holds {found.sizes['state.bin']} "
                                            "bytes")
    servers = ((meta.get("Configuration") or {}).get("Servers") or []) if isinstance(
        meta.get("Configuration"), (dict, type(None))) else []
    ids = tuple(str(s.get("ID")) for s in servers if isinstance(s, dict))
    return {"Index": meta["Index"], "Term": meta["Term"], "Version": meta["Version"],
            "ID": str(meta.get("ID") or ""), "servers": ids}


def _check_manifest(manifest: Manifest, meta: Mapping[str, Any], stream: _Inflated, source: str) -> None:
    if stream.size != manifest.size:
        raise _invalid(source, "manifest", f"the file is {stream.size} bytes, its manifest says {manifest.size}")
    digest = stream.sha.hexdigest()
    if digest != manifest.sha256:
        raise _invalid(source, "manifest", f"the file's sha256 is {digest}, its manifest says {manifest.sha256}")
    for key, mine in (("Index", manifest.index), ("Term", manifest.term)):
        if meta[key] != mine:
            raise _invalid(source, "manifest", f"meta.json's {key} is {meta[key]}, its manifest says {mine}")


# -- showing -------------------------------------------------------------------------------------------------

LIST_COLUMNS = ("time", "age", "index", "size", "sha256", "path")


def size_text(n: int) -> str:
    """``26137`` -> ``25.5 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def age_text(seconds: float) -> str:
    """``90`` -> ``1m``, ``7300`` -> ``2h``, ``200000`` -> ``2d``; a future time (a clock moved) is ``0s``."""
    s = max(0, int(seconds))
    for unit, width in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= width:
            return f"{s // width}{unit}"
    return f"{s}s"


def list_rows(manifests: list[Manifest], now: float) -> list[tuple[str, ...]]:
    """The rows of ``vaultmesh snapshot list`` (``LIST_COLUMNS``), in the order given."""
    return [(x.time_iso, age_text(now - x.time), str(x.index), size_text(x.size), x.sha256[:12], str(x.path))
            for x in manifests]
