"""The light entry point of the workload path: ``vaultmesh-run`` / ``python -m vaultmesh.workload.cli``.

    vaultmesh-run --role batch --secrets secrets.yaml -- python job.py
    python -m vaultmesh.workload.cli run --role batch --secret API_TOKEN=kv:secret/app#token -- ./job
    python -m vaultmesh.workload.cli leases reap --workload nightly

argparse, not click: this path is started thousands of times and its start-up is the product (see
docs/workloads.md); it imports the engine client, the workload package and, only for a YAML secrets file,
PyYAML. Nothing from cli/, reconcile/, render/, and none of pydantic, rich, httpx, cryptography, click.

The path to the login is kept short: ``run``'s usual arguments are read by ``fast_run_args`` (argparse and
its parser cost ~5 ms; anything it does not know exactly, ``--help`` included, goes to argparse), and the login
and reads are sent ahead (``send_ahead``) before the supervisor, session and lease book are imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace

from vaultmesh.errors import VaultmeshError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the path to the login (see send_ahead)
    import argparse

    from vaultmesh.api.client import EngineClient
    from vaultmesh.workload.reap import TokenInfo
    from vaultmesh.workload.spec import Delivery

    Args = argparse.Namespace | SimpleNamespace

IDENTITY_ENV = "VAULTMESH_IDENTITY_FILE"
ROLE_ENV = "VAULTMESH_ROLE"


def _addrs(values: Sequence[str] | None) -> list[str]:
    from vaultmesh.api.env import from_env

    raw = list(values or [])
    if not raw:
        env = from_env("ADDR")
        raw = [env] if env else []
    addrs = [a.strip() for v in raw for a in v.split(",") if a.strip()]
    if not addrs:
        raise VaultmeshError("no OpenBao address: pass --addr (repeatable, or comma-separated) or set BAO_ADDR")
    return addrs


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--addr", action="append", metavar="URL",
                   help="OpenBao node address; repeat or comma-separate to name every node (env BAO_ADDR, "
                        "VAULT_ADDR)")
    p.add_argument("--ca-cert", metavar="PEM", help="CA certificate of the mesh (env BAO_CACERT, VAULT_CACERT)")
    p.add_argument("--namespace", metavar="NS", help="OpenBao namespace (env BAO_NAMESPACE, VAULT_NAMESPACE)")
    p.add_argument("--deadline", type=_duration, default=15.0, metavar="DURATION",
                   help="How long one request keeps trying across the nodes (backoff capped at 1 s; default 15s, "
                        "which covers a leader election)")


def _duration(text: str) -> float:
    import argparse

    from vaultmesh.durations import parse_seconds

    try:
        return parse_seconds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _version_action(p: argparse.ArgumentParser) -> None:
    from vaultmesh import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s, version {__version__}",
                   help="Show the version and exit")


def build_parser(run_prog: str = "vaultmesh run") -> argparse.ArgumentParser:
    """``run_prog``: how ``run`` is named in its usage and ``--version`` (``vaultmesh-run`` for that script)."""
    import argparse

    parser = argparse.ArgumentParser(prog="vaultmesh", description="Workload commands of vaultmesh.")
    _version_action(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", prog=run_prog, help="Run a command with secrets from the mesh.",
                         description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _version_action(run)
    add_run_args(run)
    leases = sub.add_parser("leases", help="Leases of workloads.")
    lsub = leases.add_subparsers(dest="leases_command", required=True)
    reap = lsub.add_parser("reap", help="Revoke the tokens and leases a workload left behind (admin token).")
    reap.add_argument("--workload", required=True, help="Workload name (the service account in its identity)")
    reap.add_argument("--auth-mount", default=None, help="Only tokens from this JWT auth mount (default: any)")
    reap.add_argument("--role", default=None, help="Only tokens of this role")
    reap.add_argument("--dry-run", action="store_true", help="Show what would be revoked; revoke nothing")
    reap.add_argument("--json", action="store_true", help="The tokens as one JSON document on stdout")
    _connection_args(reap)
    return parser


RUN_HELP = """\
Log in with the workload's identity (JWT auth), fetch the declared secrets, run COMMAND with them,
keep them valid while it runs, and revoke them all when it exits.

secrets: --secrets FILE (YAML or .json) and/or --secret NAME=SOURCE (environment variable),
         --secret-file PATH=SOURCE (file in $VAULTMESH_SECRETS_DIR, 0600), where SOURCE is
         kv:<mount>/<path>#field | db:<mount>/creds/<role>#field | read:<path>#field |
         unwrap:env:<VAR>#field | unwrap:file:<path>#field   (no #field: the whole secret as JSON)
