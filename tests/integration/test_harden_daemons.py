"""Daemons carry nothing of the operator's environment, and the password node 1 was started with opens
nothing (issue 8, finding 8)."""

from __future__ import annotations

import psutil
import pytest

from vaultmesh.errors import EngineError
from vaultmesh.layout import ADMIN_USER
from vaultmesh.render.node import ADMIN_PASSWORD_ENV

from .conftest import MeshHandle

pytestmark = pytest.mark.integration

SENTINEL = "VAULTMESH_TEST_SENTINEL_SECRET"


def test_no_daemon_inherits_the_operators_environment_and_the_bootstrap_password_is_dead(
        make_mesh, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(SENTINEL, "do-not-leak-4b1d")
    monkeypatch.setenv("BAO_TOKEN", "s.operator-token")
    handle: MeshHandle = make_mesh()
    pids = handle.pids()
    assert {"node-1", "node-2", "node-3", "identity"} <= set(pids)
    handed = None
    for name, pid in pids.items():
        environ = psutil.Process(pid).environ()
        assert SENTINEL not in environ, name
        assert "BAO_TOKEN" not in environ, name
        if name == "node-1":
            handed = environ.get(ADMIN_PASSWORD_ENV)
        else:
            assert ADMIN_PASSWORD_ENV not in environ, name
    assert handed, "node 1 was started with the bootstrap password (self-initialisation needs it)"
    current = (handle.dir / "admin" / "password").read_text().strip()
    assert current != handed
    assert not (handle.dir / "admin" / "password.handed").exists()
    client = handle.mesh.client()
    with pytest.raises(EngineError):
        client.login("userpass", {"password": handed}, user=ADMIN_USER)
    auth = client.login("userpass", {"password": current}, user=ADMIN_USER)
    client.write("auth/token/revoke-self", {}, token=auth["client_token"])
