"""What a workload asks for: the secrets file (``secrets.yaml`` / ``.json``) and the ``--secret`` flags. Pure.

The file maps *targets* (environment variables, files) to *sources* (where OpenBao keeps the value)::

    env:
      API_TOKEN: {kv: secret/jobs/nightly, field: api_token}        # KV v2 field
      PGUSER: {db: database/creds/jobs-ro, field: username}        # dynamic credential...
      PGPASSWORD: {db: database/creds/jobs-ro, field: password}    # ...the same lease as PGUSER
      DATABASE_URL:
        db: database/creds/jobs-ro
        template: "postgresql://${username}:${password}@db.internal:5432/app"
      LEGACY: kv:secret/jobs/nightly#legacy                          # the compact form, as on the command line
    files:                                                           # relative to the private secrets dir
      api.json: {kv: secret/jobs/nightly}                            # no field: the whole secret as JSON
      tls/key.pem: {unwrap: file:/run/handoff/wrapped, field: key}   # a response-wrapped secret

Sources (exactly one per target):

- ``kv: <mount>/<path>``: a KV v2 secret (``GET <mount>/data/<path>``); ``mount:`` names a mount that has slashes
  in it, ``version:`` pins a version.
- ``db: <mount>/creds/<role>``: a dynamic database credential (a lease, renewed while the job runs).
- ``read: <path>``: any other secret read with GET (leased or not), e.g. ``aws/creds/deploy``.
- ``unwrap: env:<VAR> | file:<path>``: a response-wrapping token handed to the job, unwrapped once.

Targets naming the same source share one read, hence one lease: ``PGUSER`` and ``PGPASSWORD`` above are one
credential. ``field`` picks one field, ``template`` substitutes ``${field}`` (``$$`` is a literal ``$``); with
neither, the whole secret is delivered as JSON.

Compact form (``--secret NAME=SPEC`` / ``--secret-file PATH=SPEC``): ``kv:secret/jobs/nightly#api_token``,
``db:database/creds/jobs-ro#username``, ``read:aws/creds/deploy``, ``unwrap:file:/run/w#password``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from vaultmesh.errors import SpecError
from vaultmesh.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, dataclasses and pathlib stay off the path to run's login (values.py says why)
    from pathlib import Path
    from typing import Any, Literal

    SourceKind = Literal["kv", "db", "read", "unwrap"]
    TargetKind = Literal["env", "file"]

SOURCE_KINDS: tuple[SourceKind, ...] = ("kv", "db", "read", "unwrap")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH_PART = re.compile(r"^[A-Za-z0-9._@+=,:~-]+$")
_PLACEHOLDER = re.compile(r"\$(?:\{([^${}]+)\}|(\$))")
_TARGET_KEYS = frozenset({*SOURCE_KINDS, "field", "template", "version", "mount"})
RESERVED_ENV = frozenset({"VAULTMESH_SECRETS_DIR"})
"""Set by ``run`` itself for the child."""


class _Bad(Exception):
    """A problem in one entry; the boundary adds where it is (file, line, entry, flag)."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where


class Source(Value):
    """Where a value lives. ``key`` identifies it: targets with the same key share one read and one lease.

    ``path`` is, for kv, ``<mount>/<path>``; for db/read the logical path; for unwrap ``env:VAR`` or
    ``file:PATH``. ``mount`` (kv only) names the mount when it is not the first segment of ``path``.
    """

    __slots__ = ("kind", "path", "version", "mount")  # noqa: RUF023 - the order of the fields
    kind: SourceKind
    path: str
    version: int | None
    mount: str | None

    def __init__(self, kind: SourceKind, path: str, version: int | None = None, mount: str | None = None) -> None:
        self._set(kind=kind, path=path, version=version, mount=mount)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.path}" + (f"@{self.version}" if self.version is not None else "")

    @property
    def refetchable(self) -> bool:
        """A wrapping token is single-use: an unwrapped secret cannot be read again."""
        return self.kind != "unwrap"

    def api_path(self) -> str:
        """The path to GET (kv and read/db); for kv the ``data/`` segment is inserted after the mount."""
        if self.kind == "kv":
            mount = self.mount or self.path.split("/", 1)[0]
            rest = self.path[len(mount):].strip("/")
            return f"{mount}/data/{rest}"
        if self.kind == "unwrap":
            return "sys/wrapping/unwrap"
        return self.path


