"""Offline snapshot verification: a real OpenBao 2.7.2 snapshot and variants pass, every corruption is refused.

``data/snapshot/openbao-2.7.2.snap`` is a real snapshot of a throwaway 3-node mesh (static seal, destroyed with its
key: the storage in it is encrypted by a barrier nobody can open), taken with ``GET sys/storage/raft/snapshot``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path

import pytest

from vaultmesh.errors import SnapshotInvalid, VaultmeshError
from vaultmesh.snapshot.archive import (
    CHUNK,
    Canary,
    Manifest,
    read_manifest,
    sidecar_of,
    verify_bytes,
    verify_file,
)

REAL = (Path(__file__).parent / "data" / "snapshot" / "openbao-2.7.2.snap").read_bytes()


def members_of(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def sums(members: dict[str, bytes], order: tuple[str, ...] = ("meta.json", "state.bin")) -> bytes:
    return "".join(f"{hashlib.sha256(members[n]).hexdigest()}  {n}\n" for n in order).encode()


def build(members: list[tuple[str, bytes]], *, fmt: int = tarfile.USTAR_FORMAT, level: int = 6,
          kind: bytes = tarfile.REGTYPE) -> bytes:
    """A snapshot-shaped gzip'd tar of ``members`` in this order (Python's tarfile, padded to its 10 KiB record)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.type = len(data), 0o600, 1_796_246_760, kind
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=level, mtime=0)


def snapshot_of(members: dict[str, bytes], *, order: tuple[str, ...] = ("meta.json", "state.bin", "SHA256SUMS",
                                                                         "SHA256SUMS.sealed"), **kw: object) -> bytes:
    members = dict(members)
    members.setdefault("SHA256SUMS", sums(members))
    return build([(n, members[n]) for n in order], **kw)  # type: ignore[arg-type]


def with_meta(**changes: object) -> dict[str, bytes]:
    """The real snapshot's members with meta.json changed and SHA256SUMS recomputed to match."""
    members = members_of(REAL)
    meta = json.loads(members["meta.json"])
    meta.update(changes)
    members["meta.json"] = json.dumps(meta).encode() + b"\n"
    del members["SHA256SUMS"]
    return members


def manifest_for(data: bytes, **changes: object) -> Manifest:
    meta = verify_bytes(data)
    fields: dict[str, object] = dict(mesh="m" * 64, name="vaultmesh", index=meta.index, term=meta.term,
                                     version="2.7.2", seal="static", key_id="k1", key_fingerprint=None, time=1.0,
                                     time_iso="1970-01-01T00:00:01+00:00", size=len(data),
                                     sha256=hashlib.sha256(data).hexdigest(), reason="test")
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


def refusal(data: bytes, **kw: object) -> SnapshotInvalid:
    with pytest.raises(SnapshotInvalid) as info:
        verify_bytes(data, **kw)  # type: ignore[arg-type]
    return info.value


# -- what passes -------------------------------------------------------------------------------------------

def test_a_real_openbao_snapshot_verifies_and_says_what_it_holds() -> None:
    meta = verify_bytes(REAL)
    assert (meta.index, meta.term, meta.raft_version, meta.id) == (82, 3, 1, "bolt-snapshot")
    assert meta.servers == ("node-1", "node-2", "node-3")
    assert meta.members == ("meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed")
    assert (meta.size, meta.sha256) == (len(REAL), hashlib.sha256(REAL).hexdigest())
    assert meta.state_size == 16072


def _big_state() -> dict[str, bytes]:
    members = with_meta()
    state = random.Random(7).randbytes(3 * CHUNK + 123) + bytes(5 * CHUNK)  # crosses many read boundaries
    members["state.bin"] = state
    meta = json.loads(members["meta.json"])
    meta["Size"] = len(state)
    members["meta.json"] = json.dumps(meta).encode()
    return members


