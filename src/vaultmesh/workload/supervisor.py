"""``vaultmesh run``: log in, fetch, start the child with its secrets, keep them valid, revoke at exit.

Order of things::

    login + read every source     any refusal: one line, exit 125, the child is never started
    write files (0600 in 0700 dir), start the child with stdin/stdout/stderr inherited
    renewer thread                renews at ~2/3 TTL, logs in again near the max TTL, re-reads leases that
                                  cannot be renewed, rewrites the files, then tells the child (--on-change)
    the child exits               revoke every lease, then the token; remove the dir; exit with its code
    SIGTERM/SIGINT                forwarded to the child first; then as above when it has exited
    SIGHUP/SIGUSR1/SIGUSR2/...    forwarded
    run is SIGKILLed              the kernel kills the child (PR_SET_PDEATHSIG); the next run kills what is left
                                  of its process group and removes its directory; the mesh's reaper revokes
                                  its token and leases once its heartbeat stops (see ``workload.child``)

Without a terminal the child leads its own process group: signals go to the whole group, and what is left of
it when the child exits is stopped too (nothing the job started outlives it).

Exit codes follow ``env(1)``/``timeout(1)``: the child's code (128+N when it died of signal N), 125 when
``run`` itself failed, 126 when the command cannot be executed, 127 when it is not found.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from vaultmesh.errors import VaultmeshError
from vaultmesh.workload import child as tree
from vaultmesh.workload.deliver import SecretsDir, child_env, default_parent, render_env, render_files
from vaultmesh.workload.session import Renewer, Session
from vaultmesh.workload.spec import Delivery

EXIT_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

FORWARDED = ("SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT")
STOPPING = ("SIGTERM", "SIGINT")


@dataclass(frozen=True)
class OnChange:
    """What the child is told when a secret changed: nothing (files are rewritten), a signal, or a restart."""

    mode: str = "none"
    signal: int = 0

    @staticmethod
    def parse(text: str) -> OnChange:
        if text in ("none", "restart"):
            return OnChange(text)
        how, _, name = text.partition(":")
        if how == "signal" and name:
            sig_name = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
            sig = getattr(signal, sig_name, None)
            if isinstance(sig, signal.Signals) and sig not in (signal.SIGKILL, signal.SIGSTOP):
                return OnChange("signal", int(sig))
        raise VaultmeshError(f"--on-change {text!r}: use none, restart or signal:<NAME> (e.g. signal:HUP)")


class Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT before the child is running."""

    def __init__(self, signum: int) -> None:
        self.signum = signum


