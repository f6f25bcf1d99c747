"""``python -m vaultmesh.keeper --dir STATE``: the keeper process ``vaultmesh up`` starts."""

import sys

from vaultmesh.keeper.loop import main

sys.exit(main())
