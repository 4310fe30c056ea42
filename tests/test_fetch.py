"""One request, judged: encoding, redirects and the key, network errors (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import pytest

from batchmap.errors import InputError
from batchmap.fetch import (
    CLASSIFICATIONS_MAX_BYTES,
    MAX_BODY_BYTES,
    MAX_IDENTIFIERS,
    ClassificationsAnswer,
    classifications_path,
    fetch_classifications,
    fetch_heatmap,
    make_client,
)
from batchmap.models import Failure, Meaning, Outcome
from tests.pngs import tiny_png

KEY = "secret-key-123"
Handler = Callable[[httpx.Request], httpx.Response]


def fetch(
    handler: Handler,
    identifier: str = "abc",
    *,
    base: str = "https://api.test",
    max_bytes: int = MAX_BODY_BYTES,
    key: str = KEY,
) -> Outcome:
    async def go() -> Outcome:
        client = make_client(
            base, api_key=key, timeout=5, concurrency=1, transport=httpx.MockTransport(handler)
        )
        async with client:
            return await fetch_heatmap(client, identifier, timeout=5, max_bytes=max_bytes)

    return asyncio.run(go())


class Chunks(httpx.AsyncByteStream):
    """A response body that arrives in pieces, counting how many the client pulled."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


def streamed(status: int, chunks: Sequence[bytes], **headers: str) -> tuple[Handler, Chunks]:
    body = Chunks(chunks)
    fields = {name.replace("_", "-"): value for name, value in headers.items()}
    return (lambda request: httpx.Response(status, headers=fields, stream=body)), body


@pytest.mark.parametrize(
    ("identifier", "raw_path"),
    [
        ("abc", b"/api/classification/heatmap/abc"),
        ("..", b"/api/classification/heatmap/%2E%2E"),
        ("../../x", b"/api/classification/heatmap/%2E%2E%2F%2E%2E%2Fx"),
        ("a?b#c", b"/api/classification/heatmap/a%3Fb%23c"),
        ("100%", b"/api/classification/heatmap/100%25"),
        ("é x", b"/api/classification/heatmap/%C3%A9%20x"),
    ],
)
def test_the_identifier_stays_one_encoded_path_segment(identifier: str, raw_path: bytes) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    assert fetch(handler, identifier).verdict is Meaning.NO_HEATMAP
    assert seen[0].url.raw_path == raw_path
    assert seen[0].headers["x-api-key"] == KEY


def test_a_base_url_with_a_path_prefix_is_kept() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(204)

    fetch(handler, base="https://api.test/v2/")
    assert seen[0].raw_path == b"/v2/api/classification/heatmap/abc"


def test_a_same_origin_redirect_is_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/"):
            return httpx.Response(302, headers={"location": "/moved/abc"})
        return httpx.Response(200, content=tiny_png(), headers={"content-type": "image/png"})

    outcome = fetch(handler)
    assert outcome.verdict is Meaning.DONE
    assert outcome.body == tiny_png()