exit codes: the command's own; 125 when run failed; 126 not executable; 127 not found.
vaultmesh run --dir D (or vaultmesh --dir D run): --addr and --ca-cert from the mesh in state dir D.
"""


def add_run_args(p: argparse.ArgumentParser) -> None:
    import argparse

    p.add_argument("--role", default=os.environ.get(ROLE_ENV), help="JWT auth role to log in as (env VAULTMESH_ROLE)")
    p.add_argument("--identity-file", default=None, metavar="PATH",
                   help="File holding the identity token (JWT), re-read on every login (env VAULTMESH_IDENTITY_FILE)")
    p.add_argument("--auth-mount", default="jwt", help="Path of the JWT auth mount (default: jwt)")
    p.add_argument("--secrets", metavar="FILE", help="Secrets file: YAML, or JSON when it ends in .json")
    p.add_argument("--secret", action="append", default=[], metavar="NAME=SOURCE",
                   help="An environment variable from a source, e.g. API_TOKEN=kv:secret/jobs/nightly#api_token")
    p.add_argument("--secret-file", action="append", default=[], metavar="PATH=SOURCE",
                   help="A file in the private secrets dir, e.g. pg.json=db:database/creds/jobs-ro")
    p.add_argument("--on-change", default="none", metavar="HOW",
                   help="When a secret changes: none (files are rewritten), signal:HUP (any signal), restart")
    p.add_argument("--stop-timeout", type=_duration, default=10.0, metavar="DURATION",
                   help="On restart, SIGKILL the child this long after SIGTERM (default 10s)")
    p.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                   help="Hand this variable of run's environment to the child (repeatable; NAME or PREFIX_*). "
                        "The child otherwise gets PATH, HOME, LANG, LC_*, TZ, TERM, USER, LOGNAME, SHELL, TMPDIR, "
                        "PWD and its secrets only")
    p.add_argument("-v", "--verbose", action="store_true", help="Log logins, renewals and re-reads to stderr")
    _connection_args(p)
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]")


_RUN_VALUES = {"--role": "role", "--identity-file": "identity_file", "--auth-mount": "auth_mount",
               "--secrets": "secrets", "--on-change": "on_change", "--stop-timeout": "stop_timeout",
               "--ca-cert": "ca_cert", "--namespace": "namespace", "--deadline": "deadline"}
_RUN_LISTS = {"--secret": "secret", "--secret-file": "secret_file", "--pass-env": "pass_env", "--addr": "addr"}
_RUN_FLAGS = {"-v": "verbose", "--verbose": "verbose"}
_RUN_DURATIONS = frozenset({"stop_timeout", "deadline"})
DIR_OPTION = "--dir"
"""``vaultmesh run --dir D``: the click CLI's, not argparse's (the entry point hands such a ``run`` to click,
which gives ``run`` the ``--addr`` and ``--ca-cert`` of the mesh in D)."""
_TAKES_VALUE = frozenset({*_RUN_VALUES, *_RUN_LISTS, DIR_OPTION})


def split_option(argv: Sequence[str], option: str) -> tuple[list[str], list[str]]:
    """The values ``option`` has among ``run``'s own arguments (those before its command; ``--dir D`` or
    ``--dir=D``), and the arguments without it. Pure: an option's value is never taken for the command."""
    values: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--" or tok == "-" or not tok.startswith("-"):
            break
        name, eq, inline = tok.partition("=")
        width = 2 if name in _TAKES_VALUE and not eq and i + 1 < len(argv) else 1
        if name == option and (eq or width == 2):
            values.append(inline if eq else argv[i + 1])
        else:
            rest += argv[i:i + width]
        i += width
    return values, rest + list(argv[i:])


def fast_run_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """``run``'s arguments (those after ``run``) as ``add_run_args`` would parse them, without argparse; None
    for anything it does not know exactly (a prefix of an option, ``--help``, a missing or bad value, ...),
    which argparse then parses and reports in its own words."""
    args = SimpleNamespace(command="run", role=os.environ.get(ROLE_ENV), identity_file=None, auth_mount="jwt",
                           secrets=None, secret=[], secret_file=[], on_change="none", stop_timeout=10.0,
                           pass_env=[], verbose=False, addr=None, ca_cert=None, namespace=None, deadline=15.0,
                           argv=[])
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--" or not tok.startswith("-") or tok == "-":
            args.argv = list(argv[i:])
            return args
        name, eq, inline = tok.partition("=")
        if name in _RUN_FLAGS and not eq:
            setattr(args, _RUN_FLAGS[name], True)
            i += 1
            continue
        dest = _RUN_VALUES.get(name) or _RUN_LISTS.get(name)
        if dest is None:
            return None
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            value, i = argv[i + 1], i + 2
        else:
            return None
        if dest in _RUN_DURATIONS:
            from vaultmesh.durations import parse_seconds

            try:
                setattr(args, dest, parse_seconds(value))
            except ValueError:
                return None
        elif name in _RUN_LISTS:
            setattr(args, dest, [*(getattr(args, dest) or []), value])
        else:
            setattr(args, dest, value)
    return args


