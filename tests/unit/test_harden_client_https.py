"""Plain http:// is refused at client construction, before any request; a missing CA file is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultmesh.api.client import EngineClient, make_ssl_context
from vaultmesh.errors import InsecureAddress, MissingCA
from vaultmesh.workload.session import make_client


class NeverSend:
    def send(self, *a: object, **k: object) -> tuple[int, dict[str, str], bytes]:
        raise AssertionError("no request may be made")

    def close(self) -> None:
        pass


def test_engine_client_refuses_an_http_address_and_names_its_source() -> None:
    with pytest.raises(InsecureAddress) as exc:
        EngineClient(["https://127.0.0.1:1", "http://127.0.0.1:2"], transport=NeverSend(),
                     addr_source="BAO_ADDR")
    assert "'http://127.0.0.1:2' from BAO_ADDR" in str(exc.value)
    assert "not https" in str(exc.value)


def test_workload_client_refuses_http_before_reading_the_ca(tmp_path: Path) -> None:
    with pytest.raises(InsecureAddress, match="from VAULT_ADDR"):
        make_client(["http://127.0.0.1:9"], ca_file=str(tmp_path / "absent.pem"), addr_source="VAULT_ADDR")


def test_a_missing_ca_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MissingCA) as exc:
        make_ssl_context(str(tmp_path / "absent.pem"))
    assert "absent.pem" in str(exc.value) and "\n" not in str(exc.value)


def test_https_addresses_are_accepted() -> None:
    EngineClient(["HTTPS://127.0.0.1:1/"], transport=NeverSend())
