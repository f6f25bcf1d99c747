"""``vaultmesh audit report``: ``report`` (pure: audit lines in, the report out) and ``sources`` (which files
each node's audit devices write, read in bounded memory)."""
