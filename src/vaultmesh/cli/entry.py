"""The ``vaultmesh`` console script. ``vaultmesh run ...`` goes straight to the light argparse path (no click,
rich, pydantic or cryptography: ~140 ms of imports the workload path does without); everything else to the
click CLI."""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        from vaultmesh.workload.cli import main as workload_main

        sys.exit(workload_main(argv))
    from vaultmesh.cli.main import main as click_main

    click_main()


if __name__ == "__main__":
    main()
