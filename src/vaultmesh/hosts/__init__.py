"""``runtime: ssh``: a mesh whose nodes run on other hosts, reached over SSH.

    transport.py  edge: one verified SSH connection per host (paramiko), commands and atomic file writes
    service.py    pure: a node's bundle on its host, its service file and the service manager's commands
    runtime.py    edge: push a node's bundle, start/stop/restart it through the service manager, find its pid
"""
