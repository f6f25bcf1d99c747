"""``python -m vaultmesh.identity --dir STATE --cert PEM --key PEM``: the issuer process ``vaultmesh up`` starts.

Options: ``--host`` (default 127.0.0.1), ``--port`` (default: the last run's, else a free one),
``--max-token-ttl`` (a duration, default 1h). Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaultmesh.errors import VaultmeshError
from vaultmesh.identity.service import DEFAULT_MAX_TOKEN_TTL, serve_issuer
from vaultmesh.identity.tokens import parse_duration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaultmesh.identity",
                                     description="Serve the workload identity issuer of a state dir.")
    parser.add_argument("--dir", dest="state_dir", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--max-token-ttl", default=None)
    args = parser.parse_args(argv)
    try:
        ttl = parse_duration(args.max_token_ttl) if args.max_token_ttl else DEFAULT_MAX_TOKEN_TTL
        serve_issuer(args.state_dir.absolute(), certfile=args.cert, keyfile=args.key, host=args.host,
                     port=args.port, max_token_ttl=ttl, announce=lambda line: print(line, flush=True))
    except VaultmeshError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
