"""The keeper: a managed process ``vaultmesh up`` starts, acting on the mesh with nobody at the keyboard.

Its duties run one after another on an interval (``cycle``). Today: the reaper (``reaper``), which revokes the
tokens, and with them the leases, of workloads that are gone.
"""
