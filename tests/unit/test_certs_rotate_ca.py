"""The staged CA rotation as a plan (certs.ca_plan): each invariant, resuming from every intermediate state a run
can be interrupted in, refusals; the trust-bundle helpers of pki; which auth mounts would stop trusting the issuer."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from vaultmesh import pki
from vaultmesh.api.client import StdlibTransport, make_ssl_context
from vaultmesh.certs import ca_plan as cp
from vaultmesh.change.rotate_ca import stale_mounts

NAMES = ("seal", "node-1", "node-2", "node-3", "identity", "keeper")
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _listeners(by: str, *, upto: int | None = None, other: str = "old") -> tuple[cp.Listener, ...]:
    """Every listener issued by ``by``, or the first ``upto`` by ``by`` and the rest by ``other``."""
    n = len(NAMES) if upto is None else upto
    return tuple(cp.Listener(name, True, by if i < n else other) for i, name in enumerate(NAMES))


BEFORE = cp.CAView(("old",), "old", _listeners("old"))
"""A mesh before any rotation."""


def states() -> Iterator[tuple[str, cp.CAView, int]]:
    """Every state a rotation passes through, in order, with the index of the step a run resumes at there."""
    rec = replace(BEFORE, old="old", new="new")
    yield "made", replace(rec, new_ready=True), 1
    yield "bundle written, entry not reloaded", replace(rec, new_ready=True, bundle=("old", "new"),
                                                        entry_current=False), 1
    trusted = replace(rec, new_ready=True, bundle=("old", "new"))
    yield "trusted", trusted, 2
    yield "key moved, file not yet", replace(trusted, signer="new"), 2
    signing = replace(trusted, signer="new", bundle=("new", "old"), new_ready=False)
    yield "new CA signs", signing, 3
    # the file written again (its time is newer than the entry's start): not a reason to trust again
    yield "new CA signs, file newer than the entry", replace(signing, entry_current=False), 3
    for k in range(1, len(NAMES)):
        yield f"{k} leaves re-issued", replace(signing, listeners=_listeners("new", upto=k)), 3 + k
    reissued = replace(signing, listeners=_listeners("new"))
    yield "every leaf re-issued", reissued, 3 + len(NAMES)
    yield "old CA dropped, entry not reloaded", replace(reissued, bundle=("new",), entry_current=False), \
        3 + len(NAMES)
    dropped = replace(reissued, bundle=("new",))
    yield "old CA dropped", dropped, 4 + len(NAMES)


def test_the_plan_has_every_stage_in_order_and_a_reissue_per_listener() -> None:
    plan = cp.plan_rotation(BEFORE)
    assert [str(s) for s in plan.steps] == ["make-ca", "trust", "sign", *(f"reissue {n}" for n in NAMES),
                                            "drop", "finish"]
    assert plan.lines()[0] == "1. make-ca (then: ca-made)"


def test_a_mesh_with_no_rotation_starts_at_the_first_step() -> None:
    assert cp.resume(cp.plan_rotation(BEFORE), BEFORE) == 0


@pytest.mark.parametrize(("label", "view", "at"), list(states()), ids=[s[0] for s in states()])
def test_an_interrupted_rotation_resumes_at_the_first_step_not_reached(label: str, view: cp.CAView,
                                                                       at: int) -> None:
    plan = cp.plan_rotation(view)
    assert cp.resume(plan, view) == at
    assert cp.refusal(view) is None


@pytest.mark.parametrize(("label", "view", "at"), list(states()), ids=[s[0] for s in states()])
def test_every_invariant_before_the_resume_point_holds_and_the_one_there_does_not(label: str, view: cp.CAView,
                                                                                 at: int) -> None:
    plan = cp.plan_rotation(view)
    assert all(cp.holds(s, view) is None for s in plan.steps[:at])
    assert cp.holds(plan.steps[at], view) is not None


def test_a_finished_rotation_is_no_rotation() -> None:
    done = cp.CAView(("new",), "new", _listeners("new"))
    assert not done.rotating and cp.refusal(done) is None
    # run again, it makes another CA (as `certs rotate` renews every leaf again)
    assert cp.resume(cp.plan_rotation(done), done) == 0


def test_a_listener_serving_neither_ca_is_reissued() -> None:
    view = replace(cp.CAView(("new", "old"), "new", _listeners("new"), old="old", new="new"),
                   listeners=(cp.Listener("node-1", False, None),))
    assert cp.holds(cp.CAStep("reissue", "issued-by-new", "node-1"), view) == "serves a leaf of neither CA"


def test_stop_after_a_stage_runs_through_its_last_step() -> None:
    plan = cp.plan_rotation(BEFORE)
    assert cp.stop_index(plan, "trust") == 2
    assert cp.stop_index(plan, "restart") == 2  # no reader: the stage has no step
    assert cp.stop_index(plan, "reissue") == 3 + len(NAMES)
    assert cp.stop_index(plan, None) == len(plan.steps)


@pytest.mark.parametrize(("view", "words"), [
    (replace(BEFORE, bundle=()), "holds no certificate"),
    (replace(BEFORE, bundle=("old", "x")), "2 certificates but no rotation"),
    (replace(BEFORE, signer=None), "not the key of the CA"),
    (replace(BEFORE, old="old", new="new", signer="x", bundle=("old", "new")), "neither CA"),
    (replace(BEFORE, old="old", new="new", bundle=("old", "new")), "has no key on disk"),
    (replace(BEFORE, old="old", new="new", new_ready=True, bundle=("old", "new", "x")), "a CA of neither side"),
])
def test_refusals_are_one_line(view: cp.CAView, words: str) -> None:
    why = cp.refusal(view)
    assert why is not None and words in why and "\n" not in why


def test_the_new_ca_does_not_sign_while_an_auth_mount_trusts_only_the_old_one() -> None:
    view = replace(BEFORE, old="old", new="new", bundle=("old", "new"), stale_mounts=("jwt/",))
    why = cp.sign_refusal(view)
    assert why is not None and "jwt/" in why and "vaultmesh apply" in why
    assert cp.sign_refusal(replace(view, stale_mounts=())) is None


# -- pki: bundles ------------------------------------------------------------------------------------------

def _ca(name: str) -> pki.CertPair:
    return pki.create_ca(name, now=NOW, days=3650)


def test_a_bundle_lists_its_cas_in_order_and_knows_who_issued_a_leaf() -> None:
    old, new = _ca("old CA"), _ca("new CA")
    both = pki.certificates(pki.bundle(old.cert_pem, new.cert_pem, old.cert_pem))
    assert [c.subject for c in both] == [old.cert.subject, new.cert.subject]
    leaf = pki.issue_server_cert(new, "n", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=NOW, days=90)
    assert pki.issuer_of(leaf.cert, both) == new.cert
    assert pki.issuer_of(leaf.cert, [old.cert]) is None
    assert pki.key_belongs_to(new.key_pem, new.cert) and not pki.key_belongs_to(old.key_pem, new.cert)


def test_same_named_cas_are_told_apart_by_their_signature() -> None:
    a, b = _ca("vaultmesh m CA"), _ca("vaultmesh m CA")
    leaf = pki.issue_server_cert(b, "n", dns_names=["localhost"], ip_addresses=[], now=NOW, days=90)
    assert pki.serial_of(pki.issuer_of(leaf.cert, [a.cert, b.cert])) == pki.serial_of(b.cert)  # type: ignore[arg-type]


def test_stale_mounts_are_those_whose_ca_pem_lacks_the_new_ca() -> None:
    old, new = _ca("old"), _ca("new")
    configs = {"jwt/": {"oidc_discovery_ca_pem": old.cert_pem.decode()},
               "ok/": {"jwks_ca_pem": pki.bundle(old.cert_pem, new.cert_pem).decode()},
               "none/": {"oidc_discovery_ca_pem": ""}}
    assert stale_mounts(configs, pki.serial_of(new.cert)) == ("jwt/",)


# -- the client follows the CA file ------------------------------------------------------------------------

def _server(pair: pki.CertPair, tmp: Path) -> tuple[ssl.SSLContext, int, threading.Event]:
    import socket

    (tmp / "leaf.pem").write_bytes(pair.cert_pem)
    (tmp / "leaf-key.pem").write_bytes(pair.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "leaf.pem", tmp / "leaf-key.pem")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            except (OSError, ssl.SSLError):
                pass
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return ctx, sock.getsockname()[1], stop


def test_a_transport_made_on_a_ca_file_loads_it_again_when_it_changes(tmp_path: Path) -> None:
    old, new = _ca("old"), _ca("new")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(old.cert_pem)
    leaf = pki.issue_server_cert(new, "n", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=NOW, days=90)
    _, port, stop = _server(leaf, tmp_path)
    try:
        transport = StdlibTransport(make_ssl_context(str(ca_file)), str(ca_file))
        with pytest.raises(OSError):
            transport.send("GET", f"https://127.0.0.1:{port}", "/", {}, None, 2.0)
        ca_file.write_bytes(pki.bundle(old.cert_pem, new.cert_pem))
        os.utime(ca_file, ns=(1, 1))  # a changed mtime even within the clock's resolution
        status, _, _ = transport.send("GET", f"https://127.0.0.1:{port}", "/", {}, None, 2.0)
        assert status == 200
        fixed = StdlibTransport(make_ssl_context(None))  # no file named: nothing to follow (the system store)
        with pytest.raises(OSError):
            fixed.send("GET", f"https://127.0.0.1:{port}", "/", {}, None, 2.0)
    finally:
        stop.set()


# -- a transit seal: the nodes read the CA file at start only --------------------------------------------

READERS = (cp.Reader("node-1", False), cp.Reader("node-2", False, leader=True), cp.Reader("node-3", False))


def test_on_a_transit_seal_every_node_restarts_after_trust_the_leader_last() -> None:
    plan = cp.plan_rotation(replace(BEFORE, readers=READERS))
    assert [str(s) for s in plan.steps[:6]] == ["make-ca", "trust", "restart node-1", "restart node-3",
                                                "restart node-2", "sign"]
    assert cp.stop_index(plan, "restart") == 5


@pytest.mark.parametrize("restarted", [0, 1, 2, 3])
def test_a_rotation_cut_among_the_restarts_resumes_at_the_first_node_not_restarted(restarted: int) -> None:
    order = ["node-1", "node-3", "node-2"]
    readers = tuple(replace(r, read_new=r.name in order[:restarted]) for r in READERS)
    view = cp.CAView(("old", "new"), "old", _listeners("old"), old="old", new="new", new_ready=True,
                     readers=readers)
    plan = cp.plan_rotation(view)
    assert cp.resume(plan, view) == 2 + restarted
    if restarted < 3:
        assert cp.holds(plan.steps[2 + restarted], view) == "runs since before the CA file held the new CA"


def test_a_node_restarted_later_by_anyone_still_reads_the_new_ca() -> None:
    # past the drop, a node restarted by the keeper reads the new CA alone: still "read new"
    done = cp.CAView(("new",), "new", _listeners("new"), old="old", new="new",
                     readers=tuple(replace(r, read_new=True) for r in READERS))
    plan = cp.plan_rotation(done)
    assert cp.resume(plan, done) == len(plan.steps) - 1  # only finish is left
