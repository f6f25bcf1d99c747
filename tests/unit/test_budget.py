"""Lease budgets: what the file declares, which counts breach them, and which quota brakes a request."""

from __future__ import annotations

from typing import Any

from vaultmesh.reconcile.budget import Budget, breaches, budgets, count_leases, covering_quotas, explain_refusal
from vaultmesh.spec.load import parse_spec
from vaultmesh.spec.resources import ResourcesSpec

FILE = """\
auth:
  jwt:
    type: jwt
    config: {jwks_url: "https://issuer.test/jwks"}
    roles:
      batch: {bound_audiences: [vaultmesh], lease_budget: 40}
      web: {bound_audiences: [vaultmesh], lease_budget: 10}
      free: {bound_audiences: [vaultmesh]}
  approle:
    type: approle
    roles:
      ci: {}
secrets:
  database:
    type: database
    connections:
      pg: {connection_url: "postgresql://{{username}}:{{password}}@db.test/app"}
    roles:
      ro: {db_name: pg, creation_statements: ["CREATE ROLE x"], lease_budget: 20}
      rw: {db_name: pg, creation_statements: ["CREATE ROLE x"]}
namespaces:
  team-a:
    secrets:
      db:
        type: database
        connections:
          pg: {connection_url: "postgresql://{{username}}:{{password}}@db.test/a"}
        roles:
          ro: {db_name: pg, creation_statements: ["CREATE ROLE x"], lease_budget: 5}
quotas:
  rate_limit:
    logins: {path: auth/jwt, rate: 5}
    ci-logins: {path: auth/approle, rate: 2, role: ci, block_interval: 30s}
    creds: {path: 'database/creds/*', rate: 10}
    exact: {path: database/creds/rw, rate: 1}
    team: {path: team-a, rate: 50}
    everything: {rate: 500, interval: 1m}
"""


def spec() -> ResourcesSpec:
    return parse_spec(FILE)


def test_each_budget_names_its_lease_prefix_and_limit() -> None:
    got = {(b.namespace, b.prefix, b.limit, b.unit) for b in budgets(spec())}
    assert got == {("", "auth/jwt/login/", 50, "tokens"), ("", "database/creds/ro/", 20, "credentials"),
                   ("team-a", "db/creds/ro/", 5, "credentials")}


def test_jwt_roles_of_one_mount_share_one_budget_since_token_leases_carry_no_role() -> None:
    (jwt,) = [b for b in budgets(spec()) if b.unit == "tokens"]
    assert jwt.what == "jwt roles batch, web on auth/jwt"
    assert jwt.sources == (("auth", "jwt", "roles", "batch", "lease_budget"),
                           ("auth", "jwt", "roles", "web", "lease_budget"))


def test_a_file_without_budgets_has_none() -> None:
    assert budgets(parse_spec("")) == []


def test_the_count_key_carries_the_namespace() -> None:
    assert {b.key for b in budgets(spec())} == {"auth/jwt/login/", "database/creds/ro/", "team-a/db/creds/ro/"}


def test_only_counts_above_the_limit_are_breaches_one_sentence_each() -> None:
    found = breaches(budgets(spec()), {"auth/jwt/login/": 51, "database/creds/ro/": 20, "team-a/db/creds/ro/": 9})
    assert found == [
        "jwt roles batch, web on auth/jwt holds 51 live tokens under auth/jwt/login/, over its lease_budget of 50 "
        "(auth.jwt.roles.batch.lease_budget, auth.jwt.roles.web.lease_budget)",
        "database role db/ro holds 9 live credentials under team-a/db/creds/ro/, over its lease_budget of 5 "
        "(namespaces.team-a.secrets.db.roles.ro.lease_budget)"]


def test_a_budget_without_a_count_is_not_judged() -> None:
    assert breaches(budgets(spec()), {}) == []


