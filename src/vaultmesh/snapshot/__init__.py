"""Raft snapshots of a mesh: taken, described by a manifest, verified offline, kept by retention, shipped.

- ``vaultmesh.snapshot.archive``  pure: ``verify_bytes`` / ``verify_file`` check a snapshot without a server
  (gzip/tar structure, ``SHA256SUMS`` against every member, ``meta.json`` index/term, the manifest's sha256);
  ``Manifest`` (the sidecar ``<file>.json``) and its reader.
- ``vaultmesh.snapshot.retention``  pure: which snapshots a ``keep`` policy removes.
- ``vaultmesh.snapshot.save``  the edge: ``save(mesh, ...)`` takes one through ``sys/storage/raft/snapshot``,
  writes it and its manifest atomically (0600), ships it with the user's command; ``listing(...)``.
"""
