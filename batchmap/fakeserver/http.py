"""Just enough HTTP/1.1 for a test server: parse a request head, answer it or misbehave.

Hand-written on asyncio streams so that dropped, reset, late, trickled and truncated answers
happen exactly when asked, and so that it stays fast enough for benchmarks. The fake server
(server.py) and the tests' misbehaving servers (tests/hostile.py) both speak through it:

- `read_request` parses one request head (and skips its body), or raises `BadRequest`;
- an `Action` says what to do with a request: a `Reply` (status, headers, a body of bytes
  or an async iterator of chunks, late or trickled, its declared length free to lie),
  `Drop` the connection or `Reset` it;
- `perform` carries an action out and says whether the connection stays open.

listener.py accepts connections and runs this loop; a server that must write raw bytes
instead gets the request and the writer from it and writes what it likes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, replace
from http import HTTPStatus

from batchmap.fakeserver.limits import Headers

MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_LINGER_ZERO = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN
_NO_BODY = (204, 304)  # statuses that carry no body and no Content-Length (RFC 9110, 8.6)


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
    """An answer. `length` None: len(body) for bytes; for an iterator, no Content-Length and
    the body ends when the connection closes. A `length` longer than the body truncates it."""

    status: int = 200
    headers: Headers = ()
    body: bytes | AsyncIterable[bytes] = b""
    length: int | None = None
    delay: float = 0.0  # seconds before the status line
    trickle: float = 0.0  # seconds between pieces of the body
    piece: int = 1024  # bytes per piece when trickling
    close: bool = False  # close the connection after answering


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without answering, after `delay` seconds."""

    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Reset:
    """Reset the connection (TCP RST) without answering, after `delay` seconds."""

    delay: float = 0.0


Action = Reply | Drop | Reset


class BadRequest(Exception):
    """A request that cannot be parsed; answered with `status`, then the connection closes."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def json_reply(status: int, payload: object, *, headers: Headers = ()) -> Reply:
    """A JSON answer, as Laravel sends them."""
    content_type = ("Content-Type", "application/json")
    return Reply(status, (content_type, *headers), json.dumps(payload).encode())


def with_headers(reply: Reply, headers: Headers) -> Reply:
    """`reply` with `headers` added after its own."""
    return replace(reply, headers=(*reply.headers, *headers)) if headers else reply


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


def refusal(error: BadRequest) -> Reply:
    """The answer to a request that could not be parsed."""
    return json_reply(error.status, {"error": HTTPStatus(error.status).phrase})


def reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP reset, as a crashed proxy or a firewall would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    writer.transport.abort()


def encode_head(reply: Reply, *, length: int | None, keep_alive: bool) -> bytes:
    """The status line and headers: Content-Length `length` unless None, already given, or
    the status has no body; Connection: close unless `keep_alive`."""
    lines = [f"HTTP/1.1 {reply.status} {_PHRASES.get(reply.status, 'Unknown')}"]
    lines.extend(f"{name}: {value}" for name, value in reply.headers)
    named = any(name.lower() == "content-length" for name, _ in reply.headers)
    if length is not None and not named and reply.status not in _NO_BODY:
        lines.append(f"Content-Length: {length}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def perform(writer: asyncio.StreamWriter, action: Action, *, keep_alive: bool) -> bool:
    """Carry out one action; True if the connection stays open for another request."""
    if action.delay > 0:
        await asyncio.sleep(action.delay)
    if isinstance(action, Drop):
        return False
    if isinstance(action, Reset):
        reset(writer)
        return False
    body, length = action.body, action.length
    if isinstance(body, bytes) and length is None:
        length = len(body)
    if action.status in _NO_BODY:
        body, length = b"", 0
    keep = keep_alive and not action.close and length is not None
    head = encode_head(action, length=length, keep_alive=keep)
    if isinstance(body, bytes) and action.trickle <= 0:
        writer.write(head + body)  # one write: the fast path every plain answer takes
        await writer.drain()
        return keep and len(body) == length
    writer.write(head)
    sent = 0
    async for chunk in _pieces(body, action):
        writer.write(chunk)
        sent += len(chunk)
        await writer.drain()
    await writer.drain()
    return keep and sent == length


async def _pieces(body: bytes | AsyncIterable[bytes], reply: Reply) -> AsyncIterator[bytes]:
    """The body in the pieces it goes out in, trickled if asked."""
    chunks = _once(body) if isinstance(body, bytes) else body
    async for chunk in chunks:
        if reply.trickle <= 0:
            yield chunk
            continue
        for start in range(0, len(chunk), reply.piece):
            yield chunk[start : start + reply.piece]
            await asyncio.sleep(reply.trickle)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def path_and_query(target: str) -> tuple[str, str]:
    """The raw (still percent-encoded) path and query of a request target, without fragment."""
    path, _, query = target.partition("#")[0].partition("?")
    return path, query