class Target(Value):
    """One delivered value: an environment variable or a file in the private secrets directory."""

    __slots__ = ("kind", "name", "source", "field", "template")  # noqa: RUF023 - the order of the fields
    kind: TargetKind
    name: str
    source: Source
    field: str | None
    template: str | None

    def __init__(self, kind: TargetKind, name: str, source: Source, field: str | None = None,
                 template: str | None = None) -> None:
        self._set(kind=kind, name=name, source=source, field=field, template=template)

    @property
    def label(self) -> str:
        return self.name if self.kind == "env" else f"file {self.name}"


class Delivery(Value):
    """Every target, in declaration order; ``sources`` lists each distinct source once."""

    __slots__ = ("targets", "sources")  # noqa: RUF023 - the order of the fields
    targets: tuple[Target, ...]
    sources: tuple[Source, ...]

    def __init__(self, targets: tuple[Target, ...] = ()) -> None:
        seen: dict[str, Source] = {}
        for t in targets:
            seen.setdefault(t.source.key, t.source)
        self._set(targets=tuple(targets), sources=tuple(seen.values()))

    def targets_of(self, source_key: str) -> list[Target]:
        return [t for t in self.targets if t.source.key == source_key]

    @property
    def has_files(self) -> bool:
        return any(t.kind == "file" for t in self.targets)

    def merged(self, other: Delivery) -> Delivery:
        """Both plans' targets; a target named twice is an error (flags do not silently override the file)."""
        return plan_of([*self.targets, *other.targets])


def plan_of(targets: Iterable[Target], *, where: str | None = None) -> Delivery:
    """Return a plan of ``targets``, refusing a variable or file named twice."""
    try:
        return _plan_of(targets)
    except _Bad as bad:
        raise SpecError(bad.message, file=where, field=bad.where) from None


def _plan_of(targets: Iterable[Target]) -> Delivery:
    out: list[Target] = []
    names: set[tuple[str, str]] = set()
    for t in targets:
        if (t.kind, t.name) in names:
            what = "environment variable" if t.kind == "env" else "file"
            raise _Bad(f"{what} {t.name} is declared twice", f"{'env' if t.kind == 'env' else 'files'}.{t.name}")
        names.add((t.kind, t.name))
        out.append(t)
    return Delivery(tuple(out))


# -- the compact form ---------------------------------------------------------------------------------------


def parse_source_text(text: str, *, where: str) -> tuple[Source, str | None]:
    """Parse ``kind:path[#field]``; return the source and the field (or None)."""
    try:
        return _parse_source_text(text)
    except _Bad as bad:
        raise SpecError(bad.message, field=where) from None


def _parse_source_text(text: str) -> tuple[Source, str | None]:
    spec, _, fld = text.partition("#")
    kind, sep, path = spec.partition(":")
    if not sep or kind not in SOURCE_KINDS:
        raise _Bad(f"{text!r} does not name a source: use kv:<mount>/<path>, db:<mount>/creds/<role>, "
                        f"read:<path> or unwrap:env:<VAR>|file:<path>, optionally followed by #field", )
    if "#" in text and not fld:
        raise _Bad(f"{text!r} has an empty field after '#'")
    return _make_source(kind, path, None, None), fld or None  # type: ignore[arg-type]


def parse_flag(text: str, kind: TargetKind) -> Target:
    """Parse ``--secret NAME=SPEC`` (``kind="env"``) or ``--secret-file PATH=SPEC`` (``kind="file"``)."""
    flag = "--secret" if kind == "env" else "--secret-file"
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        example = "API_TOKEN=kv:secret/jobs/nightly#api_token" if kind == "env" else \
            "pg.json=db:database/creds/jobs-ro"
        raise SpecError(f"{flag} {text!r}: expected NAME=SOURCE, e.g. {flag} {example}")
    try:
        _check_target_name(kind, name)
        source, fld = _parse_source_text(spec)
    except _Bad as bad:
        raise SpecError(bad.message, field=f"{flag} {name}") from None
    return Target(kind, name, source, fld)