@pytest.mark.parametrize(
    "location", ["https://evil.test/steal", "http://api.test/x", "https://api.test:8443/x"]
)
def test_the_key_never_follows_a_redirect_to_another_origin(location: str) -> None:
    hosts: list[tuple[str, str, int | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append((request.url.scheme, request.url.host, request.url.port))
        return httpx.Response(301, headers={"location": location})

    outcome = fetch(handler)
    assert outcome.verdict is Meaning.FAILED
    assert outcome.error is not None and "(another origin, not followed)" in outcome.error
    assert outcome.failure is Failure.REDIRECT  # about the address: the runner stops on a run
    assert ":443" in outcome.error or ":8443" in outcome.error or ":80" in outcome.error
    assert KEY not in outcome.error
    assert hosts == [("https", "api.test", None)]


def test_a_redirect_loop_ends() -> None:
    outcome = fetch(lambda request: httpx.Response(302, headers={"location": "/again"}))
    assert outcome.verdict is Meaning.FAILED and "redirect loop" in (outcome.error or "")
    assert outcome.failure is Failure.REDIRECT and "https://api.test:443" in (outcome.error or "")


def test_an_upgrade_to_https_names_the_base_url_to_use() -> None:
    def upgrade(request: httpx.Request) -> httpx.Response:
        target = request.url.copy_with(scheme="https", port=8443)
        return httpx.Response(301, headers={"location": str(target)})

    outcome = fetch(upgrade, base="http://api.test:8080/prefix")
    assert outcome.error == (
        "the API redirects to https://api.test:8443 (another origin, not followed): "
        "use --base-url https://api.test:8443/prefix"
    )


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("")],
)
def test_network_trouble_is_transient(error: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    outcome = fetch(handler)
    assert outcome.verdict is Meaning.RETRY
    assert outcome.http_status is None and outcome.error


def test_rate_limit_headers_reach_the_outcome() -> None:
    headers = {"retry-after": "3", "x-ratelimit-limit": "60", "x-ratelimit-remaining": "0"}
    outcome = fetch(lambda request: httpx.Response(429, headers=headers))
    assert outcome.verdict is Meaning.RATE_LIMITED
    assert outcome.headers["Retry-After"] == "3"


def test_a_server_that_never_finishes_is_cut_off_by_the_total_timeout() -> None:
    async def go() -> Outcome:
        async def stall(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(30)
            return httpx.Response(204)

        client = make_client(
            "https://api.test", api_key=KEY, timeout=5, concurrency=1,
            transport=httpx.MockTransport(stall),
        )  # fmt: skip
        async with client:
            return await fetch_heatmap(client, "abc", timeout=0.05)

    outcome = asyncio.run(go())
    assert outcome.verdict is Meaning.RETRY
    assert outcome.error == "no answer within 0.05s"
    assert outcome.failure is Failure.SILENT  # no status line: counts like a refused connection


# --------------------------------------------------------------------------- bounded bodies


def test_a_body_over_the_limit_by_content_length_is_refused_unread() -> None:
    handler, body = streamed(200, [b"x" * 100] * 20, content_length="2000")
    outcome = fetch(handler, max_bytes=1000)
    assert outcome.verdict is Meaning.RETRY and outcome.failure is Failure.BODY
    assert outcome.error == "body over the 1000 bytes limit (Content-Length 2000)"
    assert outcome.http_status == 200 and body.pulled == 0


def test_a_body_over_the_limit_without_length_is_cut_off_while_streaming() -> None:
    handler, body = streamed(200, [b"x" * 100] * 1000)
    outcome = fetch(handler, max_bytes=1000)
    assert outcome.failure is Failure.BODY
    assert outcome.error == "body over the 1000 bytes limit (cut off after 1000 bytes)"
    assert body.pulled == 11


def test_the_default_limit_is_32_mib() -> None:
    handler, _ = streamed(200, [], content_length=str(MAX_BODY_BYTES + 1))
    assert fetch(handler).error == f"body over the 32 MiB limit (Content-Length {2**25 + 1})"


def test_identity_is_asked_for_and_a_heatmap_at_the_limit_passes() -> None:
    png = tiny_png()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Chunks([png[:10], png[10:]]))

    outcome = fetch(handler, max_bytes=len(png))
    assert outcome.verdict is Meaning.DONE and outcome.body == png
    assert seen[0].headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),  # raw deflate, seen in the wild
        ("GZIP", lambda data: gzip.compress(data[:20]) + gzip.compress(data[20:])),  # 2 members
        ("gzip", lambda data: gzip.compress(data) + bytes(100)),  # padded, as gzip(1) tolerates
    ],
)
def test_a_compressed_heatmap_is_decoded(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    png = tiny_png()
    packed = compress(png)
    handler, _ = streamed(200, [packed[:7], packed[7:]], content_encoding=encoding)
    outcome = fetch(handler)
    assert outcome.verdict is Meaning.DONE and outcome.body == png


def test_a_compressed_body_is_never_inflated_past_the_limit() -> None:
    packed = gzip.compress(bytes(1024 * 1024))  # 1 KiB that inflates to 1 MiB
    handler, _ = streamed(200, [packed], content_encoding="gzip")
    outcome = fetch(handler, max_bytes=4096)
    assert outcome.verdict is Meaning.RETRY and outcome.failure is Failure.BODY
    assert outcome.error is not None
    assert outcome.error.startswith("body over the 4096 bytes limit once decompressed (gzip")


@pytest.mark.parametrize(
    ("encoding", "body", "error"),
    [
        ("br", b"whatever", "body in an unsupported content-encoding ('br')"),
        ("gzip, gzip", b"whatever", "body in an unsupported content-encoding ('gzip, gzip')"),
        ("zstd\x1b[2J", b"x", "body in an unsupported content-encoding ('zstd [2j')"),
        ("gzip", b"not gzip at all", "a damaged gzip body"),
        ("gzip", gzip.compress(tiny_png(), mtime=0)[:-12], "a damaged gzip body"),
    ],
)
def test_an_undecodable_body_is_a_transient_body_failure(
    encoding: str, body: bytes, error: str
) -> None:
    handler, _ = streamed(200, [body], content_encoding=encoding)
    outcome = fetch(handler)
    assert outcome.verdict is Meaning.RETRY and outcome.failure is Failure.BODY
    assert outcome.error == error


def test_an_error_answer_with_a_huge_body_keeps_its_message_and_is_not_refused() -> None:
    message = json.dumps({"error": "Image not found"}).encode()
    handler, body = streamed(404, [message + b" " * 65536] * 1000, content_length="100000000")
    outcome = fetch(handler)
    assert outcome.verdict is Meaning.FAILED and outcome.error is not None
    assert outcome.error.startswith("HTTP 404") and body.pulled <= 2


# --------------------------------------------------------------------------- failure kinds


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), Failure.CONNECT),
        (httpx.ConnectTimeout("slow handshake"), Failure.CONNECT),
        (httpx.UnsupportedProtocol("ftp"), Failure.CONNECT),
        (httpx.ReadTimeout("slow"), Failure.SILENT),  # before the status line
        (httpx.PoolTimeout("busy"), Failure.TIMEOUT),
        (httpx.RemoteProtocolError("Server disconnected"), Failure.NETWORK),
        (httpx.ReadError("Connection reset by peer"), Failure.NETWORK),
        (httpx.LocalProtocolError("Illegal header value"), Failure.NETWORK),
    ],
)
def test_every_retry_names_its_failure(error: Exception, failure: Failure) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    outcome = fetch(handler)
    assert outcome.verdict is Meaning.RETRY and outcome.failure is failure
    assert outcome.http_status is None and outcome.error


