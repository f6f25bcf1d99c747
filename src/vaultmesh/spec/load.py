"""Loading the mesh file: YAML text -> MeshSpec, with errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vaultmesh.errors import SpecError
from vaultmesh.spec.models import SCHEMA_VERSION, MeshSpec

Loc = tuple[str | int, ...]


def _line_index(node: yaml.Node, path: Loc, out: dict[Loc, int]) -> None:
    """Record the 1-based line of every key and item, by its path in the document."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            out[child] = key.start_mark.line + 1
            _line_index(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def line_index(text: str) -> dict[Loc, int]:
    """{path in the document: 1-based line} for every key and item of ``text`` (empty when unparsable)."""
    lines: dict[Loc, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        _line_index(root, (), lines)
    return lines


def _line_for(loc: Loc, lines: dict[Loc, int]) -> int | None:
    """The line of the deepest known prefix of ``loc`` (pydantic adds model names we don't have)."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _field_path(loc: Loc) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + p)
    return "".join(parts)


MAX_SPEC_BYTES = 1 << 20
"""A mesh file is a few KB; a bigger one is a mistake or an attack on the parser."""


def _refuse_bombs(text: str, source: str) -> None:
    """Refuse YAML aliases (``*name``): a few hundred bytes of nested aliases expand to gigabytes (billion
    laughs), and a mesh file never needs them. Checked on the event stream, which does not expand them."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError(f"the mesh file is larger than {MAX_SPEC_BYTES // 1024} KiB", file=source,
                        hint="a mesh file is a few KB; check that this is the right file")
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise SpecError("YAML aliases (*name) are not allowed in a mesh file", file=source,
                                line=event.start_mark.line + 1, hint="write the value out where it is used")
    except yaml.YAMLError:
        return  # reported with its line by the full parse below


def parse_spec(text: str, *, source: str = "<mesh file>", base_dir: Path | None = None) -> MeshSpec:
    """Parse and validate mesh-file text. Raises SpecError naming source:line and the field."""
    _refuse_bombs(text, source)
    try:
        root = yaml.compose(text)
        data: Any = yaml.safe_load(text) if root is not None else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"not valid YAML: {problem}", file=source, line=line,
                        hint="fix the syntax at that line") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError("the mesh file must be a mapping of keys (version, nodes, zones, ...)", file=source,
                        line=1)
    lines: dict[Loc, int] = {}
    if root is not None:
        _line_index(root, (), lines)
    version = data.get("version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise SpecError(f"schema version {version} is newer than this vaultmesh understands "
                        f"(up to {SCHEMA_VERSION})", file=source, line=lines.get(("version",)),
                        field="version", hint="upgrade vaultmesh")
    context = {"base_dir": base_dir} if base_dir else {}
    try:
        return MeshSpec.model_validate(data, context=context)
    except ValidationError as err:
        first = err.errors()[0]
        loc: Loc = tuple(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = f"unknown field '{loc[-1]}'"
            allowed = _allowed_fields(loc[:-1])
            if allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        more = len(err.errors()) - 1
        if more:
            msg += f" (and {more} more error{'s' if more > 1 else ''})"
        raise SpecError(msg, file=source, line=_line_for(loc, lines), field=_field_path(loc) or None) from None


def _allowed_fields(parent: Loc) -> list[str]:
    """Field names allowed at ``parent`` in the schema, for 'unknown field' messages."""
    model: Any = MeshSpec
    for part in parent:
        if isinstance(part, int) or not hasattr(model, "model_fields"):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = field.annotation
        if not hasattr(model, "model_fields"):
            return []
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def load_spec(path: Path | None) -> tuple[MeshSpec, str]:
    """Load the mesh file at ``path`` (None: the built-in defaults). Returns the spec and its text."""
    if path is None:
        return MeshSpec(), ""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"mesh file {path} does not exist", hint="pass -f with an existing file") from None
    except OSError as err:
        raise SpecError(f"cannot read mesh file {path}: {err.strerror}") from None
    return parse_spec(text, source=str(path), base_dir=path.parent), text
