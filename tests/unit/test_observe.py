"""Reading state: which reads are asked for, and what the parsers make of recorded OpenBao answers.

The recorded answers live in ``data/reconcile/playdream/*.json``: each file holds the read, the response
(``null`` for a 404), and for parser fixtures the parser name and its expected output. Together they are
the state of a mesh right after ``examples/playdream/mesh.yaml`` was applied.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from vaultmesh.reconcile import observe
from vaultmesh.reconcile.observe import ObservedState, Read, observed_state, reads_needed
from vaultmesh.reconcile.resources import Resource, ResourceKey, desired_resources, secret_values
from vaultmesh.spec.resources import ResourcesSpec

DATA = Path(__file__).parent / "data" / "reconcile" / "playdream"
EXAMPLE = Path(__file__).parents[2] / "examples" / "playdream" / "mesh.yaml"
KEY = b"k" * 32
ENV = {"VAULTMESH_PG_PASSWORD": "pw", "PLAYDREAM_NIGHTLY_API_TOKEN": "tok"}
CA = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUplaydreamtestca\n-----END CERTIFICATE-----\n"
PLACEHOLDERS = {"issuer_url": "https://127.0.0.1:8443", "ca_pem": CA}


def fixtures() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) | {"file": p.name} for p in sorted(DATA.glob("*.json"))]


def recorded_server() -> dict[Read, Any]:
    return {Read(**f["read"]): f["response"] for f in fixtures()}


def playdream_desired() -> list[Resource]:
    data = yaml.safe_load(EXAMPLE.read_text())
    spec = ResourcesSpec.model_validate({k: v for k, v in data.items() if k in ResourcesSpec.model_fields},
                                        context={"base_dir": EXAMPLE.parent})
    secrets = secret_values(spec, env=ENV, read_file=lambda p: "")
    return desired_resources(spec, secrets=secrets, hash_key=KEY, placeholders=PLACEHOLDERS)


def gather(desired: list[Resource], server: dict[Read, Any]) -> tuple[ObservedState, list[list[Read]]]:
    """The apply edge's loop, against a dict instead of a client."""
    responses: dict[Read, Any] = {}
    rounds = []
    while todo := reads_needed(desired, responses):
        rounds.append(todo)
        for read in todo:
            responses[read] = server.get(read)
    return observed_state(desired, responses), rounds


def as_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return as_plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    return value


# -- parsers ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", [f for f in fixtures() if "parser" in f], ids=lambda f: f["file"])
def test_parser_turns_the_recorded_answer_into_the_expected_state(fixture: dict[str, Any]) -> None:
    parse = getattr(observe, fixture["parser"])
    assert as_plain(parse(fixture["response"])) == fixture["expected"]


def test_durations_written_as_strings_by_the_server_become_seconds() -> None:
    body = observe.parse_auth_role({"data": {"token_ttl": "15m", "token_max_ttl": 3600.0, "ttl": "0"}})
    assert body == {"token_ttl": 900, "token_max_ttl": 3600, "ttl": 0}


def test_parsers_never_keep_secret_fields() -> None:
    body = observe.parse_db_connection({"data": {"connection_details": {"password": "pw", "username": "u"},
                                                 "plugin_name": "p"}})
    assert body == {"username": "u", "plugin_name": "p"}


def test_an_empty_list_answered_with_404_is_empty() -> None:
    assert observe.parse_list(None) == []


def test_kv_mounts_without_a_version_option_are_version_1() -> None:
    mounts = observe.parse_mounts({"data": {"kv/": {"type": "kv", "accessor": "kv_1", "options": None}}})
    assert mounts["kv"].body["options"] == {"version": "1"}


def test_mount_listing_visibility_defaults_to_hidden() -> None:
    mounts = observe.parse_mounts({"data": {"kv/": {"type": "kv", "accessor": "kv_1", "config": {}}}})
    assert mounts["kv"].body["config"]["listing_visibility"] == "hidden"


