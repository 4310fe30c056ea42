"""The HTTP side: the httpx client, `fetch_heatmap` and `fetch_classifications`.

Each turns one request into an Outcome. Every answer is streamed and bounded: a body is refused
over a size limit by Content-Length and while it arrives, and is never decompressed past it.
Redirects are followed here, by hand, and only within the configured origin: httpx would
forward `X-Api-Key` to any host a redirect names (it strips only `Authorization`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import weakref
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import httpx

# httpcore asks `import sniffio` on every request and, when it is missing, pays a failing
# import each time (tools/bench/throughput.py measures it). Importing it here makes the
# dependency real: a broken install fails at start, not slowly.
import sniffio  # noqa: F401

from batchmap.config import DEFAULT_MAX_BODY
from batchmap.models import Classification, Failure, Meaning, Outcome
from batchmap.policy import (
    check_api_key,
    clean_text,
    failure_of,
    judge,
    read_classifications,
    redact,
    retry_after,
)
from batchmap.version import __version__

HEATMAP_PATH = "/api/classification/heatmap/"
CLASSIFICATIONS_PATH = "/api/classifications"
MAX_REDIRECTS = 5
MiB = 1024 * 1024
MAX_BODY_BYTES = DEFAULT_MAX_BODY  # a heatmap is tens of KiB; anything near this is not one
CLASSIFICATIONS_MAX_BYTES = 8 * MiB  # 100 classification objects with every model's results
ERROR_BODY_BYTES = 64 * 1024  # read of an error answer: enough for its message, then stop
MAX_IDENTIFIERS = 100  # identifAI's documented ceiling for one classifications request
_GZIP = frozenset({"gzip", "x-gzip"})
_GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_STEP = 256 * 1024  # bytes inflated per zlib call, so no call holds a big piece


_PROXIES: weakref.WeakKeyDictionary[httpx.AsyncClient, str] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Proxy:
    """The proxy the environment names for a base URL: its URL and where it was found."""

    url: str  # as given, possibly with credentials: never shown
    variable: str  # e.g. HTTPS_PROXY

    @property
    def shown(self) -> str:
        """scheme://host:port, without any user or password."""
        return _shown_origin(httpx.URL(self.url))

    @property
    def plain(self) -> bool:
        """True when the connection to the proxy itself is unencrypted."""
        return httpx.URL(self.url).scheme == "http"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: never through a proxy."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in ("localhost", "localhost.")


def choose_proxy(base_url: str, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy the standard variables (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) name
    for `base_url`; None for a loopback host, one NO_PROXY exempts, or when none is set."""
    env = os.environ if environ is None else environ
    url = httpx.URL(base_url)
    if is_loopback(url.host):
        return None
    found: dict[str, tuple[str, str]] = {}
    for name, value in env.items():  # lower case wins, as curl and urllib have it
        lowered = name.lower()
        if value and lowered.endswith("_proxy") and (name == lowered or lowered not in found):
            found[lowered] = (value, name)
    no_proxy = found.get("no_proxy", ("", ""))[0]
    if _exempt(url.host, no_proxy):
        return None
    for variable in (f"{url.scheme}_proxy", "all_proxy"):
        if variable in found:
            value, name = found[variable]
            return Proxy(value if "://" in value else f"http://{value}", name)
    return None


def _exempt(host: str, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: `*`, or names that match the host or a domain above it."""
    host = host.lower().strip("[]")
    for entry in no_proxy.lower().replace(" ", "").split(","):
        name = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        name = name.strip("[]").lstrip("*").lstrip(".")
        if entry == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


def _verify() -> ssl.SSLContext | bool:
    # trust_env is off (proxies are chosen above), so honour SSL_CERT_FILE/DIR here as httpx would.
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if not cafile and not capath:
        return True
    return ssl.create_default_context(cafile=cafile or None, capath=capath or None)


def make_client(
    base_url: str,
    *,
    api_key: str,
    timeout: float,
    concurrency: int,
    transport: httpx.AsyncBaseTransport | None = None,
    proxy: Proxy | None = None,
) -> httpx.AsyncClient:
    """A client that sends the key to `base_url` only and never follows redirects itself.

    The key is checked first (InputError, never echoing it), so it cannot fail every request.
    Proxies are only the one given (see `choose_proxy`): the environment is not read here.
    """
    key, _ = check_api_key(api_key)
    client = httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={"X-Api-Key": key, "User-Agent": f"batchmap/{__version__}"},
        timeout=timeout,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        transport=transport,
        proxy=None if proxy is None else proxy.url,
        trust_env=False,
        verify=_verify(),
    )
    if proxy is not None:
        _PROXIES[client] = proxy.shown
    return client


