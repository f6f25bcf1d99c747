"""Disaster recovery: restore a snapshot into a new mesh or in place, and the drill that proves it.

- ``vaultmesh.dr.restore``  ``restore_into(snapshot, target, *, source)``: a new, working mesh in ``target`` from a
  snapshot of the mesh in ``source`` (its seal key, checked against the manifest first, and admin password);
  ``restore_in_place(root, snapshot)``: into the running mesh, after a snapshot of its current state;
  ``RestoreResult`` (the mesh and the seconds of each phase).
- ``vaultmesh.dr.drill``  ``drill(root, *, snapshot=None, isolation=True, file=None)``: restore into a scratch
  mesh in network namespaces with no route out, check it (restore, plan, canary, transit, login), measure RTO
  and RPO, tear it down; ``DrillReport`` (also ``drills/last.json``); ``run_drill(root)`` for the keeper.
"""
