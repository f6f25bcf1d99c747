"""A write answered 404 is an error carrying the status and OpenBao's words; reads and DELETE keep 404 as absent."""

from __future__ import annotations

import pytest

from vaultmesh.api.client import decode
from vaultmesh.errors import EngineError

BODY = b'{"errors": ["1 error occurred:\\n\\t* unsupported path\\n\\n"]}'


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_write_answered_404_is_an_error_with_the_servers_words(method: str) -> None:
    with pytest.raises(EngineError) as exc:
        decode(404, {}, BODY, "https://n1", method, "sys/mounts/database")
    assert exc.value.status == 404
    assert "unsupported path" in str(exc.value)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_read_or_delete_answered_404_means_absent(method: str) -> None:
    assert decode(404, {}, b"", "https://n1", method, "secret/data/x").status == 404
