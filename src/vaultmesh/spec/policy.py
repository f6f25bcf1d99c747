"""ACL policy text: a minimal structural check, and the fill-in of mount accessors in templated policies.

The check is deliberately small: it is not an HCL implementation, it catches what a reviewer misses in a
diff (an unbalanced brace, a misspelt capability, a ``capabilites`` key, a stanza that is not ``path``)
and names the line. OpenBao remains the authority on everything else.

Templating. OpenBao's identity templates name an auth mount by its *accessor*
(``{{identity.entity.aliases.auth_jwt_1a2b3c4d.metadata.job}}``), which is random and only known once the
mount exists. The mesh file names the mount by its path instead, in either of two spellings:

- ``{{identity.entity.aliases.auth/jwt/.metadata.job}}`` - the OpenBao template with the mount path
  (``auth/<path>/``) where the accessor goes;
- ``{{mount_accessor "jwt"}}`` - just the accessor, for use anywhere in the text.

:func:`fill_accessors` replaces both from an ``accessors`` mapping (full mount path -> accessor). A mount
whose accessor is not known yet (it is created by the same apply) is left as written and reported as
pending: the apply edge fills it in after the mount phase, and the plan the user reviewed shows the
template they wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

CAPABILITIES = frozenset({"create", "read", "update", "patch", "delete", "list", "sudo", "deny", "subscribe"})
"""Every capability OpenBao 2.7 knows in an ACL ``path`` stanza."""


class HclError(ValueError):
    """The policy text is not structurally valid; ``line`` is 1-based within the policy text."""

    def __init__(self, message: str, line: int) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}")


@dataclass(frozen=True)
class PolicyRule:
    """One ``path "..." { capabilities = [...] }`` stanza."""

    path: str
    capabilities: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class _Token:
    kind: str  # "str", "ident", "num", or the punctuation character itself
    text: str
    line: int


_PUNCT = frozenset("{}[]=,:")


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise HclError("comment opened with /* is never closed", line)
            line += text.count("\n", i, end)
            i = end + 2
        elif c == '"':
            start_line, j, buf = line, i + 1, []
            while True:
                if j >= n or text[j] == "\n":
                    raise HclError("string is not closed on the same line", start_line)
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j:j + 2])
                    j += 2
                    continue
                if text[j] == '"':
                    break
                buf.append(text[j])
                j += 1
            out.append(_Token("str", "".join(buf), start_line))
            i = j + 1
        elif text.startswith("<<", i):
            raise HclError("heredoc strings are not supported in policies; use a quoted string", line)
        elif c in _PUNCT:
            out.append(_Token(c, c, line))
            i += 1
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] in "_-"):
                j += 1
            out.append(_Token("ident", text[i:j], line))
            i = j
        elif c.isdigit() or c == "-":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "."):
                j += 1
            out.append(_Token("num", text[i:j], line))
            i = j
        else:
            raise HclError(f"unexpected character {c!r}", line)
    return out


class _Parser:
    def __init__(self, tokens: list[_Token], last_line: int) -> None:
        self.toks = tokens
        self.pos = 0
        self.last_line = last_line

    def peek(self) -> _Token | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self, kind: str, what: str) -> _Token:
        tok = self.peek()
        if tok is None:
            raise HclError(f"expected {what} but the policy ended (is a closing brace missing?)", self.last_line)
        if tok.kind != kind:
            raise HclError(f"expected {what}, found {tok.text!r}", tok.line)
        self.pos += 1
        return tok

    def rules(self) -> list[PolicyRule]:
        rules = []
        while (tok := self.peek()) is not None:
            if tok.kind == "}":
                raise HclError("closing brace without a matching opening brace", tok.line)
            if tok.kind != "ident" or tok.text != "path":
                raise HclError(f"only 'path \"...\" {{ ... }}' stanzas belong in an ACL policy, found {tok.text!r}",
                               tok.line)
            self.pos += 1
            path = self.take("str", "a quoted path after 'path'")
            self.take("{", "'{' after the path")
            attrs = self.block_body(path.line)
            caps = attrs.get("capabilities")
            if caps is None:
                raise HclError(f"path \"{path.text}\" has no 'capabilities = [...]'", path.line)
            rules.append(PolicyRule(path.text, caps, path.line))
        return rules

    def block_body(self, open_line: int) -> dict[str, tuple[str, ...]]:
        """Attributes of a ``{ ... }`` block up to its closing brace; returns the capabilities if any."""
        found: dict[str, tuple[str, ...]] = {}
        while True:
            tok = self.peek()
            if tok is None:
                raise HclError("block opened here is never closed (missing '}')", open_line)
            if tok.kind == "}":
                self.pos += 1
                return found
            if tok.kind not in ("ident", "str"):
                raise HclError(f"expected an attribute name, found {tok.text!r}", tok.line)
            self.pos += 1
            nxt = self.peek()
            if nxt is not None and nxt.kind == "{":  # nested block, e.g. allowed_parameters { ... }
                self.pos += 1
                self.block_body(nxt.line)
                continue
            if nxt is None or nxt.kind not in ("=", ":"):
                raise HclError(f"expected '=' after {tok.text!r}", tok.line if nxt is None else nxt.line)
            self.pos += 1
            value = self.value()
            if tok.text == "capabilities":
                found["capabilities"] = self.capabilities(value, tok.line)
            if self.peek() is not None and self.peek().kind == ",":  # type: ignore[union-attr]
                self.pos += 1

    def capabilities(self, value: object, line: int) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, _Token) and v.kind == "str" for v in value):
            raise HclError("capabilities must be a list of quoted strings", line)
        caps = tuple(v.text for v in value)
        for v in value:
            if v.text not in CAPABILITIES:
                raise HclError(f"unknown capability {v.text!r}; known: {', '.join(sorted(CAPABILITIES))}",
                               v.line)
        return caps

    def value(self) -> object:
        tok = self.peek()
        if tok is None:
            raise HclError("expected a value but the policy ended", self.last_line)
        self.pos += 1
        if tok.kind in ("str", "num", "ident"):
            return tok
        if tok.kind == "[":
            items: list[object] = []
            while True:
                nxt = self.peek()
                if nxt is None:
                    raise HclError("list opened here is never closed (missing ']')", tok.line)
                if nxt.kind == "]":
                    self.pos += 1
                    return items
                items.append(self.value())
                after = self.peek()
                if after is not None and after.kind == ",":
                    self.pos += 1
                elif after is None or after.kind != "]":
                    raise HclError("expected ',' or ']' in list", tok.line if after is None else after.line)
        if tok.kind == "{":
            self.block_body(tok.line)
            return {}
        raise HclError(f"expected a value, found {tok.text!r}", tok.line)


def parse_policy(text: str) -> list[PolicyRule]:
    """The ``path`` rules of an ACL policy, or HclError naming the line of the first structural problem."""
    rules = _Parser(_tokens(text), text.count("\n") + 1).rules()
    if not rules:
        raise HclError("the policy grants nothing: it has no 'path' stanza", 1)
    return rules


# -- templating ------------------------------------------------------------------------------------------

_ALIAS = re.compile(r"\{\{\s*identity\.entity\.aliases\.auth/(?P<mount>[^{}\s]+?)/\.(?P<rest>[^{}\s]*?)\s*\}\}")
_ACCESSOR = re.compile(r"\{\{\s*mount_accessor\s+\"(?P<mount>[^\"]+)\"\s*\}\}")


def _full_mount(namespace: str, mount: str) -> str:
    mount = mount.strip("/")
    return f"{namespace}/{mount}" if namespace else mount


def referenced_mounts(text: str) -> frozenset[str]:
    """Auth mount paths (as written, without slashes) the policy's templates refer to."""
    found = {m.group("mount").strip("/") for m in _ALIAS.finditer(text)}
    found |= {m.group("mount").strip("/") for m in _ACCESSOR.finditer(text)}
    return frozenset(found)