def test_pki_issuers_are_read_by_name() -> None:
    resp = {"data": {"keys": ["6a1f"], "key_info": {"6a1f": {"issuer_name": "root", "is_default": True}}}}
    assert observe.parse_pki_issuers(resp) == {"6a1f": "root"}


# -- the reads -------------------------------------------------------------------------------------------

def test_the_first_round_reads_the_root_only() -> None:
    assert reads_needed(playdream_desired(), {}) == [
        Read("GET", "", "sys/auth"), Read("GET", "", "sys/mounts"),
        Read("LIST", "", "sys/namespaces"), Read("LIST", "", "sys/policies/acl")]


def test_reading_the_recorded_mesh_converges_in_four_rounds_without_repeating_a_read() -> None:
    _, rounds = gather(playdream_desired(), recorded_server())
    reads = [r for batch in rounds for r in batch]
    assert len(rounds) == 4
    assert len(reads) == len(set(reads))


def test_the_order_of_the_desired_list_does_not_matter() -> None:
    forward, _ = gather(playdream_desired(), recorded_server())
    backward, _ = gather(playdream_desired()[::-1], recorded_server())
    assert backward == forward


def test_every_recorded_answer_is_asked_for() -> None:
    _, rounds = gather(playdream_desired(), recorded_server())
    assert {r for batch in rounds for r in batch} == set(recorded_server())


def test_nothing_is_read_inside_a_namespace_that_does_not_exist() -> None:
    _, rounds = gather(playdream_desired(), {})
    assert {r.namespace for batch in rounds for r in batch} == {""}


def test_children_of_a_mount_with_another_type_are_not_read() -> None:
    server = recorded_server()
    server[Read("GET", "", "sys/mounts")]["data"]["database/"]["type"] = "kv"
    _, rounds = gather(playdream_desired(), server)
    assert not [r for batch in rounds for r in batch if r.path.startswith("database/")]


def test_an_unmanaged_role_is_listed_but_not_read() -> None:
    server = recorded_server()
    server[Read("LIST", "", "auth/jwt/role")]["data"]["keys"].append("old")
    observed, rounds = gather(playdream_desired(), server)
    assert Read("GET", "", "auth/jwt/role/old") not in {r for batch in rounds for r in batch}
    assert observed.resources[ResourceKey("", "auth/jwt/role/old")].body == {}


def test_observed_state_knows_accessors_by_full_mount_path() -> None:
    observed, _ = gather(playdream_desired(), recorded_server())
    assert observed.accessors["jwt"] == "auth_jwt_5f2b8c1e"
    assert observed.accessors["sandbox/approle"] == "auth_approle_1b2c3d4e"


def test_a_missing_kv_seed_is_absent_from_the_state() -> None:
    server = recorded_server()
    server[Read("GET", "", "secret/metadata/jobs/nightly")] = None
    observed, _ = gather(playdream_desired(), server)
    assert ResourceKey("", "secret/data/jobs/nightly") not in observed.resources


def test_a_kv_v1_seed_is_found_by_listing_its_folder() -> None:
    spec = ResourcesSpec.model_validate({"secrets": {"kv": {"type": "kv", "version": 1,
                                                            "seed": {"app/db": {"pw": {"from_env": "PW"}}}}}})
    desired = desired_resources(spec, secrets=secret_values(spec, env={"PW": "x"}, read_file=str),
                                hash_key=KEY)
    server = {Read("GET", "", "sys/mounts"): {"data": {"kv/": {"type": "kv", "accessor": "kv_1",
                                                               "options": {"version": "1"}}}},
              Read("LIST", "", "kv/app"): {"data": {"keys": ["db", "cache"]}}}
    observed, _ = gather(desired, server)
    assert observed.resources[ResourceKey("", "kv/app/db")].kind == "kv_secret"


def test_observed_state_refuses_an_incomplete_set_of_answers() -> None:
    with pytest.raises(ValueError, match="reads still needed"):
        observed_state(playdream_desired(), {})