class Supervisor:
    def __init__(self, session: Session, plan: Delivery, command: Sequence[str], *,
                 on_change: OnChange = OnChange(), stop_timeout: float = 10.0,
                 environ: Mapping[str, str] | None = None, warn: Callable[[str], None] = print,
                 pass_env: Sequence[str] = ()) -> None:
        self.session = session
        self.plan = plan
        self.command = list(command)
        self.on_change = on_change
        self.stop_timeout = stop_timeout
        self.environ = dict(os.environ if environ is None else environ)
        self.pass_env = tuple(pass_env)
        self.warn = warn
        self.dir: SecretsDir | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.own_group = tree.own_group_wanted()
        """The child leads a process group of its own (no terminal): signals and the clean-up reach its tree."""
        self._child_lock = threading.Lock()
        self._stopping = False
        self._signum: int | None = None
        """The first stopping signal: the exit code is 128 + it when the child never ran."""
        self._no_raise = False
        self._restart_for: int | None = None
        self._fatal: BaseException | None = None
        self._renewer: Renewer | None = None

    # -- the whole life -----------------------------------------------------------------------------------

    def run(self) -> int:
        previous = self._install_signals()
        try:
            return self._run()
        except Stop as stop:
            return 128 + stop.signum
        finally:
            self._shutdown()
            self._restore_signals(previous)

    def _run(self) -> int:
        self.session.on_change = self._changed
        self.session.start()
        env = self._deliver()
        rc = self._spawn(env)
        if rc is not None:
            return rc
        self._renewer = Renewer(self.session, on_error=self._renewer_failed).start()
        while True:
            child = self.child
            assert child is not None
            rc = child.wait()
            if self.own_group:
                tree.stop_group(child.pid, min(self.stop_timeout, 5.0))
            with self._child_lock:
                restart = self._restart_for == child.pid and not self._stopping and self._fatal is None
                self._restart_for = None
                self.child = None
            if not restart:
                break
            # lock order is session -> child everywhere (the renewer's _changed holds the session lock)
            with self.session.lock:
                if self._stopping:
                    break
                spawned = self._spawn(self._deliver())
            if spawned is not None:
                return spawned
        if self._fatal is not None:
            raise self._fatal
        return 128 - rc if rc < 0 else rc

    def _shutdown(self) -> None:
        self._no_raise = True  # a signal now must not cut the revocations short (nor leave a traceback)
        if self._renewer is not None:
            self._renewer.stop()
        child = self.child
        if child is not None and child.poll() is None:  # our own failure while the child runs
            self._stop_child(child)
        self.session.close()
        if self.dir is not None:
            self.dir.remove()

    # -- delivery and the child -----------------------------------------------------------------------------

    def _deliver(self) -> dict[str, str]:
        values = self.session.values
        files = render_files(self.plan, values)
        secrets_env = render_env(self.plan, values)
        if self.dir is None:  # the run's own directory: its record for the sweep, and the secret files
            self.dir = SecretsDir(default_parent(self.environ))
        if files:
            self.dir.write(files)
        return child_env(self.environ, secrets_env, str(self.dir.path) if files else None,
                         pass_env=self.pass_env)

    def _spawn(self, env: dict[str, str]) -> int | None:
        """Start the child; an exit code when it cannot be started."""
        self._no_raise = True  # from here a stopping signal is remembered, never raised
        if self._stopping:  # it came while the secrets were being delivered: the child never starts
            return 128 + (self._signum or signal.SIGTERM)
        try:
            self.child = subprocess.Popen(self.command, env=env, preexec_fn=tree.die_with_parent(os.getpid()),
                                          process_group=0 if self.own_group else None)
            if self._stopping and self._signum is not None:  # it came during the fork: the child hears it
                self._send(self.child, self._signum)
        except FileNotFoundError:
            self.warn(f"{self.command[0]}: command not found")
            return EXIT_NOT_FOUND
        except (PermissionError, OSError) as err:
            self.warn(f"{self.command[0]}: cannot execute: {err.strerror or err}")
            return EXIT_CANNOT_EXECUTE
        if self.dir is not None:
            tree.RunRecord.of_self(self.child.pid if self.own_group else None).write(self.dir.path)
            tree.sweep(self.dir.path.parent, own=self.dir.path)
        return None

    def _send(self, child: subprocess.Popen[bytes], sig: int) -> None:
        """``sig`` to the child's whole group when it leads one, else to the child."""
        with contextlib.suppress(ProcessLookupError):
            if self.own_group:
                tree.signal_group(child.pid, sig)
            else:
                os.kill(child.pid, sig)

    def _changed(self, keys: tuple[str, ...]) -> None:
        """Runs in the renewer thread with the session lock held: rewrite files, then tell the child."""
        files = render_files(self.plan, self.session.values)
        if files and self.dir is not None:
            self.dir.write(files)
        with self._child_lock:
            child = self.child
            if child is None or child.poll() is not None or self._stopping:
                return
            if self.on_change.mode == "signal":
                self._send(child, self.on_change.signal)
            elif self.on_change.mode == "restart":
                self._restart_for = child.pid
                threading.Thread(target=self._stop_child, args=(child,), daemon=True).start()

    def _stop_child(self, child: subprocess.Popen[bytes]) -> None:
        self._send(child, signal.SIGTERM)
        try:
            child.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._send(child, signal.SIGKILL)
            child.wait()

    def _renewer_failed(self, err: BaseException) -> None:
        """A bug in the renewer: stop the child; the main thread then revokes and re-raises."""
        self._fatal = err
        child = self.child
        if child is not None:
            threading.Thread(target=self._stop_child, args=(child,), daemon=True).start()

    # -- signals ------------------------------------------------------------------------------------------

    def _install_signals(self) -> dict[int, object]:
        previous: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for name in (*STOPPING, *FORWARDED):
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, object]) -> None:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        stopping = signal.Signals(signum).name in STOPPING
        if stopping:
            self._stopping = True
            self._signum = self._signum or signum
        child = self.child
        if child is None:
            if stopping and not self._no_raise:
                # once, and only before the child ever ran: a signal must not cut the revocations short
                self._no_raise = True
                raise Stop(signum)
            return
        if signum == signal.SIGINT and not self.own_group and _terminal_sent_it():
            return  # Ctrl-C reached the child's process group already
        self._send(child, signum)


def _terminal_sent_it() -> bool:
    """True when we are the terminal's foreground process group (so the child got the key's signal too)."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def warn_line(message: str) -> None:
    print(f"vaultmesh run: {message}", file=sys.stderr, flush=True)