def referenced_metadata(text: str) -> frozenset[tuple[str, str]]:
    """(auth mount path, metadata key) pairs used as ``...aliases.auth/<mount>/.metadata.<key>``."""
    out = set()
    for m in _ALIAS.finditer(text):
        rest = m.group("rest")
        if rest.startswith("metadata."):
            out.add((m.group("mount").strip("/"), rest.removeprefix("metadata.")))
    return frozenset(out)


@dataclass(frozen=True)
class FilledPolicy:
    text: str
    pending: frozenset[str]
    """Full mount paths whose accessor was not known: their templates are left as written."""


def fill_accessors(text: str, accessors: Mapping[str, str], *, namespace: str = "") -> FilledPolicy:
    """Replace mount-path templates by accessors. ``accessors`` is keyed by full mount path
    (``jwt``, or ``team-a/jwt`` for a mount in namespace ``team-a``); mounts are looked up in ``namespace``."""
    pending: set[str] = set()

    def filler(spell: Callable[[str, re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
        """A substitution that spells the mount's accessor with ``spell``, or leaves an unknown mount as written."""
        def fill(m: re.Match[str]) -> str:
            full = _full_mount(namespace, m.group("mount"))
            acc = accessors.get(full)
            if acc is None:
                pending.add(full)
                return m.group(0)
            return spell(acc, m)
        return fill

    alias = filler(lambda acc, m: "{{identity.entity.aliases." + acc + "." + m.group("rest") + "}}")
    filled = _ACCESSOR.sub(filler(lambda acc, m: acc), _ALIAS.sub(alias, text))
    return FilledPolicy(filled, frozenset(pending))