@pytest.mark.parametrize(
    ("status", "verdict", "failure"),
    [
        (500, Meaning.RETRY, Failure.SERVER),
        (503, Meaning.RETRY, Failure.SERVER),
        (408, Meaning.RETRY, Failure.SERVER),
        (429, Meaning.RATE_LIMITED, None),
        (404, Meaning.FAILED, None),
    ],
)
def test_answers_carry_their_failure_kind_and_validated_wait(
    status: int, verdict: Meaning, failure: Failure | None
) -> None:
    outcome = fetch(lambda request: httpx.Response(status, headers={"retry-after": "7"}))
    assert outcome.verdict is verdict and outcome.failure is failure
    assert outcome.retry_after == (7.0 if status in (429, 500, 503) else None)


# --------------------------------------------------------------------------- the key


def test_the_key_is_checked_before_any_request() -> None:
    with pytest.raises(InputError) as refused:
        fetch(lambda request: httpx.Response(204), key="secret key")
    assert "secret" not in str(refused.value)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["x-api-key"])
        return httpx.Response(204)

    fetch(handler, key=f"  {KEY}\n")
    assert seen == [KEY]


def test_a_library_error_quoting_the_header_never_reaches_the_outcome() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError(f"Illegal header value b'{KEY}'")

    assert KEY not in (fetch(handler).error or "")


@pytest.mark.parametrize(
    "raise_or_answer",
    [
        lambda: httpx.Response(500, text=f"upstream said: bad key {KEY}"),
        lambda: httpx.Response(404, json={"message": f"no image for {KEY.upper()}"}),
        lambda: httpx.Response(302, headers={"location": f"https://{KEY}.evil.test/"}),
        lambda: httpx.Response(200, text="<html>", headers={"content-type": f"text/{KEY}"}),
    ],
)
def test_an_echoed_key_is_redacted_from_every_error(
    raise_or_answer: Callable[[], httpx.Response],
) -> None:
    outcome = fetch(lambda request: raise_or_answer())
    assert outcome.error is not None
    assert KEY not in outcome.error.lower() and "[api key]" in outcome.error


def test_a_network_error_quoting_the_key_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError(f"proxy closed the tunnel for {KEY}")

    outcome = fetch(handler)
    assert outcome.error == "ReadError: proxy closed the tunnel for [api key]"


# --------------------------------------------------------------------------- classifications

IDS = ["a" * 64, "b" * 64, "c/d?e&f=g h"]


def ask(
    handler: Handler,
    identifiers: Sequence[str] = IDS,
    *,
    max_bytes: int = CLASSIFICATIONS_MAX_BYTES,
) -> ClassificationsAnswer:
    async def go() -> ClassificationsAnswer:
        client = make_client(
            "https://api.test/v1/",
            api_key=KEY,
            timeout=5,
            concurrency=1,
            transport=httpx.MockTransport(handler),
        )
        async with client:
            return await fetch_classifications(client, identifiers, timeout=5, max_bytes=max_bytes)

    return asyncio.run(go())