def parse_flags(env_flags: Iterable[str] = (), file_flags: Iterable[str] = ()) -> Delivery:
    return plan_of([*(parse_flag(f, "env") for f in env_flags), *(parse_flag(f, "file") for f in file_flags)])


# -- the file -----------------------------------------------------------------------------------------------


def parse_document(doc: Any, *, source: str = "secrets") -> Delivery:
    """Turn a parsed secrets document (``{"env": {...}, "files": {...}}``) into a plan."""
    try:
        return _parse_document(doc)
    except _Bad as bad:
        raise SpecError(bad.message, file=source, field=bad.where) from None


def _parse_document(doc: Any) -> Delivery:
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise _Bad("the secrets file must be a mapping with 'env' and/or 'files'")
    unknown = sorted(set(doc) - {"env", "files"}, key=str)
    if unknown:
        raise _Bad(f"unknown section {unknown[0]!r} (known: env, files)", str(unknown[0]))
    targets: list[Target] = []
    for section, kind in (("env", "env"), ("files", "file")):
        entries = doc.get(section) or {}
        if not isinstance(entries, Mapping):
            raise _Bad(f"'{section}' must map names to sources", section)
        for name, value in entries.items():
            where = f"{section}.{name}"
            if not isinstance(name, str):
                raise _Bad(f"name {name!r} must be a string", where)
            try:
                _check_target_name(kind, name)  # type: ignore[arg-type]
                targets.append(_target_from_value(kind, name, value))  # type: ignore[arg-type]
            except _Bad as bad:
                raise _Bad(bad.message, where) from None
    return _plan_of(targets)


def load_file(path: str | Path) -> Delivery:
    """Read a secrets file: JSON when it ends in ``.json``, else YAML (PyYAML, imported only here).

    Errors name the file, and for YAML the line of the offending entry.
    """
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"cannot read the secrets file: {err.strerror or err}", file=str(p)) from None
    if p.suffix == ".json":
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise SpecError(f"invalid JSON: {err}", file=str(p)) from None
        return parse_document(doc, source=str(p))
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise SpecError("PyYAML is not installed", file=str(p), hint="pip install PyYAML, or use a .json file") \
            from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(f"invalid YAML: {getattr(err, 'problem', None) or err}", file=str(p), line=line) from None
    try:
        return _parse_document(doc)
    except _Bad as bad:
        raise SpecError(bad.message, file=str(p), line=_yaml_line(text, bad.where), field=bad.where) from None


def _yaml_line(text: str, dotted: str | None) -> int | None:
    """The 1-based line of ``section.name`` in a YAML text (composed again only when reporting an error)."""
    if not dotted:
        return None
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    section, _, name = dotted.partition(".")
    for key in (section, name) if name else (section,):
        if not isinstance(node, yaml.MappingNode):
            return None
        for k, v in node.value:
            if k.value == key:
                line = k.start_mark.line + 1
                node = v
                break
        else:
            return None
    return line


