"""What every command module shares: the context object, error handling, the stderr console."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from vaultmesh.errors import VaultmeshError

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    def __init__(self, dir: Path, engine: str | None, debug: bool) -> None:
        self.dir = dir
        self.engine = engine
        self.debug = debug


def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def handle_errors(fn: F) -> F:
    """Expected failures: one line (plus the node log tail when there is one), non-zero exit.
    Anything else is a bug: traceback and a request to report it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context().find_object(Ctx)
        try:
            return fn(*args, **kwargs)
        except VaultmeshError as err:
            if ctx and ctx.debug:
                traceback.print_exc()
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception:
            traceback.print_exc()
            click.echo("error: an internal error occurred (a bug in vaultmesh); please report it with the "
                       "traceback above", err=True)
            sys.exit(70)

    return wrapper  # type: ignore[return-value]


pass_ctx = click.make_pass_decorator(Ctx)
