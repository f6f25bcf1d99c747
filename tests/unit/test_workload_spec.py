"""The secrets file and the --secret / --secret-file flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vaultmesh.errors import SpecError
from vaultmesh.workload.spec import Source, Target, check_template, load_file, parse_document, parse_flag, parse_flags

NIGHTLY = """\
env:
  API_TOKEN: {kv: secret/jobs/nightly, field: api_token}
  PGUSER: {db: database/creds/jobs-ro, field: username}
  PGPASSWORD: {db: database/creds/jobs-ro, field: password}
  DATABASE_URL:
    db: database/creds/jobs-ro
    template: "postgresql://${username}:${password}@db:5432/app"
  LEGACY: kv:secret/jobs/nightly#legacy
files:
  api.json: {kv: secret/jobs/nightly}
  tls/key.pem: {unwrap: "file:/run/handoff/wrapped", field: key}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_the_example_file_parses_into_targets_in_order(tmp_path: Path) -> None:
    plan = load_file(write(tmp_path, "secrets.yaml", NIGHTLY))
    assert [(t.kind, t.name) for t in plan.targets] == [
        ("env", "API_TOKEN"), ("env", "PGUSER"), ("env", "PGPASSWORD"), ("env", "DATABASE_URL"), ("env", "LEGACY"),
        ("file", "api.json"), ("file", "tls/key.pem")]
    assert plan.targets[0] == Target("env", "API_TOKEN", Source("kv", "secret/jobs/nightly"), "api_token")
    assert plan.targets[3].template == "postgresql://${username}:${password}@db:5432/app"
    assert plan.has_files


def test_targets_naming_the_same_source_share_one_read_and_one_lease(tmp_path: Path) -> None:
    plan = load_file(write(tmp_path, "secrets.yaml", NIGHTLY))
    assert [s.key for s in plan.sources] == [
        "kv:secret/jobs/nightly", "db:database/creds/jobs-ro", "unwrap:file:/run/handoff/wrapped"]
    assert [t.name for t in plan.targets_of("db:database/creds/jobs-ro")] == ["PGUSER", "PGPASSWORD", "DATABASE_URL"]


def test_json_files_are_accepted_too(tmp_path: Path) -> None:
    doc = {"env": {"API_TOKEN": {"kv": "secret/jobs/nightly", "field": "api_token"}}}
    plan = load_file(write(tmp_path, "secrets.json", json.dumps(doc)))
    assert plan.targets[0].source.api_path() == "secret/data/jobs/nightly"


def test_kv_paths_put_data_after_the_mount_which_may_be_named_when_it_has_slashes() -> None:
    assert Source("kv", "secret/jobs/nightly").api_path() == "secret/data/jobs/nightly"
    plan = parse_document({"env": {"X": {"kv": "team/kv/app/cfg", "mount": "team/kv", "field": "x", "version": 3}}})
    src = plan.targets[0].source
    assert (src.api_path(), src.version, src.key) == ("team/kv/data/app/cfg", 3, "kv:team/kv/app/cfg@3")


def test_compact_flags_deliver_env_and_files() -> None:
    plan = parse_flags(["API_TOKEN=kv:secret/jobs/nightly#api_token"], ["pg.json=db:database/creds/jobs-ro"])
    assert plan.targets == (
        Target("env", "API_TOKEN", Source("kv", "secret/jobs/nightly"), "api_token"),
        Target("file", "pg.json", Source("db", "database/creds/jobs-ro"), None),
    )


def test_a_flag_may_not_repeat_what_the_file_declares(tmp_path: Path) -> None:
    plan = load_file(write(tmp_path, "s.yaml", NIGHTLY))
    with pytest.raises(SpecError, match="environment variable API_TOKEN is declared twice"):
        plan.merged(parse_flags(["API_TOKEN=kv:secret/other#x"]))


@pytest.mark.parametrize(("flag", "message"), [
    ("API_TOKEN", "expected NAME=SOURCE"),
    ("1X=kv:secret/a#b", "not a valid environment variable name"),
    ("X=vault:secret/a#b", "does not name a source"),
    ("X=kv:secret#b", "needs a mount and a secret path"),
    ("X=kv:secret/a#", "empty field"),
    ("X=db:database/roles/x", "should look like <mount>/creds/<role>"),
    ("X=kv:secret/../sys/x#y", "not a valid OpenBao path"),
    ("X=unwrap:secret/a", "env:<VAR> or file:<path>"),
    ("VAULTMESH_SECRETS_DIR=kv:secret/a#b", "set by vaultmesh run itself"),
])
def test_bad_flags_are_refused_with_the_reason(flag: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_flag(flag, "env")


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a//b", "."])
def test_files_stay_inside_the_private_directory(name: str) -> None:
    with pytest.raises(SpecError, match="relative path inside the secrets directory"):
        parse_flag(f"{name}=kv:secret/a#b", "file")


@pytest.mark.parametrize(("entry", "message"), [
    ({"kv": "secret/a", "fild": "x"}, "unknown key 'fild'"),
    ({"kv": "secret/a", "db": "database/creds/x"}, "exactly one source"),
    ({"field": "x"}, "exactly one source"),
    ({"kv": "secret/a", "field": "x", "template": "${x}"}, "either field or template"),
    ({"db": "database/creds/x", "version": 2}, "version applies to kv"),
    ({"kv": "secret/a", "version": 0}, "positive integer"),
    ({"kv": "secret/a", "template": "cost: $5"}, "literal"),
    ({"kv": 3}, "path string"),
    (["kv", "secret/a"], "expected a source"),
])
def test_bad_entries_are_refused_naming_the_entry(entry: object, message: str) -> None:
    with pytest.raises(SpecError, match=message) as exc:
        parse_document({"env": {"X": entry}}, source="s.yaml")
    assert str(exc.value).startswith("s.yaml: env.X: ")


def test_unknown_sections_are_refused() -> None:
    with pytest.raises(SpecError, match="unknown section 'environment'"):
        parse_document({"environment": {}})


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "s.yaml", "env:\n  A: kv:secret/a#b\n  B: {kv: secret/a, feld: x}\n")
    with pytest.raises(SpecError) as exc:
        load_file(p)
    assert str(exc.value).startswith(f"{p}:3: env.B: unknown key 'feld'")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "s.yaml", "env:\n  A: [unclosed\n")
    with pytest.raises(SpecError, match=r"s.yaml:\d+: invalid YAML"):
        load_file(p)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the secrets file"):
        load_file(tmp_path / "nope.yaml")


def test_an_empty_file_asks_for_nothing(tmp_path: Path) -> None:
    assert load_file(write(tmp_path, "s.yaml", "")).targets == ()


def test_templates_name_their_fields_and_escape_dollars() -> None:
    assert check_template("postgresql://${username}:${password}@h/$$x") == ["username", "password"]
