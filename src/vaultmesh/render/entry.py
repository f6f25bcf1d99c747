"""Render the entry (HAProxy) config. Pure.

The entry passes TLS through (mode tcp): clients verify the node's own certificate, whose SANs include
127.0.0.1 and localhost, so the mesh CA is all a client needs and no key is shared with the proxy.

Routing: every node is in two backends. In ``active`` it is checked on ``/v1/sys/health`` (200 only on the
active node); in ``standby`` on ``/v1/sys/health?standbyok=true`` (200 on standbys too). So all traffic goes
to the active node, and any client (hvac, the bao CLI, curl) reads its own writes: through a standby, a read
right after a write was stale every time here. Standbys take traffic only while no node is active (during an
election), where they forward or answer 5xx that clients retry. Sealed, uninitialised or dead nodes drop out
of both within ~1 s (check every 500 ms, two failures). Checks are HTTPS, verified against the mesh CA.
"""

from __future__ import annotations

from vaultmesh.layout import HOST, MeshLayout

CHECK_INTERVAL_MS = 500
"""Health-check period of a healthy server: with fall 2 a dead node leaves the pool within ~1 s."""
DOWN_CHECK_INTERVAL_MS = 200
"""Check period of a server that is down, e.g. a standby in the ``active`` backend: a newly elected leader is
routed to within 200 ms of its election, not a whole period later."""


def render_entry_config(layout: MeshLayout) -> str:
    ca = layout.paths.ca_cert
    common = (f"check check-ssl verify required ca-file {ca} check-sni localhost "
              f"inter {CHECK_INTERVAL_MS}ms downinter {DOWN_CHECK_INTERVAL_MS}ms fastinter {DOWN_CHECK_INTERVAL_MS}ms "
              "fall 2 rise 1")
    servers = "\n".join(f"    server {n.name} {n.host}:{n.api_port} {common}" for n in layout.nodes)
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
    bind {HOST}:{layout.entry_port}
    use_backend active if {{ nbsrv(active) gt 0 }}
    default_backend standby

backend active
    balance first
    option httpchk
    http-check send meth GET uri /v1/sys/health
    http-check expect status 200
{servers}

backend standby
    balance leastconn
    option httpchk
    http-check send meth GET uri /v1/sys/health?standbyok=true&perfstandbyok=true
    http-check expect status 200
{servers}
"""