def heatmap_url_path(identifier: str) -> str:
    """The request path for an identifier, percent-encoded so it stays one path segment.

    `quote` leaves `.` alone, and a segment of `..` would be resolved away (RFC 3986 5.2.4),
    so dots are encoded too.
    """
    return HEATMAP_PATH + quote(identifier, safe="").replace(".", "%2E")


def classifications_path(identifiers: Sequence[str]) -> str:
    """`/api/classifications?identifiers[]=ID1&identifiers[]=ID2...`, each identifier encoded.

    The brackets stay literal as in identifAI's docs (PHP reads both spellings), which also
    keeps 100 identifiers of 64 characters inside an 8 KiB request line.
    """
    query = "&".join("identifiers[]=" + quote(identifier, safe="") for identifier in identifiers)
    return f"{CLASSIFICATIONS_PATH}?{query}"


@dataclass(frozen=True, slots=True)
class ClassificationsAnswer:
    """What one classifications request said.

    `outcome` is judged as for heatmaps (DONE for a 200 with the documented shape); `found`
    holds the asked identifiers the answer described; `unsupported` says why the endpoint
    looks missing or undocumented on this server, so the runner can stop asking it.
    """

    outcome: Outcome
    found: tuple[Classification, ...] = ()
    unsupported: str | None = None


@dataclass(frozen=True, slots=True)
class _Answer:
    """A complete answer whose body has been read within its limit."""

    status: int
    headers: httpx.Headers
    body: bytes


class _BodyRefused(Exception):
    """A body that cannot be used: too large, damaged or in an unknown encoding."""

    def __init__(self, response: httpx.Response, why: str) -> None:
        super().__init__(why)
        self.status = response.status_code
        self.headers = response.headers
        self.why = why


async def fetch_heatmap(
    client: httpx.AsyncClient,
    identifier: str,
    *,
    timeout: float,
    max_bytes: int = MAX_BODY_BYTES,
) -> Outcome:
    """GET one heatmap and judge the answer; network trouble becomes a RETRY outcome."""
    answer = await _exchange(
        client, heatmap_url_path(identifier), timeout=timeout, max_bytes=max_bytes
    )
    if isinstance(answer, Outcome):
        return answer
    content_type = answer.headers.get("content-type", "")
    verdict, error = judge(answer.status, answer.body, content_type)
    return Outcome(
        verdict,
        http_status=answer.status,
        error=_scrubbed(client, error),
        body=answer.body if verdict is Meaning.DONE else b"",
        headers=answer.headers,
        failure=failure_of(answer.status) if verdict is Meaning.RETRY else None,
        retry_after=_server_wait(answer),
    )


async def fetch_classifications(
    client: httpx.AsyncClient,
    identifiers: Sequence[str],
    *,
    timeout: float,
    max_bytes: int = CLASSIFICATIONS_MAX_BYTES,
) -> ClassificationsAnswer:
    """Ask identifAI's bulk read about up to 100 identifiers at once.

    404 and 405 on the route, and a 200 in a shape the docs do not describe, set `unsupported`;
    429, 5xx and network trouble are judged exactly as for heatmaps.
    """
    if not 0 < len(identifiers) <= MAX_IDENTIFIERS:
        raise ValueError(f"ask about 1 to {MAX_IDENTIFIERS} identifiers, not {len(identifiers)}")
    path = classifications_path(identifiers)
    answer = await _exchange(client, path, timeout=timeout, max_bytes=max_bytes)
    if isinstance(answer, Outcome):
        return ClassificationsAnswer(answer)
    status = answer.status
    if status == 200:
        found, problem = read_classifications(answer.body, asked=identifiers)
        if problem is None:
            return ClassificationsAnswer(
                Outcome(Meaning.DONE, http_status=200, headers=answer.headers), found
            )
        return _unsupported(answer, f"answered 200 with {problem}")
    if status in (404, 405):
        why = f"answered {status} for the whole request"
        if status == 404:
            why += (
                ": the route is missing here, or identifAI refuses a batch holding an unknown"
                " identifier"
            )
        return _unsupported(answer, why)
    if 200 <= status < 300:
        return _unsupported(answer, f"answered {status} instead of a JSON array")
    verdict, error = judge(status, answer.body, answer.headers.get("content-type", ""))
    outcome = Outcome(
        verdict,
        http_status=status,
        error=_scrubbed(client, error),
        headers=answer.headers,
        failure=failure_of(status) if verdict is Meaning.RETRY else None,
        retry_after=_server_wait(answer),
    )
    return ClassificationsAnswer(outcome)