VARIANTS = {
    "recompressed, level 1": lambda: gzip.compress(gzip.decompress(REAL), compresslevel=1),
    "recompressed, level 9, a file name and a time in the gzip header": lambda: _named_gzip(gzip.decompress(REAL)),
    "written by tarfile (ustar, 10 KiB records)": lambda: snapshot_of(members_of(REAL)),
    "GNU tar headers": lambda: snapshot_of(members_of(REAL), fmt=tarfile.GNU_FORMAT),
    "PAX tar headers": lambda: snapshot_of(members_of(REAL), fmt=tarfile.PAX_FORMAT),
    "SHA256SUMS first, sealed second": lambda: snapshot_of(
        members_of(REAL), order=("SHA256SUMS", "SHA256SUMS.sealed", "state.bin", "meta.json")),
    "SHA256SUMS lines in the other order (Go's map order)": lambda: snapshot_of(
        {**with_meta(), "SHA256SUMS": sums(with_meta(), ("state.bin", "meta.json"))}),
    "a 3 MB state.bin": lambda: snapshot_of(_big_state()),
}


def _named_gzip(tar: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile("raft.snap", "wb", compresslevel=9, fileobj=out, mtime=1_796_246_760) as f:
        f.write(tar)
    return out.getvalue()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_valid_variants_pass(variant: str) -> None:
    data = VARIANTS[variant]()
    meta = verify_bytes(data)
    assert meta.index == 82
    verify_bytes(data, manifest=manifest_for(data))


def test_memory_stays_bounded_for_a_large_snapshot() -> None:
    """32 MB of state inflated from a small file: the verify holds a few chunks, never the member or the file."""
    size = 32 * 1024 * 1024
    members = with_meta(Size=size)
    digest = hashlib.sha256()
    for _ in range(size // CHUNK):
        digest.update(bytes(CHUNK))
    members["SHA256SUMS"] = (f"{hashlib.sha256(members['meta.json']).hexdigest()}  meta.json\n"
                             f"{digest.hexdigest()}  state.bin\n").encode()
    deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = io.BytesIO()

    def add(name: str, data: bytes | None, length: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = length, 0o600
        out.write(deflate.compress(info.tobuf(tarfile.USTAR_FORMAT)))
        if data is None:
            for _ in range(length // CHUNK):
                out.write(deflate.compress(bytes(CHUNK)))
        else:
            out.write(deflate.compress(data))
        out.write(deflate.compress(bytes(-length % 512)))

    add("meta.json", members["meta.json"], len(members["meta.json"]))
    add("state.bin", None, size)
    add("SHA256SUMS", members["SHA256SUMS"], len(members["SHA256SUMS"]))
    add("SHA256SUMS.sealed", members["SHA256SUMS.sealed"], len(members["SHA256SUMS.sealed"]))
    out.write(deflate.compress(bytes(1024)) + deflate.flush())
    data = out.getvalue()
    assert len(data) < size // 100
    tracemalloc.start()
    try:
        meta = verify_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert meta.state_size == size
    assert peak < 8 * CHUNK + len(data)  # the input itself is held by the caller here, not by the verify


# -- the fuzz: every corruption refused ---------------------------------------------------------------------

def corrupt(data: bytes, rng: random.Random) -> tuple[bytes, str, int]:
    """One random truncation, bit flip or insertion of 1-3 bytes: (bytes, kind, offset)."""
    kind = rng.choice(("truncate", "flip", "insert"))
    if kind == "truncate":
        at = rng.randrange(len(data))
        return data[:at], kind, at
    if kind == "flip":
        at = rng.randrange(len(data))
        b = bytearray(data)
        b[at] ^= 1 << rng.randrange(8)
        return bytes(b), kind, at
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 3)) + data[at:], kind, at


GZIP_UNCHECKED = range(4, 10)
"""MTIME, XFL and OS of the gzip header: no checksum covers them (only the manifest's sha256 does)."""


def test_a_thousand_corruptions_of_the_file_are_all_refused() -> None:
    rng = random.Random(20261202)
    manifest = manifest_for(REAL)
    checks: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    passed_without_manifest = []
    for _ in range(1000):
        bad, kind, at = corrupt(REAL, rng)
        kinds[kind] += 1
        err = refusal(bad, manifest=manifest, source="x.snap")
        assert str(err).startswith(f"x.snap: {err.check}: "), err
        checks[err.check] += 1
        try:  # the structure alone: only the header bytes no checksum covers may pass
            verify_bytes(bad)
            passed_without_manifest.append((kind, at))
        except SnapshotInvalid:
            pass
    assert all(kind == "flip" and at in GZIP_UNCHECKED for kind, at in passed_without_manifest)
    assert min(kinds.values()) > 250
    assert set(checks) <= {"gzip", "tar", "manifest"}


def test_a_thousand_corruptions_inside_a_valid_gzip_stream_are_refused_by_the_archive_checks() -> None:
    """Corrupt the tar, then gzip it again (CRC and length valid): the tar, member, SHA256SUMS and meta.json
    checks must refuse it. The one blind spot is SHA256SUMS.sealed's content (only the seal can open it)."""
    tar = gzip.decompress(REAL)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        sealed = t.getmember("SHA256SUMS.sealed")
    blind = range(sealed.offset_data, sealed.offset_data + sealed.size)
    rng = random.Random(7)
    checks: Counter[str] = Counter()
    for _ in range(1000):
        bad, kind, at = corrupt(tar, rng)
        data = gzip.compress(bad, compresslevel=1, mtime=0)
        if kind == "flip" and at in blind:
            verify_bytes(data)  # documented: undetectable offline; the manifest's sha256 catches it
            verify_bytes(data, manifest=manifest_for(data))
            with pytest.raises(SnapshotInvalid):
                verify_bytes(data, manifest=manifest_for(REAL))
            continue
        checks[refusal(data).check] += 1
    assert {"tar", "SHA256SUMS"} <= set(checks)
    assert sum(checks.values()) > 950


# -- each check, named, with where --------------------------------------------------------------------------

def test_a_truncated_file_names_the_byte_where_it_stops() -> None:
    err = refusal(REAL[:20000])
    assert err.check == "gzip" and "stops early, at byte 20000" in str(err)


def test_bytes_after_the_gzip_stream_are_refused() -> None:
    err = refusal(REAL + b"\0")
    assert err.check == "gzip" and f"1 bytes follow the end of the stream at byte {len(REAL)}" in str(err)


def test_a_file_that_is_not_gzip_says_so() -> None:
    err = refusal(gzip.decompress(REAL))
    assert err.check == "gzip" and "not a gzip stream" in str(err)


def test_a_flipped_byte_in_the_compressed_data_is_refused_with_its_place() -> None:
    bad = bytearray(REAL)
    bad[5000] ^= 0x10
    err = refusal(bytes(bad))
    assert err.check == "gzip" and "bytes 0..21017 of the file" in str(err)


def test_a_missing_member_is_named() -> None:
    members = members_of(REAL)
    err = refusal(build([(n, members[n]) for n in ("meta.json", "state.bin", "SHA256SUMS")]))
    assert err.check == "member" and "SHA256SUMS.sealed missing" in str(err)


def test_an_unexpected_member_is_named_with_its_offset() -> None:
    members = members_of(REAL)
    err = refusal(build([*members.items(), ("evil.sh", b"#!/bin/sh\n")]))
    assert err.check == "member" and "unexpected member 'evil.sh' at tar offset" in str(err)


def test_a_member_twice_is_refused() -> None:
    members = members_of(REAL)
    err = refusal(build([*members.items(), ("state.bin", members["state.bin"])]))
    assert err.check == "member" and "state.bin appears twice" in str(err)


def test_a_member_that_is_not_a_regular_file_is_refused() -> None:
    err = refusal(build([("meta.json", b"")], kind=tarfile.SYMTYPE))
    assert err.check == "member" and "not a regular file" in str(err)


def test_a_small_member_of_8_kib_is_refused_as_openbao_would() -> None:
    members = with_meta(Padding="x" * 8192)
    err = refusal(snapshot_of(members))
    assert err.check == "member" and "meta.json at tar offset 0 is" in str(err)


def test_a_state_that_does_not_match_sha256sums_is_named() -> None:
    members = members_of(REAL)
    members["state.bin"] = members["state.bin"][:-1] + b"X"
    err = refusal(build(list(members.items())))
    assert err.check == "SHA256SUMS" and "state.bin's sha256 is" in str(err)


@pytest.mark.parametrize(("text", "words"), [
    (b"", "meta.json is not listed"),
    (b"nonsense\n", "line 1 is not '<sha256>  <name>'"),
    (b"%s  other.bin\n" % (b"0" * 64), "lists 'other.bin'"),
])
def test_a_wrong_sha256sums_is_named(text: bytes, words: str) -> None:
    members = members_of(REAL)
    members["SHA256SUMS"] = text
    err = refusal(build(list(members.items())))
    assert err.check == "SHA256SUMS" and words in str(err)


@pytest.mark.parametrize(("changes", "words"), [
    ({"Index": "82"}, "Index is '82', not a whole number"),
    ({"Term": None}, "Term is None"),
    ({"Index": True}, "Index is True"),
    ({"Size": 1}, "Size is 1 but state.bin holds 16072 bytes"),
])
def test_a_wrong_meta_json_is_named(changes: dict[str, object], words: str) -> None:
    err = refusal(snapshot_of(with_meta(**changes)))
    assert err.check == "meta.json" and words in str(err)


def test_meta_json_that_is_not_json_is_named() -> None:
    members = members_of(REAL)
    members["meta.json"] = b"{not json"
    del members["SHA256SUMS"]
    err = refusal(snapshot_of(members))
    assert err.check == "meta.json" and "not JSON" in str(err)


def test_an_archive_without_its_end_blocks_is_refused() -> None:
    tar = gzip.decompress(REAL)
    err = refusal(gzip.compress(tar[:-1024]))
    assert err.check == "tar" and f"stops at tar offset {len(tar) - 1024} without its end-of-archive" in str(err)


def test_data_after_the_end_of_the_archive_is_refused() -> None:
    tar = gzip.decompress(REAL) + b"\0" * 511 + b"x"
    err = refusal(gzip.compress(tar))
    assert err.check == "tar" and "data after the end of the archive, at tar offset 21503" in str(err)


def test_a_corrupt_header_names_its_offset() -> None:
    tar = bytearray(gzip.decompress(REAL))
    tar[1024 + 10] ^= 1  # state.bin's header
    err = refusal(gzip.compress(bytes(tar)))
    assert err.check == "tar" and "the header at tar offset 1024 fails its checksum" in str(err)


def test_non_zero_padding_is_refused() -> None:
    tar = bytearray(gzip.decompress(REAL))
    tar[512 + 306] = 1  # after meta.json's 306 bytes
    err = refusal(gzip.compress(bytes(tar)))
    assert err.check == "tar" and "non-zero padding after meta.json, at tar offset 818" in str(err)


@pytest.mark.parametrize(("changes", "words"), [
    ({"size": 1}, f"the file is {len(REAL)} bytes, its manifest says 1"),
    ({"sha256": "0" * 64}, "its manifest says 0000"),
    ({"index": 81}, "meta.json's Index is 82, its manifest says 81"),
    ({"term": 4}, "meta.json's Term is 3, its manifest says 4"),
])
def test_a_manifest_that_does_not_match_is_named(changes: dict[str, object], words: str) -> None:
    err = refusal(REAL, manifest=manifest_for(REAL, **changes))
    assert err.check == "manifest" and words in str(err)


def test_refusals_are_vaultmesh_errors_with_a_hint() -> None:
    err = refusal(REAL[:10])
    assert isinstance(err, VaultmeshError) and err.exit_code == 1
    assert err.hint and "do not restore it" in err.hint


# -- the manifest and its file ------------------------------------------------------------------------------

def test_a_manifest_round_trips_through_its_json() -> None:
    manifest = manifest_for(REAL, canary=Canary("ab" * 16, 3, "vault:v1:xyz"))
    doc = json.loads(json.dumps(manifest.to_json()))
    assert "path" not in doc and doc["canary"] == {"value": "ab" * 16, "version": 3, "ciphertext": "vault:v1:xyz"}
    assert Manifest.from_json(doc) == manifest
    assert Manifest.from_json(json.dumps(doc)) == manifest
    assert Manifest.from_json({**doc, "canary": None}).canary is None


@pytest.mark.parametrize(("changes", "words"), [
    ({"index": "82"}, "index: '82' is not an integer"),
    ({"sha256": "xyz"}, "sha256: 'xyz' is not 64 hex digits"),
    ({"canary": {"value": "v", "version": 1}}, "canary.ciphertext: missing"),
    ({"time": True}, "time: 'True' is not a number"),
])
def test_a_wrong_manifest_is_refused_naming_the_field(changes: dict[str, object], words: str) -> None:
    doc = {**manifest_for(REAL).to_json(), **changes}
    with pytest.raises(SnapshotInvalid) as info:
        Manifest.from_json(doc)
    assert info.value.check == "manifest" and words in str(info.value)


def test_a_manifest_from_a_newer_vaultmesh_is_refused() -> None:
    with pytest.raises(SnapshotInvalid, match="format 2 was written by a newer vaultmesh"):
        Manifest.from_json({**manifest_for(REAL).to_json(), "format": 2})


def test_verify_file_checks_the_sidecar_when_there_is_one(tmp_path: Path) -> None:
    snap = tmp_path / "a.snap"
    snap.write_bytes(REAL)
    assert verify_file(snap).index == 82  # no sidecar: the structure only
    sidecar_of(snap).write_text(json.dumps(manifest_for(REAL).to_json()))
    assert verify_file(snap).index == 82
    assert read_manifest(snap).path == snap and read_manifest(sidecar_of(snap)).path == snap
    sidecar_of(snap).write_text(json.dumps(manifest_for(REAL, sha256="1" * 64).to_json()))
    with pytest.raises(SnapshotInvalid, match=f"^{snap}: manifest: the file's sha256"):
        verify_file(snap)
    sidecar_of(snap).write_text("{")
    with pytest.raises(SnapshotInvalid, match="manifest: not JSON"):
        verify_file(snap)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SnapshotInvalid, match=r"nope\.snap: file: cannot be read"):
        verify_file(tmp_path / "nope.snap")


def test_the_manifest_key_id_is_the_one_the_node_config_renders() -> None:
    from vaultmesh.layout import build_layout
    from vaultmesh.render.node import render_node_config
    from vaultmesh.snapshot.save import STATIC_KEY_ID
    from vaultmesh.spec.models import LifecycleSpec, zone_layout

    spec = LifecycleSpec()
    layout = build_layout("m", Path("/s"), zone_layout(spec), list(range(20000, 20010)), transit_seal=False)
    assert f'current_key_id = "{STATIC_KEY_ID}"' in render_node_config(spec, layout, layout.nodes[0],
                                                                         self_init=False)


# -- showing and the verify command -------------------------------------------------------------------------

def test_list_rows_show_time_age_index_size_sha_prefix_and_path() -> None:
    from vaultmesh.snapshot.archive import LIST_COLUMNS, list_rows

    manifest = manifest_for(REAL, time=1000.0, time_iso="1970-01-01T00:16:40+00:00", path=Path("/s/a.snap"))
    assert LIST_COLUMNS == ("time", "age", "index", "size", "sha256", "path")
    assert list_rows([manifest], 1000.0 + 7300) == [
        ("1970-01-01T00:16:40+00:00", "2h", "82", "20.5 KiB", manifest.sha256[:12], "/s/a.snap")]


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                         (100 * 1024 * 1024, "100.0 MiB")])
def test_sizes_are_shown_in_binary_units(n: int, text: str) -> None:
    from vaultmesh.snapshot.archive import size_text

    assert size_text(n) == text


