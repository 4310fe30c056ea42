"""The HTTP side: the httpx client and `fetch_heatmap`, which turns one request into an Outcome.

Redirects are followed here, by hand, and only within the configured origin: httpx would
forward `X-Api-Key` to any host a redirect names (it strips only `Authorization`).
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx

from batchmap import __version__
from batchmap.models import Outcome, Verdict
from batchmap.policy import judge

HEATMAP_PATH = "/api/classification/heatmap/"
MAX_REDIRECTS = 5


def make_client(
    base_url: str,
    *,
    api_key: str,
    timeout: float,
    concurrency: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A client that sends the key to `base_url` only and never follows redirects itself."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={"X-Api-Key": api_key, "User-Agent": f"batchmap/{__version__}"},
        timeout=timeout,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        transport=transport,
    )


def heatmap_path(identifier: str) -> str:
    """The request path for an identifier, percent-encoded so it stays one path segment.

    `quote` leaves `.` alone, and a segment of `..` would be resolved away (RFC 3986 5.2.4),
    so dots are encoded too.
    """
    return HEATMAP_PATH + quote(identifier, safe="").replace(".", "%2E")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


async def fetch_heatmap(client: httpx.AsyncClient, identifier: str, *, timeout: float) -> Outcome:
    """GET one heatmap and judge the answer; network trouble becomes a RETRY outcome."""
    base = client.base_url
    url = base.copy_with(raw_path=base.raw_path.rstrip(b"/") + heatmap_path(identifier).encode())
    origin = _origin(url)
    try:
        async with asyncio.timeout(timeout):  # a total deadline: a trickling server can't stall us
            for _ in range(MAX_REDIRECTS + 1):
                response = await client.get(url)
                if not response.is_redirect:
                    return _judged(response)
                target = response.url.join(response.headers.get("location", ""))
                if _origin(target) != origin:
                    return Outcome(
                        Verdict.FAILED,
                        http_status=response.status_code,
                        error=f"redirect to another origin refused ({target.scheme}://{target.host})",
                    )
                url = target
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(Verdict.RETRY, error=f"timed out after {timeout:g}s")
    except httpx.TransportError as error:
        detail = str(error) or "connection closed"
        return Outcome(Verdict.RETRY, error=f"{type(error).__name__}: {detail}")
    return Outcome(Verdict.FAILED, error=f"more than {MAX_REDIRECTS} redirects")


def _judged(response: httpx.Response) -> Outcome:
    body = response.content
    verdict, error = judge(response.status_code, body, response.headers.get("content-type", ""))
    return Outcome(
        verdict,
        http_status=response.status_code,
        error=error,
        body=body if verdict is Verdict.DONE else b"",
        headers=response.headers,
    )