def _unsupported(answer: _Answer, why: str) -> ClassificationsAnswer:
    message = f"the classifications endpoint {why}"
    outcome = Outcome(
        Meaning.FAILED, http_status=answer.status, error=message, headers=answer.headers
    )
    return ClassificationsAnswer(outcome, unsupported=message)


def _server_wait(answer: _Answer) -> float | None:
    """The validated Retry-After of a 429 or 5xx; other answers' is not a request to wait."""
    if answer.status == 429 or answer.status >= 500:
        return retry_after(answer.headers)
    return None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _scrubbed(client: httpx.AsyncClient, text: str | None) -> str | None:
    """`text` without the client's API key, whatever a server or a library put in it."""
    if text is None:
        return None
    return redact(text, client.headers.get("x-api-key"))


async def _exchange(
    client: httpx.AsyncClient, path: str, *, timeout: float, max_bytes: int
) -> _Answer | Outcome:
    """GET `path` under the base URL, following same-origin redirects, body read within limits.

    Returns the answer, or the Outcome that ends the request early (network trouble, a body
    refused, a redirect elsewhere). Error texts never hold a header value or the key.
    """
    base = client.base_url
    url = base.copy_with(raw_path=base.raw_path.rstrip(b"/") + path.encode("ascii"))
    origin = _origin(url)
    heard = False  # the server sent a status line: it is up, however slow its body
    last: httpx.Response | None = None
    try:
        async with asyncio.timeout(timeout):  # a total deadline: a trickling server can't stall us
            for _ in range(MAX_REDIRECTS + 1):
                # identity: a compressed body would cost CPU and need a bounded inflate.
                headers = {"Accept-Encoding": "identity"}
                async with client.stream("GET", url, headers=headers) as response:
                    heard = True
                    if not response.is_redirect:
                        return await _read(response, max_bytes=max_bytes)
                    # The redirect's own body is never read: only where it points matters.
                    last = response
                    target = response.url.join(response.headers.get("location", ""))
                    if _origin(target) != origin:
                        why = redirect_advice(target, path)
                        return Outcome(
                            Meaning.FAILED,
                            http_status=response.status_code,
                            error=_scrubbed(client, why),
                            headers=response.headers,
                            failure=Failure.REDIRECT,
                        )
                    url = target
    except _BodyRefused as refused:
        return Outcome(
            Meaning.RETRY,
            http_status=refused.status,
            error=_scrubbed(client, refused.why),
            headers=refused.headers,
            failure=Failure.BODY,
        )
    except httpx.InvalidURL:
        return Outcome(Meaning.FAILED, error="redirect with an unusable Location header")
    except (TimeoutError, httpx.TimeoutException) as error:
        if isinstance(error, httpx.ConnectTimeout):
            return _no_answer(Failure.CONNECT, f"could not connect within {timeout:g}s")
        if not heard and not isinstance(error, httpx.PoolTimeout):
            # Connected (or not) and never answered: as good as unreachable (issue 17, item 3).
            return _no_answer(Failure.SILENT, f"no answer within {timeout:g}s")
        return _no_answer(Failure.TIMEOUT, f"timed out after {timeout:g}s")
    except (httpx.ConnectError, httpx.ProxyError, httpx.UnsupportedProtocol) as error:
        said = _describe(error)
        if client in _PROXIES:
            said = f"through the proxy {_PROXIES[client]}: {said}"
        return _no_answer(Failure.CONNECT, _scrubbed(client, said))
    except httpx.LocalProtocolError:
        # Its message quotes the offending header, which may be the key: say nothing of it.
        return _no_answer(Failure.NETWORK, "the request could not be sent (an invalid header)")
    except httpx.TransportError as error:
        return _no_answer(Failure.NETWORK, _scrubbed(client, _describe(error)))
    assert last is not None
    where = _shown_origin(last.url)
    return Outcome(
        Meaning.FAILED,
        http_status=last.status_code,
        error=f"a redirect loop (more than {MAX_REDIRECTS} redirects within {where}): "
        "check --base-url",
        headers=last.headers,
        failure=Failure.REDIRECT,
    )


def _shown_origin(url: httpx.URL) -> str:
    """scheme://host:port with the port always written: often the port is what differs."""
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return clean_text(f"{url.scheme}://{host}:{port}", limit=120)


def redirect_advice(target: httpx.URL, path: str) -> str:
    """One line about a redirect to another origin: where it points and the --base-url to use.

    When the target keeps the request's path under another origin (http -> https, a moved
    host), the base URL to use is that origin plus the target's path prefix.
    """
    where = _shown_origin(target)
    asked = path.partition("?")[0]
    prefix = target.raw_path.decode("ascii", "replace").partition("?")[0]
    if prefix.endswith(asked):
        suggested = clean_text(where + prefix[: len(prefix) - len(asked)].rstrip("/"), limit=200)
        advice = f"use --base-url {suggested}"
    else:
        advice = "check --base-url"
    return f"the API redirects to {where} (another origin, not followed): {advice}"