EXIT_FAILED = 125
"""``run`` itself failed (``supervisor.EXIT_FAILED``; here too so that an argument error needs no import of it)."""

STOPPING = ("SIGTERM", "SIGINT")


def _warn_line(message: str) -> None:
    """``supervisor.warn_line``'s format, for errors found before the supervisor is imported."""
    print(f"vaultmesh run: {message}", file=sys.stderr, flush=True)


class _Stopped(BaseException):
    """SIGTERM/SIGINT after the login was sent ahead and before the supervisor took the signals over."""

    def __init__(self, signum: int) -> None:
        self.signum = signum


class _SignalGuard:
    """From the moment a login is sent ahead until the supervisor installs its own handlers, a stopping signal
    stops ``run`` cleanly: what was fetched is revoked (``client.close``), the child never starts, exit 128+N,
    as the supervisor does for a signal before the child runs. Restored when ``run`` is done."""

    def __init__(self) -> None:
        import signal
        import threading

        self.armed = threading.current_thread() is threading.main_thread()
        self.previous: dict[int, object] = {}
        if self.armed:
            for name in STOPPING:
                sig = getattr(signal, name)
                self.previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.armed:
            self.armed = False
            raise _Stopped(signum)

    def restore(self) -> None:
        import signal

        self.armed = False
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _on_change_valid(text: str) -> bool:
    """What ``supervisor.OnChange.parse`` accepts, checked without importing the supervisor: a login is sent
    ahead only for a run that will not stop at its arguments."""
    import signal

    if text in ("none", "restart"):
        return True
    how, _, name = text.partition(":")
    name = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
    sig = getattr(signal, name, None)
    return how == "signal" and isinstance(sig, signal.Signals) and sig not in (signal.SIGKILL, signal.SIGSTOP)


def send_ahead(client: EngineClient, plan: Delivery, *, role: str, auth_mount: str, identity_path: str) -> bool:
    """Log in and read every source in a thread while ``run`` imports the rest of itself; the session's own
    identical requests take the answers (``EngineClient.prefetch``). Not for a plan with wrapped secrets: the
    session checks their wrapping tokens before it logs in, and unwraps them last. True when started."""
    from vaultmesh.api.client import Ahead

    if any(s.kind == "unwrap" for s in plan.sources):
        return False
    try:
        with open(identity_path, encoding="utf-8") as f:
            jwt = f.read().strip()
    except OSError:
        return False  # the session reports it, in its words
    if not jwt:
        return False
    reads, seen = [], set()
    for source in plan.sources:
        params = {"version": str(source.version)} if source.version is not None else None
        key = (source.api_path(), source.version)
        if key not in seen:
            seen.add(key)
            reads.append(Ahead("GET", source.api_path(), params=params, consistent=True))
    client.prefetch(Ahead("POST", f"auth/{auth_mount.strip('/')}/login", {"role": role, "jwt": jwt}), reads)
    return True


def run_command(args: Args) -> int:
    command = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    try:
        if not command:
            raise VaultmeshError("no command to run: put it after --, e.g. vaultmesh run --role batch -- ./job")
        if not args.role:
            raise VaultmeshError("no role: pass --role or set VAULTMESH_ROLE")
        identity_path = args.identity_file or os.environ.get(IDENTITY_ENV)
        if not identity_path:
            raise VaultmeshError(f"no identity token: pass --identity-file or set {IDENTITY_ENV}")
        from vaultmesh.workload.spec import Delivery, load_file, parse_flags

        plan = load_file(args.secrets) if args.secrets else Delivery()
        plan = plan.merged(parse_flags(args.secret, args.secret_file))
        client = _client(args, light=True)
    except VaultmeshError as err:
        _warn_line(str(err))
        return EXIT_FAILED

    guard = _SignalGuard()
    try:
        if _on_change_valid(args.on_change):
            send_ahead(client, plan, role=args.role, auth_mount=args.auth_mount, identity_path=identity_path)
        return _supervise(args, client, plan, command, identity_path)
    except _Stopped as stop:  # before the supervisor had the signals: nothing ran, close() revokes
        return 128 + stop.signum
    finally:
        guard.restore()
        client.close()


