"""``vaultmesh doctor``: ``checks`` (pure: facts in, findings out) and ``gather`` (the live mesh and its files,
read only)."""
