"""Disaster recovery: restore a snapshot into a new mesh or in place, and the drill that proves it.

- ``vaultmesh.dr.restore``  ``restore_into(snapshot, source, target)``: a new, working mesh from a snapshot;
  ``restore_in_place(mesh, snapshot)``: into the running mesh, after a snapshot of its current state.
- ``vaultmesh.dr.drill``  ``drill(mesh, snapshot=None)``: restore into an isolated scratch mesh, check it, measure
  RTO and RPO, tear it down; ``DrillReport``.
"""
