"""What every command module shares: the context object, the state-dir and engine options, the one error
handler and its exit codes, and the consoles.

Every command of the click CLI is wrapped in ``handle_errors``: an expected failure (``VaultmeshError``) is one
line ``error: ...`` on stderr and its exit code from ``vaultmesh.errors.EXIT_CODES``; ``--debug`` adds the
traceback; anything else is a bug (traceback, a request to report it, exit 70).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from vaultmesh.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, VaultmeshError, report

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DIR = Path(".vaultmesh")
DIR_ENV = "VAULTMESH_DIR"
ENGINE_ENV = "VAULTMESH_ENGINE"


class Ctx:
    """The state dir, the engine binary and ``--debug``, from the main command or the subcommand."""

    def __init__(self, dir: Path, engine: str | None, debug: bool) -> None:
        self.dir = dir
        self.engine = engine
        self.debug = debug

    @classmethod
    def from_env(cls) -> Ctx:
        """What the main command would have given without options: for a subcommand invoked on its own."""
        return cls(Path(os.environ.get(DIR_ENV) or DEFAULT_DIR).absolute(), os.environ.get(ENGINE_ENV) or None,
                   False)


def current(ctx: click.Context | None = None) -> Ctx:
    """The command's ``Ctx``: the one the main command made, else one made here (from the environment) and
    kept on the root context. A root object that is not a ``Ctx`` but has a ``dir`` lends its dir."""
    ctx = ctx or click.get_current_context()
    found = ctx.find_object(Ctx)
    if found is not None:
        return found
    made = Ctx.from_env()
    root = ctx.find_root()
    lent = getattr(root.obj, "dir", None)
    if lent is not None:
        made.dir = Path(lent).absolute()
    if root.obj is None:
        root.obj = made
    else:
        ctx.obj = made
    return made


def _set_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        current(ctx).dir = Path(value).absolute()


def _set_engine(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        current(ctx).engine = value


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        current(ctx).debug = True


DIR_HELP = "State dir of the mesh (env VAULTMESH_DIR)."
ENGINE_HELP = "Path of a bao or vault binary (env VAULTMESH_ENGINE); default: the pinned bao."


def mesh_options(*, engine: bool = False) -> Callable[[F], F]:
    """``--dir`` (and with ``engine``, ``--engine``) and ``--debug`` on a subcommand, so that
    ``vaultmesh up --dir D`` works as ``vaultmesh --dir D up`` does. Given here, they win over the main
    command's (which read the environment); not given, the main command's stand."""

    def decorate(fn: F) -> F:
        fn = click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug,
                          help="Show tracebacks for errors.")(fn)
        if engine:
            fn = click.option("--engine", default=None, expose_value=False, callback=_set_engine,
                              help=ENGINE_HELP)(fn)
        return click.option("--dir", "dir_", type=click.Path(path_type=Path), default=None, expose_value=False,
                            callback=_set_dir, help=DIR_HELP + "  [default: the main --dir, else .vaultmesh]")(fn)

    return decorate


def mesh_command(*, engine: bool = False) -> Callable[[F], F]:
    """What every command that works on a mesh wears, in this order: ``mesh_options`` (``--dir``, with
    ``engine`` ``--engine``, ``--debug``), the command's ``Ctx`` as first argument (``pass_ctx``) and the one
    error handler (``handle_errors``)."""

    def decorate(fn: F) -> F:
        return mesh_options(engine=engine)(pass_ctx(handle_errors(fn)))

    return decorate


def json_option(help: str) -> Callable[[F], F]:
    """``--json`` (the ``as_json`` argument): ``help`` says what the one JSON document on stdout holds."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def pass_ctx(fn: F) -> F:
    """Pass the command's ``Ctx`` (see ``current``) as the first argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(current(), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


_ERRORS_EXIT = "vaultmesh.errors_exit"


def errors_exit_with(code: int) -> None:
    """From now on in this command, every expected failure exits ``code`` whatever its own code (``plan
    --detailed-exitcode``: there 2 means "changes", so every error is 1). The error itself is not touched."""
    click.get_current_context().meta[_ERRORS_EXIT] = code


def handle_errors(fn: F) -> F:
    """Expected failures: one line (plus the node log tail when there is one), the exit code of the table.
    Anything else is a bug: traceback and a request to report it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except VaultmeshError as err:
            obj = ctx.find_object(Ctx)
            code = report(err, debug=bool(obj and obj.debug))
            sys.exit(ctx.meta.get(_ERRORS_EXIT, code))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception:
            traceback.print_exc()
            click.echo("error: an internal error occurred (a bug in vaultmesh); please report it with the "
                       "traceback above", err=True)
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def _wide(stream: Any) -> bool:
    """True when ``stream`` is not a terminal: then lines are printed whole, never wrapped at 80 columns."""
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


NOT_A_TTY_WIDTH = 10_000
"""Width given to rich when the output is a file or a pipe: wide enough that no table column is cut and no
line is wrapped; tables take only the width they need."""


def err_console() -> Any:
    """The stderr console for progress: whole lines (``soft_wrap``: never hard-wrapped mid-sentence)."""
    from rich.console import Console

    wide = _wide(sys.stderr)
    return Console(stderr=True, highlight=False, soft_wrap=True, width=NOT_A_TTY_WIDTH if wide else None)


def out_console() -> Any:
    """The stdout console for tables: a terminal's width, else wide enough for every column."""
    from rich.console import Console

    return Console(highlight=False, width=NOT_A_TTY_WIDTH if _wide(sys.stdout) else None)


def echo_json(doc: Any) -> None:
    """One JSON document on stdout (``--json``)."""
    import json

    click.echo(json.dumps(doc, indent=2))