@pytest.mark.parametrize(("seconds", "text"), [(-5, "0s"), (59, "59s"), (60, "1m"), (7300, "2h"),
                                               (200000, "2d")])
def test_ages_are_shown_in_their_largest_unit(seconds: float, text: str) -> None:
    from vaultmesh.snapshot.archive import age_text

    assert age_text(seconds) == text


def test_the_verify_command_needs_no_mesh(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vaultmesh.cli.main import cli

    good, bad = tmp_path / "good.snap", tmp_path / "bad.snap"
    good.write_bytes(REAL)
    bad.write_bytes(REAL[:-8])
    runner = CliRunner()
    ok = runner.invoke(cli, ["--dir", str(tmp_path / "no-mesh"), "snapshot", "verify", str(good)])
    assert ok.exit_code == 0 and ok.output.startswith(f"ok: {good}: index 82, term 3, {len(REAL)} bytes")
    refused = runner.invoke(cli, ["snapshot", "verify", str(bad)])
    assert refused.exit_code == 1 and "gzip: the stream stops early" in refused.output
    doc = json.loads(runner.invoke(cli, ["snapshot", "verify", "--json", str(good)]).stdout)
    assert doc["ok"] is True and doc["index"] == 82 and doc["manifest"] is False
    result = runner.invoke(cli, ["snapshot", "verify", "--json", str(bad)])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["check"] == "gzip"