class FakeClient:
    """``list`` answers from a tree of lease ids, as ``LIST sys/leases/lookup/...`` does."""

    def __init__(self, tree: dict[str, list[str]]) -> None:
        self.tree = tree
        self.calls: list[tuple[str, Any]] = []

    def list(self, path: str, **kw: Any) -> list[str]:
        self.calls.append((path, kw.get("namespace")))
        return self.tree.get(path, [])


def test_count_leases_lists_the_prefix_in_its_namespace_and_follows_folders() -> None:
    client = FakeClient({"sys/leases/lookup/db/creds/ro/": ["a1", "b2", "old/"],
                         "sys/leases/lookup/db/creds/ro/old/": ["c3"]})
    budget = Budget("team-a", "db/creds/ro/", 5, "database role db/ro", "credentials", ())
    assert count_leases(client, budget) == 3  # type: ignore[arg-type]
    assert client.calls[0] == ("sys/leases/lookup/db/creds/ro/", "team-a")


def test_count_leases_of_an_empty_prefix_is_zero() -> None:
    budget = Budget("", "database/creds/ro/", 5, "database role database/ro", "credentials", ())
    assert count_leases(FakeClient({}), budget) == 0  # type: ignore[arg-type]


# -- which quota applies ---------------------------------------------------------------------------------

def test_the_most_specific_quota_comes_first_as_openbao_picks_it() -> None:
    s = spec()
    assert covering_quotas(s, "", "auth/approle/login", role="ci") == ["ci-logins", "everything"]
    assert covering_quotas(s, "", "auth/jwt/login", role="batch") == ["logins", "everything"]
    assert covering_quotas(s, "", "database/creds/rw") == ["exact", "creds", "everything"]
    assert covering_quotas(s, "", "database/creds/ro") == ["creds", "everything"]
    assert covering_quotas(s, "", "database/config/pg") == ["everything"]
    assert covering_quotas(s, "team-a", "db/creds/ro") == ["team", "everything"]


def test_a_role_quota_covers_only_logins_with_that_role() -> None:
    s = spec()
    assert covering_quotas(s, "", "auth/approle/role/ci", role="ci") == ["everything"]
    assert covering_quotas(s, "", "auth/approle/login") == ["everything"]
    assert covering_quotas(s, "", "auth/approle/login", role="other") == ["everything"]


def test_a_mount_quota_does_not_reach_a_namespace_with_a_mount_of_the_same_name() -> None:
    text = FILE.replace("namespaces:\n  team-a:\n    secrets:\n      db:", "namespaces:\n  team-a:\n    secrets:\n"
                        "      database:")
    assert covering_quotas(parse_spec(text), "team-a", "database/creds/ro") == ["team", "everything"]


def test_a_refusal_names_the_quota_openbao_does_not() -> None:
    error = ('no OpenBao node could serve POST /v1/auth/approle/login within 15 s (https://127.0.0.1:1: 429 '
             'request path "auth/approle/login": rate limit quota exceeded)')
    said = explain_refusal(spec(), error, path="auth/approle/login", role="ci")
    assert said is not None and said.startswith(
        "auth/approle/login was refused by rate-limit quota 'ci-logins' (2 requests per 1s per client address "
        "on auth/approle, role ci, then blocks 30s): no OpenBao node")
    said = explain_refusal(spec(), error, path="auth/jwt/login", role="batch")
    assert said is not None and "rate-limit quota 'logins' (5 requests per 1s" in said
    assert explain_refusal(spec(), "OpenBao refused POST /v1/auth/jwt/login: 400 invalid audience",
                           path="auth/jwt/login") is None


def test_a_refusal_by_a_quota_outside_the_file_says_so() -> None:
    said = explain_refusal(parse_spec(""), "429 rate limit quota exceeded", path="auth/userpass/login/admin")
    assert said == ("auth/userpass/login/admin was refused by a rate-limit quota the mesh file does not declare: "
                    "429 rate limit quota exceeded")