def _target_from_value(kind: TargetKind, name: str, value: Any) -> Target:
    if isinstance(value, str):
        source, fld = _parse_source_text(value)
        return Target(kind, name, source, fld)
    if not isinstance(value, Mapping):
        raise _Bad("expected a source such as {kv: secret/app, field: token} or 'kv:secret/app#token'")
    unknown = sorted(set(value) - _TARGET_KEYS)
    if unknown:
        raise _Bad(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TARGET_KEYS))})")
    kinds = [k for k in SOURCE_KINDS if k in value]
    if len(kinds) != 1:
        raise _Bad("name exactly one source: kv, db, read or unwrap" + (f" (got {', '.join(kinds)})"
                                                                             if kinds else ""))
    src_kind = kinds[0]
    path = value[src_kind]
    if not isinstance(path, str):
        raise _Bad(f"{src_kind} must be a path string")
    version = value.get("version")
    if version is not None and (src_kind != "kv" or isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise _Bad("version applies to kv sources and must be a positive integer")
    mount = value.get("mount")
    if mount is not None and (src_kind != "kv" or not isinstance(mount, str) or not mount.strip("/")):
        raise _Bad("mount applies to kv sources and must name the KV mount")
    fld, template = value.get("field"), value.get("template")
    if fld is not None and template is not None:
        raise _Bad("give either field or template, not both")
    if fld is not None and (not isinstance(fld, str) or not fld):
        raise _Bad("field must be a non-empty string")
    if template is not None:
        if not isinstance(template, str):
            raise _Bad("template must be a string")
        _check_template(template)
    source = _make_source(src_kind, path, version, mount.strip("/") if mount else None)
    return Target(kind, name, source, fld, template)


def _make_source(kind: SourceKind, path: str, version: int | None, mount: str | None) -> Source:
    path = path.strip()
    if kind == "unwrap":
        how, sep, ref = path.partition(":")
        if how not in ("env", "file") or not sep or not ref:
            raise _Bad(f"unwrap {path!r}: name where the wrapping token is, env:<VAR> or file:<path>")
        if how == "env" and not _ENV_NAME.match(ref):
            raise _Bad(f"unwrap {path!r}: {ref!r} is not an environment variable name")
        return Source(kind, path)
    path = path.strip("/")
    parts = path.split("/")
    if not path or not all(_PATH_PART.match(p) for p in parts) or any(p in (".", "..") for p in parts):
        raise _Bad(f"{kind} path {path!r} is not a valid OpenBao path")
    if kind == "kv":
        if mount is not None and not (path.startswith(mount + "/") and len(path) > len(mount) + 1):
            raise _Bad(f"kv path {path!r} does not start with its mount {mount!r}/")
        if mount is None and len(parts) < 2:
            raise _Bad(f"kv path {path!r} needs a mount and a secret path, e.g. secret/jobs/nightly")
    if kind == "db" and not (len(parts) >= 3 and parts[-2] in ("creds", "static-creds")):
        raise _Bad(f"db path {path!r} should look like <mount>/creds/<role>")
    return Source(kind, path, version, mount)


def _check_target_name(kind: TargetKind, name: str) -> None:
    if kind == "env":
        if not _ENV_NAME.match(name):
            raise _Bad(f"{name!r} is not a valid environment variable name")
        if name in RESERVED_ENV:
            raise _Bad(f"{name} is set by vaultmesh run itself")
        return
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name or "\0" in name:
        raise _Bad(f"file name {name!r} must be a relative path inside the secrets directory "
                        "(no '..', no leading '/')")


# -- templates ----------------------------------------------------------------------------------------------


def check_template(template: str) -> list[str]:
    """Return the fields a template names; refuse a lone ``$`` so typos do not reach the child."""
    try:
        return _check_template(template)
    except _Bad as bad:
        raise SpecError(bad.message) from None


def _check_template(template: str) -> list[str]:
    names: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        if "$" in template[pos:m.start()]:
            raise _Bad(f"template {template!r}: use ${{field}} for a value and $$ for a literal $")
        if m.group(1):
            names.append(m.group(1))
        pos = m.end()
    if "$" in template[pos:]:
        raise _Bad(f"template {template!r}: use ${{field}} for a value and $$ for a literal $")
    return names


def render_template(template: str, fields: Mapping[str, Any], *, what: str) -> str:
    """Substitute ``${field}``; a missing field is an error naming the fields there are (never values)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(2):
            return "$"
        return field_text(fields, m.group(1), what=what)

    return _PLACEHOLDER.sub(sub, template)


def field_text(fields: Mapping[str, Any], name: str, *, what: str) -> str:
    if name not in fields:
        known = ", ".join(sorted(map(str, fields))) or "none"
        raise SpecError(f"{what} has no field {name!r} (fields: {known})")
    value = fields[name]
    return value if isinstance(value, str) else json.dumps(value)
