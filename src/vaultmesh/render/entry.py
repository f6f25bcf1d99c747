"""Render the entry (HAProxy) config. Pure.

The entry passes TLS through (mode tcp): clients verify the node's own certificate, whose SANs include
127.0.0.1 and localhost, so the mesh CA is all a client needs and no key is shared with the proxy.
HAProxy checks each node over HTTPS (verified against the mesh CA) on ``/v1/sys/health?standbyok=true``:
active and standby nodes answer 200 and get traffic (standbys serve reads and forward writes); sealed (503),
uninitialised (501) or dead nodes drop out within ~1 s (check every 500 ms, two failures).
"""

from __future__ import annotations

from vaultmesh.layout import HOST, MeshLayout

CHECK_INTERVAL_MS = 500
"""Health-check period: with fall 2 a dead node leaves the pool within ~1 s, about one Raft election."""


def render_entry_config(layout: MeshLayout) -> str:
    ca = layout.paths.ca_cert
    servers = "\n".join(
        f"    server {n.name} {n.host}:{n.api_port} check check-ssl verify required ca-file {ca} "
        f"check-sni localhost inter {CHECK_INTERVAL_MS}ms fall 2 rise 1"
        for n in layout.nodes
    )
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

frontend entry
    bind {HOST}:{layout.entry_port}
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk
    http-check send meth GET uri /v1/sys/health?standbyok=true&perfstandbyok=true
    http-check expect status 200
    default-server on-marked-down shutdown-sessions
{servers}
"""
