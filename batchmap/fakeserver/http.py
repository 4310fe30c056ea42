"""Just enough HTTP/1.1 for the fake: parse a request head, write an answer or misbehave.

Hand-written on asyncio streams so that dropped, reset and truncated answers happen exactly
when asked, and so that it stays fast enough for benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass
from http import HTTPStatus

from batchmap.fakeserver.limits import Headers

MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_LINGER_ZERO = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head; bodies are read and thrown away."""

    method: str
    target: str
    version: str
    headers: dict[str, str]  # names lower-cased

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only if asked to keep it."""
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer, and how to misbehave while doing it."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: Headers = ()
    delay: float = 0.0
    drop: bool = False  # close the connection without answering
    reset: bool = False  # ... with a TCP reset instead of a clean close
    truncate: bool = False  # full Content-Length, half the body, then close


class BadRequest(Exception):
    """A request the fake cannot parse; answered with `status`, then the connection closes."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def json_reply(status: int, payload: object, *, headers: Headers = ()) -> Reply:
    """A JSON answer, as Laravel sends them."""
    return Reply(status, json.dumps(payload).encode(), "application/json", headers)


def encode_head(reply: Reply, *, keep_alive: bool) -> bytes:
    """The status line and headers; a 204 carries no Content-Length (RFC 9110, 8.6)."""
    lines = [f"HTTP/1.1 {reply.status} {_PHRASES[reply.status]}"]
    if reply.content_type is not None:
        lines.append(f"Content-Type: {reply.content_type}")
    if reply.status != 204:
        lines.append(f"Content-Length: {len(reply.body)}")
    lines.extend(f"{name}: {value}" for name, value in reply.headers)
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(head: bytes) -> Request:
    """Parse a request line and its headers; raises BadRequest(400) on anything malformed."""
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if line and not colon:
            raise BadRequest(400)
        if line:
            headers[name.strip().lower()] = value.strip()
    return Request(parts[0], parts[1], parts[2], headers)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None once the client has gone away."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # closed between requests or mid-head: nothing to answer
    except asyncio.LimitOverrunError:
        raise BadRequest(431) from None
    request = _parse_head(head)
    if "transfer-encoding" in request.headers:
        raise BadRequest(411)  # no chunked bodies: a GET-only API has nothing to read
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > _MAX_BODY:
        raise BadRequest(400)
    if int(length):
        await reader.readexactly(int(length))
    return request


def reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP reset, as a crashed proxy or a firewall would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    writer.transport.abort()


async def send(writer: asyncio.StreamWriter, reply: Reply, *, keep_alive: bool) -> bool:
    """Write a reply (or misbehave as it says); True if the connection stays open."""
    if reply.delay > 0:
        await asyncio.sleep(reply.delay)
    if reply.reset:
        reset(writer)
        return False
    if reply.drop:
        return False
    body = reply.body[: len(reply.body) // 2] if reply.truncate else reply.body
    writer.write(encode_head(reply, keep_alive=keep_alive) + body)
    await writer.drain()
    return keep_alive and not reply.truncate


def path_and_query(target: str) -> tuple[str, str]:
    """The raw (still percent-encoded) path and query of a request target, without fragment."""
    path, _, query = target.partition("#")[0].partition("?")
    return path, query