def _supervise(args: Args, client: EngineClient, plan: Delivery, command: list[str],
               identity_path: str) -> int:
    from vaultmesh.workload import supervisor as sv
    from vaultmesh.workload.session import IdentityFile, Session, WorkloadTransport

    assert client.transport is not None
    client.transport = WorkloadTransport(client.transport)
    try:
        on_change = sv.OnChange.parse(args.on_change)
    except VaultmeshError as err:
        sv.warn_line(str(err))
        return sv.EXIT_FAILED
    verbose = args.verbose

    def log(level: str, message: str) -> None:
        if verbose or level == "warning":
            sv.warn_line(message)

    labels = {s.key: "for " + ", ".join(t.label for t in plan.targets_of(s.key)) for s in plan.sources}
    session = Session(client, role=args.role, identity=IdentityFile(identity_path), auth_mount=args.auth_mount,
                      sources=plan.sources, labels=labels, log=log)
    supervisor = sv.Supervisor(session, plan, command, on_change=on_change, stop_timeout=args.stop_timeout,
                               pass_env=args.pass_env,
                               warn=sv.warn_line)
    try:
        return supervisor.run()
    except VaultmeshError as err:
        sv.warn_line(str(err))
        return sv.EXIT_FAILED
    except Exception as err:  # a bug: everything was revoked on the way out
        import traceback

        traceback.print_exc()
        sv.warn_line(f"internal error ({type(err).__name__}); everything obtained was revoked; please report it")
        return sv.EXIT_FAILED


def _client(args: Args, token: str | None = None, *, light: bool = False) -> EngineClient:
    """The workload's client (``session.make_client``). ``light``: without importing the session (and the lease
    book) first, for ``run``, which sends its login ahead; ``_supervise`` then wraps the transport in the
    session's ``WorkloadTransport`` before the session makes a request of its own."""
    from vaultmesh.api.client import EngineClient, RetryPolicy, StdlibTransport, make_ssl_context, require_https
    from vaultmesh.api.env import from_env

    addrs = _addrs(args.addr)
    ca_file = args.ca_cert or from_env("CACERT")
    namespace = args.namespace or from_env("NAMESPACE")
    retry = RetryPolicy(deadline=args.deadline)
    if light:
        require_https(addrs)
        client = EngineClient(addrs, ca_file=ca_file, namespace=namespace, retry=retry,
                              transport=StdlibTransport(make_ssl_context(ca_file), ca_file))
    else:
        from vaultmesh.workload.session import make_client

        client = make_client(addrs, ca_file=ca_file, namespace=namespace, retry=retry)
    client.token = token
    return client


def reap_lines(workload: str, found: Sequence[TokenInfo], *, dry_run: bool) -> list[str]:
    """``leases reap``'s report: one line per token, then a summary line."""
    verb = "would revoke" if dry_run else "revoked"
    return [f"{verb} token {info.accessor} ({info.display_name}, {info.path}, expires {info.expire_time})"
            for info in found] + [f"{verb} {len(found)} token(s) of workload {workload} and the leases they created"]


def reap_json(workload: str, found: Sequence[TokenInfo], *, dry_run: bool) -> dict[str, object]:
    """``leases reap --json``: the same, as one document (accessors only, never a token)."""
    return {"workload": workload, "dry_run": dry_run, "revoked": 0 if dry_run else len(found),
            "tokens": [{"accessor": i.accessor, "display_name": i.display_name, "path": i.path,
                        "namespace": i.namespace, "expire_time": i.expire_time} for i in found]}


def reap_command(args: Args) -> int:
    from vaultmesh.api.env import from_env
    from vaultmesh.errors import report
    from vaultmesh.workload.reap import reap

    try:
        token = from_env("TOKEN")
        if not token:
            raise VaultmeshError("leases reap needs an admin token in BAO_TOKEN (or VAULT_TOKEN)",
                                 hint="eval \"$(vaultmesh env)\"")
        with _client(args, token) as client:
            found = reap(client, args.workload, auth_mount=args.auth_mount, role=args.role, dry_run=args.dry_run)
    except VaultmeshError as err:
        return report(err)
    if args.json:
        import json

        print(json.dumps(reap_json(args.workload, found, dry_run=args.dry_run), indent=2))
    else:
        print("\n".join(reap_lines(args.workload, found, dry_run=args.dry_run)))
    return 0


def main(argv: Sequence[str] | None = None, *, run_prog: str = "vaultmesh run") -> int:
    """``vaultmesh run ...`` / ``vaultmesh leases reap ...`` without click."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        fast = fast_run_args(argv[1:])
        if fast is not None:
            return run_command(fast)
    args = build_parser(run_prog).parse_args(argv)
    if args.command == "run":
        return run_command(args)
    return reap_command(args)


def run_main(argv: Sequence[str] | None = None) -> int:
    """The ``vaultmesh-run`` console script: ``vaultmesh-run [options] -- COMMAND``."""
    return main(["run", *(sys.argv[1:] if argv is None else argv)], run_prog="vaultmesh-run")


if __name__ == "__main__":
    sys.exit(main())