def _no_answer(failure: Failure, error: str | None) -> Outcome:
    return Outcome(Meaning.RETRY, error=error, failure=failure)


def _describe(error: Exception) -> str:
    detail = clean_text(str(error), limit=160) or "connection closed"
    return f"{type(error).__name__}: {detail}"


async def _read(response: httpx.Response, *, max_bytes: int) -> _Answer:
    """The body of a final answer: a success's within `max_bytes` or refused; an error's cut short.

    An error answer's body is only read for its message, so it is cut at ERROR_BODY_BYTES
    instead of refused.
    """
    status, headers = response.status_code, response.headers
    if status in (204, 304) or status < 200:
        return _Answer(status, headers, b"")
    strict = 200 <= status < 300
    limit = max_bytes if strict else min(max_bytes, ERROR_BODY_BYTES)

    def refuse(why: str) -> _BodyRefused:
        return _BodyRefused(response, why)

    declared = _content_length(headers)
    if strict and declared is not None and declared > limit:
        raise refuse(f"body over the {_size(limit)} limit (Content-Length {declared})")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    chunks: AsyncIterator[bytes]
    if response.is_stream_consumed:
        # Built in memory (httpx.MockTransport with content=): httpx has read and decoded it.
        encoding, chunks = "identity", _once(response.content)
    else:
        chunks = response.aiter_raw()
    if encoding not in ("", "identity", "deflate", *_GZIP):
        if strict:
            shown = clean_text(encoding, limit=40)
            raise refuse(f"body in an unsupported content-encoding ({shown!r})")
        return _Answer(status, headers, b"")
    decoder = None if encoding in ("", "identity") else _Inflater(encoding, limit=limit)
    body = bytearray()
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if decoder is None:
                body += chunk
            else:
                decoder.feed(chunk)
            if received > limit:
                over = f"body over the {_size(limit)} limit (cut off after {_size(limit)})"
            elif decoder is not None and decoder.over:
                over = (
                    f"body over the {_size(limit)} limit once decompressed "
                    f"({encoding}, cut off after {_size(received)} received)"
                )
            else:
                continue
            if strict:
                raise refuse(over)
            break
        if decoder is not None:
            decoder.finish()
    except zlib.error:
        if strict:
            raise refuse(f"a damaged {encoding} body") from None
        return _Answer(status, headers, b"")
    content = bytes(body if decoder is None else decoder.out)
    return _Answer(status, headers, content[:limit])


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _content_length(headers: httpx.Headers) -> int | None:
    try:
        return int(headers.get("content-length", ""))
    except ValueError:
        return None


def _size(n: int) -> str:
    if n >= MiB:
        return f"{n // MiB} MiB" if n % MiB == 0 else f"{n / MiB:.1f} MiB"
    return f"{n} bytes"


class _Inflater:
    """gzip or deflate decoded into at most `limit` bytes (zlib's max_length), never more.

    `over` turns true when the data would inflate past the limit; what fits is in `out`.
    """

    def __init__(self, encoding: str, *, limit: int) -> None:
        self.limit = limit
        self.over = False
        self.out = bytearray()
        self._gzip = encoding in _GZIP
        self._wbits = 16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS
        self._z = zlib.decompressobj(self._wbits)
        self._started = False
        self._trailer = False

    def feed(self, data: bytes) -> None:
        while data and not self.over and not self._trailer:
            if self._z.eof:
                if not self._gzip:
                    raise zlib.error("data after the end of a deflate stream")
                if not _GZIP_MAGIC.startswith(data[:2]):
                    self._trailer = True  # padding after the last member, ignored as gzip(1) does
                    return
                self._z = zlib.decompressobj(self._wbits)  # gzip allows several members
            room = self.limit - len(self.out)
            try:
                piece = self._z.decompress(data, min(room + 1, _INFLATE_STEP))
            except zlib.error:
                if self._gzip or self._started:
                    raise
                # "deflate" is meant to be zlib-wrapped (RFC 9110 8.4.1.2); some servers send
                # it raw, which httpx accepts too.
                self._wbits = -zlib.MAX_WBITS
                self._z = zlib.decompressobj(self._wbits)
                self._started = True
                continue
            self._started = True
            if len(piece) > room:
                self.out += piece[:room]
                self.over = True
                return
            self.out += piece
            data = self._z.unused_data if self._z.eof else self._z.unconsumed_tail

    def finish(self) -> None:
        if not self.over and not self._z.eof:
            raise zlib.error("truncated compressed body")
