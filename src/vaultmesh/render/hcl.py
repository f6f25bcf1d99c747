"""A tiny HCL writer for OpenBao server configs. Pure.

OpenBao also reads JSON configs, but HCL is what operators read in docs and debug by hand, and its
multi-label blocks (``audit "file" "name" {}``, ``seal "static" {}``) map awkwardly to JSON. The subset
needed here (strings, numbers, bools, lists, maps, labelled blocks) is a few lines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

Value = str | int | float | bool | list[Any] | dict[str, Any]


@dataclass
class Block:
    """``type "label" ... { attrs; blocks }``."""

    type: str
    labels: tuple[str, ...] = ()
    attrs: dict[str, Value] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)


IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def _key(k: str) -> str:
    """An attribute or block name, written bare: only an identifier may be, so no value can add structure."""
    if not isinstance(k, str) or not IDENTIFIER.match(k):
        raise ValueError(f"{k!r} is not a valid HCL identifier (letters, digits, '_' and '-', not first a digit)")
    return k


def _string(v: str) -> str:
    """A quoted HCL string. OpenBao parses configs with HCL v1: JSON escapes work, but non-BMP characters
    must stay literal (v1 decodes surrogate escapes half by half) and ``${`` would start an interpolation."""
    return json.dumps(v, ensure_ascii=False).replace("${", "\\u0024{")


def _value(v: Value, indent: int) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x, indent) for x in v) + "]"
    pad = "  " * (indent + 1)
    inner = "".join(f"{pad}{_string(k)} = {_value(x, indent + 1)}\n" for k, x in v.items())
    return "{\n" + inner + "  " * indent + "}"


def render_block(block: Block, indent: int = 0) -> str:
    pad = "  " * indent
    head = " ".join([_key(block.type), *(_string(lbl) for lbl in block.labels)])
    body = "".join(f"{pad}  {_key(k)} = {_value(v, indent + 1)}\n" for k, v in block.attrs.items())
    body += "".join(render_block(b, indent + 1) for b in block.blocks)
    return f"{pad}{head} {{\n{body}{pad}}}\n"


def render_document(attrs: dict[str, Value], blocks: list[Block]) -> str:
    top = "".join(f"{_key(k)} = {_value(v, 0)}\n" for k, v in attrs.items())
    return top + "\n" + "\n".join(render_block(b) for b in blocks)
