"""The stdlib transport's own HTTP/1.1: bodies by Content-Length or chunked, keep-alive, one reconnect when the
server closed an idle connection, and errors as OSError. Against a scripted server on a loopback socket (plain
TCP: the TLS layer is the standard library's)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest

from vaultmesh.api.client import StdlibTransport, split_addr
from vaultmesh.errors import VaultmeshError

Reply = Callable[[bytes], bytes | None]
"""Given one request's bytes, the bytes to answer (None: close the connection without answering)."""


class Server:
    """Accepts connections; answers each request on it with the next reply of the script."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                buf = b""
                while self.replies:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    if b"\r\n\r\n" not in buf:
                        break
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(rest) < length:
                        rest += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                    buf = rest[length:]
                    answer = self.replies.pop(0)(self.requests[-1])
                    if answer is None:
                        break
                    conn.sendall(answer)

    def close(self) -> None:
        self.replies.clear()
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[list[Reply]], Server]]:
    servers: list[Server] = []

    def make(replies: list[Reply]) -> Server:
        servers.append(Server(replies))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def answer(body: bytes, *, status: str = "200 OK", extra: str = "") -> Reply:
    return lambda _: (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                      f"{extra}\r\n").encode() + body


def transport() -> StdlibTransport:
    return StdlibTransport(ssl.create_default_context())


def test_a_body_sized_by_content_length_and_headers_in_lower_case(serve: Callable[[list[Reply]], Server]) -> None:
    server = serve([answer(b'{"data": 1}', extra="X-Vault-Index: abc\r\n")])
    status, headers, body = transport().send("GET", server.addr, "/v1/secret/data/x", {"Accept": "application/json"},
                                             None, 5.0)
    assert (status, body, headers["x-vault-index"]) == (200, b'{"data": 1}', "abc")
    request = server.requests[0]
    assert request.startswith(b"GET /v1/secret/data/x HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}".encode() in request
    assert b"Content-Length" not in request


def test_a_post_sends_its_body_with_its_length(serve: Callable[[list[Reply]], Server]) -> None:
    server = serve([answer(b"{}")])
    transport().send("POST", server.addr, "/v1/auth/jwt/login", {"Content-Type": "application/json"},
                     b'{"role": "batch"}', 5.0)
    assert server.requests[0].endswith(b'Content-Length: 17\r\n\r\n{"role": "batch"}')


def test_a_chunked_body_is_reassembled(serve: Callable[[list[Reply]], Server]) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n")
    server = serve([lambda _: chunked, answer(b"again")])
    t = transport()
    assert t.send("GET", server.addr, "/v1/a", {}, None, 5.0)[2] == b"hello, world"
    assert t.send("GET", server.addr, "/v1/b", {}, None, 5.0)[2] == b"again"  # the connection was kept
    assert server.connections == 1


def test_no_body_for_204(serve: Callable[[list[Reply]], Server]) -> None:
    server = serve([lambda _: b"HTTP/1.1 204 No Content\r\n\r\n", answer(b"next")])
    t = transport()
    assert t.send("PUT", server.addr, "/v1/sys/leases/revoke", {}, b"{}", 5.0)[:2] == (204, {})
    assert t.send("GET", server.addr, "/v1/x", {}, None, 5.0)[2] == b"next"
    assert server.connections == 1


def test_an_idle_connection_the_server_closed_is_reopened_once(serve: Callable[[list[Reply]], Server]) -> None:
    server = serve([answer(b"first"), lambda _: None, answer(b"second")])
    t = transport()
    assert t.send("GET", server.addr, "/v1/a", {}, None, 5.0)[2] == b"first"
    assert t.send("GET", server.addr, "/v1/b", {}, None, 5.0)[2] == b"second"
    assert server.connections == 2


def test_connection_close_is_honoured(serve: Callable[[list[Reply]], Server]) -> None:
    server = serve([answer(b"one", extra="Connection: close\r\n"), answer(b"two")])
    t = transport()
    assert t.send("GET", server.addr, "/v1/a", {}, None, 5.0)[2] == b"one"
    assert t.send("GET", server.addr, "/v1/b", {}, None, 5.0)[2] == b"two"
    assert server.connections == 2


def test_a_fresh_connection_closed_without_an_answer_is_an_oserror(serve: Callable[[list[Reply]], Server]) -> None:
    server = serve([lambda _: None, lambda _: None])
    with pytest.raises(OSError):
        transport().send("GET", server.addr, "/v1/a", {}, None, 5.0)


def test_garbage_is_an_oserror(serve: Callable[[list[Reply]], Server]) -> None:
    server = serve([lambda _: b"SSH-2.0-OpenSSH\r\n\r\n"])
    with pytest.raises(OSError, match=r"not an HTTP/1\.x answer"):
        transport().send("GET", server.addr, "/v1/a", {}, None, 5.0)


def test_nothing_listening_is_an_oserror() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(OSError):
        transport().send("GET", f"http://127.0.0.1:{port}", "/v1/a", {}, None, 2.0)


def test_a_silent_server_times_out(serve: Callable[[list[Reply]], Server]) -> None:
    gate = threading.Event()

    def hang(_: bytes) -> bytes:
        gate.wait(5)
        return b""

    server = serve([hang])
    try:
        with pytest.raises(OSError):
            transport().send("GET", server.addr, "/v1/a", {}, None, 0.2)
    finally:
        gate.set()


def test_addresses_split_into_scheme_host_and_port() -> None:
    assert split_addr("https://127.0.0.1:8200") == ("https", "127.0.0.1", 8200)
    assert split_addr("https://vault.example") == ("https", "vault.example", 443)
    assert split_addr("HTTPS://[::1]:8200/") == ("https", "::1", 8200)


def test_a_token_with_a_line_break_cannot_add_a_header(serve: Callable[[list[Reply]], Server]) -> None:
    server = serve([answer(b"{}")])
    with pytest.raises(VaultmeshError, match="line break"):
        transport().send("GET", server.addr, "/v1/sys/health", {"X-Vault-Token": "s.x\r\nX-Evil: 1"}, None, 5.0)
    assert server.requests == []
