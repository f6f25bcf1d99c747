"""The keeper reaps in every namespace: a login nobody renews, made at a JWT mount inside a namespace, is
revoked within the reap interval (issue 9's reaper, beyond the root namespace)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.polling import eventually
from vaultmesh.errors import EngineError

from .conftest import MeshHandle
from .workloads import apply_file, mesh_issuer

pytestmark = pytest.mark.integration

REAP_BOUND = 15 + 2 * 5 + 5


def test_a_silent_login_in_a_namespace_is_revoked_with_its_lease(make_mesh: Callable[..., MeshHandle]) -> None:
    handle = make_mesh()
    with handle.client() as admin:
        apply_file(handle, admin, "namespaced")
        jwt = mesh_issuer(handle).token("ghost")
        auth = (admin.request("POST", "auth/jwt/login", {"role": "batch", "jwt": jwt}, token=None,
                              namespace="team-a").data or {})["auth"]
        token = auth["client_token"]

        def leases() -> list[str]:
            return admin.list("sys/leases/lookup/auth/jwt/login/", namespace="team-a")

        assert len(leases()) == 1
        t0 = time.monotonic()
        eventually(lambda: leases() == [], timeout=REAP_BOUND, interval=0.5)
        print(f"reaped {time.monotonic() - t0:.1f} s after the login")
        with pytest.raises(EngineError):
            admin.request("GET", "auth/token/lookup-self", token=token, namespace="team-a")
    status = json.loads((handle.dir / "keeper" / "status.json").read_text())
    assert any("login lease of team-a/auth/jwt" in line for line in status["recent"]), status["recent"]
