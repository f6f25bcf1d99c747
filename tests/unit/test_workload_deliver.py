"""Rendering secrets into the child's environment and files; the private secrets directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from vaultmesh.errors import SpecError
from vaultmesh.workload.deliver import SecretsDir, child_env, default_parent, render_env, render_files
from vaultmesh.workload.spec import parse_document

PLAN = parse_document({
    "env": {
        "API_TOKEN": {"kv": "secret/jobs/nightly", "field": "api_token"},
        "RETRIES": {"kv": "secret/jobs/nightly", "field": "retries"},
        "PGUSER": "db:database/creds/jobs-ro#username",
        "DATABASE_URL": {"db": "database/creds/jobs-ro", "template": "postgresql://${username}:${password}@db/app"},
    },
    "files": {"pg.json": "db:database/creds/jobs-ro", "conf/token": "kv:secret/jobs/nightly#api_token"},
})
VALUES = {
    "kv:secret/jobs/nightly": {"api_token": "t0k", "retries": 3},
    "db:database/creds/jobs-ro": {"username": "v-user", "password": "p'w d"},
}


def test_env_gets_fields_templates_and_non_strings_as_json() -> None:
    assert render_env(PLAN, VALUES) == {
        "API_TOKEN": "t0k", "RETRIES": "3", "PGUSER": "v-user", "DATABASE_URL": "postgresql://v-user:p'w d@db/app"}


def test_a_file_without_field_holds_the_whole_secret_as_json() -> None:
    files = render_files(PLAN, VALUES)
    assert json.loads(files["pg.json"]) == VALUES["db:database/creds/jobs-ro"]
    assert files["conf/token"] == "t0k"


def test_a_missing_field_names_the_fields_there_are_but_no_values() -> None:
    plan = parse_document({"env": {"X": "kv:secret/jobs/nightly#apitoken"}})
    with pytest.raises(SpecError) as exc:
        render_env(plan, VALUES)
    msg = str(exc.value)
    assert "secret/jobs/nightly (for X) has no field 'apitoken' (fields: api_token, retries)" in msg
    assert "t0k" not in msg


def test_the_child_environment_adds_secrets_and_the_directory() -> None:
    env = child_env({"PATH": "/bin", "VAULTMESH_SECRETS_DIR": "/stale"}, {"A": "1"}, None)
    assert env == {"PATH": "/bin", "A": "1"}
    assert child_env({}, {}, "/run/x")["VAULTMESH_SECRETS_DIR"] == "/run/x"


def test_the_secrets_directory_is_private_and_removed(tmp_path: Path) -> None:
    d = SecretsDir(str(tmp_path))
    d.write(render_files(PLAN, VALUES))
    assert stat.S_IMODE(d.path.stat().st_mode) == 0o700
    assert stat.S_IMODE((d.path / "conf").stat().st_mode) == 0o700
    for name in ("pg.json", "conf/token"):
        assert stat.S_IMODE((d.path / name).stat().st_mode) == 0o600
    d.write({"conf/token": "new"})  # replaced atomically, no temporary left behind
    assert (d.path / "conf" / "token").read_text() == "new"
    assert sorted(p.name for p in (d.path / "conf").iterdir()) == ["token"]
    d.remove()
    assert not d.path.exists()


def test_xdg_runtime_dir_is_used_only_when_private_and_ours(tmp_path: Path) -> None:
    private = tmp_path / "run"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    assert default_parent({"XDG_RUNTIME_DIR": str(private)}) == str(private)
    os.chmod(private, 0o755)
    assert default_parent({"XDG_RUNTIME_DIR": str(private)}) is None
    assert default_parent({}) is None


def test_the_child_does_not_inherit_an_operator_token() -> None:
    env = child_env({"PATH": "/bin", "BAO_TOKEN": "s.admin", "VAULT_TOKEN": "s.admin"}, {}, None)
    assert "BAO_TOKEN" not in env and "VAULT_TOKEN" not in env
    delivered = child_env({"BAO_TOKEN": "s.admin"}, {"BAO_TOKEN": "from-the-secrets-file"}, None)
    assert delivered["BAO_TOKEN"] == "from-the-secrets-file"
