"""The ``vaultmesh`` console script. ``vaultmesh run ...`` goes straight to the light argparse path (no click,
rich, pydantic or cryptography: ~140 ms of imports the workload path does without); everything else, and a
``run --dir D`` (which reads the mesh in D), to the click CLI."""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        from vaultmesh.workload.cli import DIR_OPTION, split_option
        from vaultmesh.workload.cli import main as workload_main

        if not split_option(argv[1:], DIR_OPTION)[0]:  # run --dir D reads a state dir: the click CLI's
            sys.exit(workload_main(argv))
    from vaultmesh.cli.main import main as click_main

    click_main()


if __name__ == "__main__":
    main()
