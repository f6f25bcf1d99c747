"""No value in a mesh file can change the structure of a rendered node config (issue 8, finding 3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vaultmesh.layout import build_layout
from vaultmesh.render.hcl import Block, render_block, render_document
from vaultmesh.render.node import render_node_config
from vaultmesh.spec.models import LifecycleSpec, SealSpec, zone_layout

from .test_render import balanced

INJECTED_KEY = 'x = 1\n}\nlistener "tcp" {\n  address = "0.0.0.0:1"\n  tls_disable = true\n}\nseal "y" {\n  z'


_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def _structure(text: str) -> list[str]:
    """The block lines of an HCL document with every string replaced: what a value must never add to."""
    assert balanced(text), "unbalanced braces or an unterminated string"
    bare = _STRING.sub('"S"', text)
    return [line.strip() for line in bare.splitlines() if "{" in line or "}" in line]


def _config(seal: SealSpec) -> str:
    spec = LifecycleSpec(seal=seal)
    layout = build_layout("vaultmesh", Path("/state/mesh"), zone_layout(spec), list(range(18200, 18220)),
                          transit_seal=False)
    return render_node_config(spec, layout, layout.nodes[0], self_init=True)


def test_a_seal_option_key_that_is_not_a_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="not an option name"):
        SealSpec(type="awskms", options={INJECTED_KEY: "v"})


def test_the_writer_refuses_a_key_that_is_not_an_identifier_even_past_the_model() -> None:
    with pytest.raises(ValueError, match="not a valid HCL identifier"):
        render_block(Block("seal", ("awskms",), {INJECTED_KEY: "v"}))
    with pytest.raises(ValueError, match="not a valid HCL identifier"):
        render_document({"ui\nlistener": True}, [])


def test_an_injected_key_never_renders_a_listener() -> None:
    seal = SealSpec.model_construct(type="awskms", options={INJECTED_KEY: "v"}, key_shares=1, key_threshold=1)
    with pytest.raises(ValueError):
        _config(seal)


@settings(max_examples=200, deadline=None)
@given(key=st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
       value=st.text(min_size=0, max_size=60))
def test_no_seal_option_value_changes_the_structure(key: str, value: str) -> None:
    benign = _structure(_config(SealSpec(type="awskms", options={key: "benign"})))
    crafted = _config(SealSpec(type="awskms", options={key: value}))
    assert _structure(crafted) == benign
    assert len(re.findall(r'^listener "tcp"', crafted, flags=re.M)) == 1


@settings(max_examples=200, deadline=None)
@given(label=st.text(max_size=40), attr=st.text(max_size=40),
       mapping=st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=3),
       items=st.lists(st.text(max_size=20), max_size=3))
def test_no_string_anywhere_changes_the_structure_of_a_block(label: str, attr: str, mapping: dict[str, str],
                                                           items: list[str]) -> None:
    def doc(lbl: str, a: str, mp: dict[str, str], it: list[str]) -> str:
        return render_document({"ui": a}, [Block("audit", ("file", lbl), {"options": mp, "paths": it,
                                                                           "file_path": a})])

    benign = _structure(doc("x", "y", {"k": "v"} if mapping else {}, ["z"] * len(items)))
    assert _structure(doc(label, attr, mapping, items)) == benign


def test_a_state_dir_path_that_could_add_an_haproxy_directive_is_refused() -> None:
    from vaultmesh.errors import StateError
    from vaultmesh.render.entry import render_entry_config

    spec = LifecycleSpec()
    ok = build_layout("vaultmesh", Path("/state/mesh"), zone_layout(spec), list(range(18200, 18220)),
                      transit_seal=False)
    assert "ca-file /state/mesh/pki/ca.pem" in render_entry_config(ok)
    evil = build_layout("vaultmesh", Path("/state/x\n    server evil 10.0.0.1:80"), zone_layout(spec),
                        list(range(18200, 18220)), transit_seal=False)
    with pytest.raises(StateError, match="cannot go into the entry's HAProxy config"):
        render_entry_config(evil)
