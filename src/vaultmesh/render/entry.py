"""Render the entry (HAProxy) config. Pure.

The entry passes TLS through (mode tcp): clients verify the node's own certificate, whose SANs include
127.0.0.1 and localhost, so the mesh CA is all a client needs and no key is shared with the proxy.

Routing: all traffic goes to the active node, the only one whose ``/v1/sys/health`` answers 200 (standbys
answer 429). So any client (hvac, the bao CLI, curl) reads its own writes: through a standby, a read right
after a write was stale every time here. While no node is active (an election, ~2 s) the entry has no server
and refuses connections at once; clients retry (vaultmesh's own clients do, and also know every node
address). There is deliberately no standby fallback: in TCP mode a connection stays with the server it was
opened to, so kept-alive connections opened to a standby during an election stayed pinned to it (and got
its 307 redirects) long after a new leader was up. A server marked down has its connections cut
(``on-marked-down shutdown-sessions``), so clients reconnect to the new leader. Checks are HTTPS, verified
against the mesh CA, every 500 ms (200 ms while a server is down, so a new leader is routed to within
~200 ms of its election).
"""

from __future__ import annotations

import re

from vaultmesh.errors import StateError
from vaultmesh.layout import HOST, MeshLayout

CHECK_INTERVAL_MS = 500
"""Health-check period of a healthy server: with fall 2 a dead node leaves the pool within ~1 s."""
DOWN_CHECK_INTERVAL_MS = 200
"""Check period of a server that is down, e.g. a standby in the ``active`` backend: a newly elected leader is
routed to within 200 ms of its election, not a whole period later."""


_WORD = re.compile(r"[A-Za-z0-9_./:@+=,~-]+\Z")


def _word(value: object, what: str) -> str:
    """One HAProxy config word: anything with a space, quote, ``#`` or control character could end the word
    and add a directive, so it is refused rather than quoted (HAProxy's quoting rules vary by version)."""
    text = str(value)
    if not _WORD.match(text):
        raise StateError(f"{what} {text!r} cannot go into the entry's HAProxy config: use letters, digits and "
                         "'_./:@+=,~-' only (e.g. a state dir path without spaces)")
    return text


def render_entry_config(layout: MeshLayout, *, bind: str = HOST, ca_file: object = None) -> str:
    """The entry's config; ``bind`` and ``ca_file`` for an entry on a host (its address, its copy of the CA)."""
    ca = _word(ca_file or layout.paths.ca_cert, "the CA path")
    common = (f"check check-ssl verify required ca-file {ca} check-sni localhost "
              f"inter {CHECK_INTERVAL_MS}ms downinter {DOWN_CHECK_INTERVAL_MS}ms fastinter {DOWN_CHECK_INTERVAL_MS}ms "
              "fall 2 rise 1")
    servers = "\n".join(f"    server {_word(n.name, 'node name')} {_word(n.host, 'node host')}:{int(n.api_port)} "
                        f"{common}" for n in layout.nodes)
    return f"""\
# Rendered by vaultmesh; changes are overwritten by `vaultmesh up`.
global
    maxconn 4096
    log stdout format raw local0 notice

defaults
    mode tcp
    log global
    option tcplog
    option dontlognull
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
    default-server on-marked-down shutdown-sessions

frontend entry
    bind {_word(bind, 'the entry address')}:{layout.entry_port}
    default_backend active

backend active
    balance first
    option httpchk
    http-check send meth GET uri /v1/sys/health
    http-check expect status 200
{servers}
"""
