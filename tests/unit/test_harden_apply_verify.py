"""apply records a write only once it reads it back (issue 8, finding 9): an acknowledged write that is not
there (a standby after a failover answered for it) is an error, not "Applied"."""

from __future__ import annotations

import json
from typing import Any

from vaultmesh.api.client import EngineClient, RetryPolicy
from vaultmesh.reconcile.apply import gather, unverified
from vaultmesh.reconcile.plan import plan_changes
from vaultmesh.reconcile.resources import desired_resources, secret_values
from vaultmesh.spec.resources import ResourcesSpec

POLICY = 'path "secret/data/x" {\n  capabilities = ["read"]\n}\n'


class Bao:
    """Policies only; ``keep`` False: writes are acknowledged and dropped."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.policies: dict[str, str] = {}

    def send(self, method: str, addr: str, target: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> tuple[int, dict[str, str], bytes]:
        path = target.split("?")[0].removeprefix("/v1/")
        name = path.removeprefix("sys/policies/acl/")
        if method in ("PUT", "POST") and path.startswith("sys/policies/acl/"):
            if self.keep:
                self.policies[name] = json.loads(body or b"{}")["policy"]
            return 204, {}, b""
        if method == "GET" and path.startswith("sys/policies/acl/") and name in self.policies:
            return 200, {}, json.dumps({"data": {"name": name, "policy": self.policies[name]}}).encode()
        if method == "GET" and path == "sys/policies/acl" and "list=true" in target:
            if not self.policies:
                return 404, {}, b'{"errors": []}'
            return 200, {}, json.dumps({"data": {"keys": sorted(self.policies)}}).encode()
        return 404, {}, b'{"errors": []}'

    def close(self) -> None:
        pass


def _setup(keep: bool) -> tuple[EngineClient, Any, Any, Any]:
    spec = ResourcesSpec.model_validate({"policies": {"p": {"hcl": POLICY}}})
    desired = desired_resources(spec, secrets=secret_values(spec, env={}, read_file=lambda p: ""),
                                hash_key=b"k" * 32)
    client = EngineClient(["https://a"], transport=Bao(keep), retry=RetryPolicy(deadline=0.1),
                          sleep=lambda s: None)
    plan = plan_changes(desired, gather(client, desired))
    [action] = [a for a in plan.executable() if a.kind == "policy"]
    return client, plan, action, desired


def test_an_acknowledged_write_that_is_not_there_is_caught() -> None:
    client, plan, action, desired = _setup(keep=False)
    client.request("PUT", "sys/policies/acl/p", {"policy": POLICY})
    assert unverified(client, desired, plan, {}, [action], timeout=0.3) == [action]


def test_a_write_that_landed_verifies() -> None:
    client, plan, action, desired = _setup(keep=True)
    client.request("PUT", "sys/policies/acl/p", {"policy": POLICY})
    assert unverified(client, desired, plan, {}, [action], timeout=0.3) == []