def test_the_bulk_request_lists_each_identifier_encoded() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    answer = ask(handler)
    assert answer.outcome.verdict is Meaning.DONE and answer.found == ()
    assert answer.unsupported is None
    assert seen[0].url.raw_path == (
        b"/v1/api/classifications?identifiers[]=" + b"a" * 64 + b"&identifiers[]=" + b"b" * 64
        + b"&identifiers[]=c%2Fd%3Fe%26f%3Dg%20h"
    )  # fmt: skip
    assert seen[0].url.params.get_list("identifiers[]") == IDS
    assert seen[0].headers["x-api-key"] == KEY


@pytest.mark.parametrize("count", [0, 101])
def test_a_batch_holds_1_to_100_identifiers(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 100"):
        ask(lambda request: httpx.Response(200, json=[]), [str(i) for i in range(count)])


def test_a_documented_answer_gives_the_asked_classifications() -> None:
    items = [
        {"identifier": "b" * 64, "has_heatmap": False, "verdict": {"classification": "human"}},
        {"identifier": "z" * 64, "has_heatmap": False},
        {"identifier": "c/d?e&f=g h", "has_heatmap": True, "status": "new"},
    ]
    answer = ask(lambda request: httpx.Response(200, json=items))
    assert answer.outcome.verdict is Meaning.DONE and answer.unsupported is None
    assert [(c.identifier, c.has_heatmap, c.verdict, c.status) for c in answer.found] == [
        ("b" * 64, False, "human", None),
        ("c/d?e&f=g h", True, None, "new"),
    ]


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (404, "route is missing here, or identifAI refuses a batch holding an unknown identifier"),
        (405, "answered 405"),
    ],
)
def test_a_missing_route_is_unsupported_and_says_what_it_could_mean(status: int, says: str) -> None:
    answer = ask(lambda request: httpx.Response(status, json={"message": "Not Found"}))
    assert answer.unsupported is not None and says in answer.unsupported
    assert answer.outcome.verdict is Meaning.FAILED and answer.outcome.http_status == status
    assert answer.found == ()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>Welcome to nginx</html>"),
        httpx.Response(200, json={"data": []}),
        httpx.Response(200, json=[{"identifier": "z" * 64}]),
        httpx.Response(204),
    ],
)
def test_an_undocumented_answer_is_unsupported(response: httpx.Response) -> None:
    answer = ask(lambda request: response)
    assert answer.unsupported is not None
    assert answer.unsupported.startswith("the classifications endpoint answered 2")
    assert answer.outcome.verdict is Meaning.FAILED and answer.found == ()


@pytest.mark.parametrize(
    ("status", "verdict", "failure", "wait"),
    [
        (429, Meaning.RATE_LIMITED, None, 3.0),
        (503, Meaning.RETRY, Failure.SERVER, 3.0),
        (401, Meaning.STOP, None, None),
        (403, Meaning.STOP, None, None),
        (422, Meaning.FAILED, None, None),
    ],
)
def test_the_bulk_read_is_judged_like_heatmaps_otherwise(
    status: int, verdict: Meaning, failure: Failure | None, wait: float | None
) -> None:
    answer = ask(lambda request: httpx.Response(status, headers={"retry-after": "3"}))
    assert answer.unsupported is None and answer.found == ()
    outcome = answer.outcome
    assert (outcome.verdict, outcome.failure, outcome.retry_after) == (verdict, failure, wait)


def test_the_bulk_read_is_bounded_and_a_network_failure_is_transient() -> None:
    handler, _ = streamed(200, [b"[" + b" " * 2000 + b"]"])
    answer = ask(handler, max_bytes=1000)
    assert answer.outcome.failure is Failure.BODY and answer.unsupported is None
    assert answer.outcome.error == "body over the 1000 bytes limit (cut off after 1000 bytes)"

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    answer = ask(refused)
    assert answer.outcome.failure is Failure.CONNECT and answer.unsupported is None
    assert CLASSIFICATIONS_MAX_BYTES == 8 * 1024 * 1024


def test_a_full_batch_of_identifai_identifiers_fits_an_8_kib_request_line() -> None:
    # nginx's default large_client_header_buffers (8 KiB) answers 414 past that.
    path = classifications_path([f"{i:064x}" for i in range(MAX_IDENTIFIERS)])
    assert len(f"GET /v1{path} HTTP/1.1\r\n") < 8 * 1024
