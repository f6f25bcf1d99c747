"""Workloads: ``vaultmesh run`` (a supervisor) and the SDK (``vaultmesh.Workload``).

Layout: ``spec`` (what a job asks for, pure), ``book`` (the lease book, sans-IO), ``deliver`` (env and files),
``session`` (login, fetch, renew, revoke over the engine client; the thread driver), ``supervisor`` (the child),
``cli`` (argparse entry point), ``reap`` (revoke what a killed run left), ``sdk`` (``Workload``). What a
workload needs inside the mesh is declared in a mesh file and applied (``reconcile.apply``), never here.

This package is the light path: it imports nothing from cli/, reconcile/ or render/, and the run path stays off
pydantic, rich, httpx, cryptography and click. Keep this module empty of imports.
"""
