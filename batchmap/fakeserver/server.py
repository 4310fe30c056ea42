"""The fake identifAI server: routing, keys, the shared rate limit, faults, outages and stats."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import shlex
import signal
import time
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from batchmap.fakeserver import classifications
from batchmap.fakeserver.config import FakeConfig, OutageKind
from batchmap.fakeserver.heatmaps import expected_status, heatmap_png, identifai_shaped
from batchmap.fakeserver.http import (
    Action,
    Drop,
    Reply,
    Request,
    Reset,
    json_reply,
    path_and_query,
    perform,
    with_headers,
)
from batchmap.fakeserver.limits import Headers, RateLimiter
from batchmap.fakeserver.listener import Listener

HEATMAP_PREFIXES = ("/api/classification/heatmap/", "/api/classification_image/heatmap/")
STATS_PATH = "/_fake/stats"
RESET_PATH = "/_fake/reset"

_BACKLOG = 1024

_PROXY_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body>"
    b"</html>\n"
)
# nginx's limit_req refuses with 503 and its stock error page unless limit_req_status is set.
_NGINX_503_PAGE = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n"
    b"<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)

_UNAUTHORIZED = json_reply(401, {"error": "Unauthorized"})
_FORBIDDEN = json_reply(403, {"error": "Forbidden"})
_NOT_FOUND_ROUTE = json_reply(404, {"error": "Not Found"})
_NOT_FOUND_IMAGE = json_reply(404, {"error": "Image not found"})
_NOT_ALLOWED = json_reply(405, {"error": "Method Not Allowed"}, headers=(("Allow", "GET"),))
_NOT_ALLOWED_RESET = json_reply(
    405, {"error": "Method Not Allowed"}, headers=(("Allow", "GET, POST"),)
)
_TOO_MANY = json_reply(429, {"message": "Too Many Attempts."})
_UNAVAILABLE = json_reply(503, {"message": "Service Unavailable"})
_NO_HEATMAP = Reply(204)
_DROP = Drop()
_RESET = Reset()
_PNG = (("Content-Type", "image/png"),)
_JSON = (("Content-Type", "application/json"),)


def _truncated(reply: Reply) -> Reply:
    """The full Content-Length, half the body, then the connection closes."""
    assert isinstance(reply.body, bytes)
    return replace(reply, body=reply.body[: len(reply.body) // 2], length=len(reply.body))


def _identifier_of(path: str) -> str | None:
    """The percent-decoded identifier of a heatmap path; dot segments are kept as they are."""
    for prefix in HEATMAP_PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            return unquote(path[len(prefix) :])
    return None


@dataclass
class FakeStats:
    """What the fake has answered since it started or was last reset (control paths excluded).

    `requests` and `by_status` count every API request, classifications included (one quota);
    the `classification_*` fields count the classifications endpoint on its own.
    """

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    per_identifier: collections.Counter[str] = field(default_factory=collections.Counter)
    dropped: int = 0  # connections closed or reset without an answer; not in by_status
    classification_requests: int = 0
    classification_by_status: dict[int, int] = field(default_factory=dict)
    classified_per_identifier: collections.Counter[str] = field(default_factory=collections.Counter)

    def record(self, action: Action) -> None:
        """Count one answered (or dropped) API request."""
        self.requests += 1
        if isinstance(action, Reply):
            self.by_status[action.status] = self.by_status.get(action.status, 0) + 1
        else:
            self.dropped += 1

    def record_classification(self, action: Action) -> None:
        """Count one request to the classifications endpoint, after `record`."""
        self.classification_requests += 1
        if isinstance(action, Reply):
            by_status = self.classification_by_status
            by_status[action.status] = by_status.get(action.status, 0) + 1

    def reset(self) -> None:
        """Zero everything in place, so references held by tests stay live."""
        self.requests = self.dropped = self.classification_requests = 0
        self.by_status.clear()
        self.per_identifier.clear()
        self.classification_by_status.clear()
        self.classified_per_identifier.clear()

    def as_json(self) -> dict[str, object]:
        """The body of GET /_fake/stats."""
        return {
            "requests": self.requests,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "per_identifier": dict(self.per_identifier),
            "dropped": self.dropped,
            "classification_requests": self.classification_requests,
            "classification_by_status": {
                str(status): n for status, n in sorted(self.classification_by_status.items())
            },
            "classified_per_identifier": dict(self.classified_per_identifier),
        }


class FakeServer:
    """The identifAI API on a local socket, with limits, faults and outages from a FakeConfig."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.stats = FakeStats()
        self._limiter = RateLimiter(
            config.limits,
            whole_seconds=config.whole_seconds,
            leaky_rate=config.leaky_rate,
            leaky_burst=config.leaky_burst,
            headers=config.rate_headers,
        )
        self._random = random.Random(config.seed)
        self._listener = Listener(self._respond, backlog=_BACKLOG)
        self._outage_task: asyncio.Task[None] | None = None
        self.outage: OutageKind | None = None  # the outage going on now, if any
        self._outage_reply = _UNAVAILABLE
        if config.outage_retry_after is not None:
            retry = (("Retry-After", str(config.outage_retry_after)),)
            self._outage_reply = with_headers(_UNAVAILABLE, retry)
        self._rate_limited = _TOO_MANY
        if config.rate_limit_status == 503:
            self._rate_limited = Reply(503, (("Content-Type", "text/html"),), _NGINX_503_PAGE)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0 picks a free port) and return the bound port."""
        bound = await self._listener.listen(host, port)
        if self.config.outage_at is not None:
            self._outage_task = asyncio.get_running_loop().create_task(self._scheduled_outage())
        return bound

    async def close(self) -> None:
        """Stop listening and end every open connection, including ones waiting on latency."""
        if self._outage_task is not None:
            self._outage_task.cancel()
            await asyncio.gather(self._outage_task, return_exceptions=True)
            self._outage_task = None
        await self._listener.close()

    # -- outages -------------------------------------------------------------------------

    async def _scheduled_outage(self) -> None:
        """The configured outage: wait for its start, go down, come back after its length."""
        assert self.config.outage_at is not None
        await asyncio.sleep(self.config.outage_at)
        await self.begin_outage(self.config.outage_kind)
        await asyncio.sleep(self.config.outage_for)
        await self.end_outage()

    async def begin_outage(self, kind: OutageKind) -> None:
        """Go down: refuse connections (stop listening, close open ones), answer 503, or reset."""
        self.outage = kind
        if kind == "refuse":
            await self._listener.close()

    async def end_outage(self) -> None:
        """Come back, listening again on the same port after a `refuse` outage."""
        if self.outage == "refuse" and not self._listener.listening:
            await self._listener.listen()
        self.outage = None

    # -- connections ---------------------------------------------------------------------

    async def _respond(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request (or reset, in a `reset` outage); False when the connection closes."""
        if self.outage == "reset" and not request.target.startswith("/_fake/"):
            self.stats.record(_RESET)
            return await perform(writer, _RESET, keep_alive=False)
        return await perform(writer, self._answer(request), keep_alive=request.keep_alive)

    # -- routing -------------------------------------------------------------------------

    def _answer(self, request: Request) -> Action:
        """Route a request: control paths, or the API with stats, latency and faults."""
        path, query = path_and_query(request.target)
        if path in (STATS_PATH, RESET_PATH):
            return self._control(request.method, path)
        identifier = _identifier_of(path)
        if identifier is not None:
            reply = self._heatmap_request(request, identifier)
            self.stats.record(reply)
        elif path in classifications.CLASSIFICATIONS_PATHS:
            reply = self._classifications_request(request, query)
            self.stats.record(reply)
            self.stats.record_classification(reply)
        else:
            reply = self._outage_reply if self.outage == "503" else _NOT_FOUND_ROUTE
            self.stats.record(reply)
        if self.config.latency > 0:
            reply = replace(reply, delay=self.config.latency)
        return reply

    def _control(self, method: str, path: str) -> Reply:
        """The unauthenticated, unlimited /_fake/ endpoints tests and benchmarks use."""
        if path == STATS_PATH:
            return json_reply(200, self.stats.as_json()) if method == "GET" else _NOT_ALLOWED
        if method not in ("GET", "POST"):
            return _NOT_ALLOWED_RESET
        self.stats.reset()
        return json_reply(200, {"reset": True})

    def _gate(self, request: Request) -> Reply | Headers:
        """Redirect, key and rate limit, in the order a request meets them.

        Returns the answer that stops the request here, or the rate headers to send with it.
        """
        if self.config.redirect_to is not None:
            location = self.config.redirect_to + request.target
            return Reply(302, headers=(("Location", location),))
        key = request.headers.get("x-api-key")
        if key != self.config.valid_key:
            return _FORBIDDEN if key == self.config.forbidden_key else _UNAUTHORIZED
        admission = self._limiter.admit(time.time())
        if not admission.allowed:
            return with_headers(self._rate_limited, admission.headers)
        return admission.headers

    def _heatmap_request(self, request: Request, identifier: str) -> Action:
        """GET a heatmap: the gate, then faults and the answer."""
        if self.outage == "503":
            return self._outage_reply  # a maintenance page in front: nothing reaches Laravel
        if request.method != "GET":
            return _NOT_ALLOWED
        if request.headers.get("x-api-key") == self.config.valid_key:
            self.stats.per_identifier[identifier] += 1
        gate = self._gate(request)
        if isinstance(gate, Reply):
            return gate
        fault = self._faulty()
        return self._heatmap(identifier, gate) if fault is None else _with_rate(fault, gate)

    def _heatmap(self, identifier: str, gate: Headers) -> Reply:
        if self.config.strict_ids and not identifai_shaped(identifier):
            return with_headers(_NOT_FOUND_IMAGE, gate)
        status = expected_status(identifier)
        if status == 204:
            return with_headers(_NO_HEATMAP, gate)
        if status == 404:
            return with_headers(_NOT_FOUND_IMAGE, gate)
        reply = Reply(200, (*_PNG, *gate), heatmap_png(identifier))
        return _truncated(reply) if self._roll(self.config.truncate_rate) else reply

    def _classifications_request(self, request: Request, query: str) -> Action:
        """GET classifications: like a heatmap request (same key, same quota), up to 100 ids."""
        config = self.config
        if self.outage == "503":
            return self._outage_reply
        if not config.classifications:
            return _NOT_FOUND_ROUTE
        if request.method != "GET":
            return _NOT_ALLOWED
        try:
            identifiers: list[str] | None = classifications.parse_identifiers(query)
            invalid = ""
        except classifications.ValidationFailed as error:
            identifiers, invalid = None, str(error)
        if identifiers and request.headers.get("x-api-key") == config.valid_key:
            self.stats.classified_per_identifier.update(identifiers)
        gate = self._gate(request)
        if isinstance(gate, Reply):
            return gate
        # The throttle middleware runs before the controller validates: a 422 spends a request.
        if identifiers is None:
            return json_reply(422, classifications.validation_body(invalid), headers=gate)
        fault = self._faulty()
        if fault is not None:
            return _with_rate(fault, gate)
        known = [
            i
            for i in identifiers
            if classifications.is_known(i) and (identifai_shaped(i) or not config.strict_ids)
        ]
        if len(known) < len(identifiers) and config.unknown_classifications == "404":
            return with_headers(_NOT_FOUND_IMAGE, gate)
        odd = config.classifications_shape == "odd"
        body = classifications.answer_body(known, pending_rate=config.pending_rate, odd=odd)
        reply = Reply(200, (*_JSON, *gate), body)
        return _truncated(reply) if self._roll(config.truncate_rate) else reply

    def _faulty(self) -> Action | None:
        """A fault that replaces an admitted request's answer, if the dice say so."""
        if self._roll(self.config.drop_rate):
            return _DROP
        if self._roll(self.config.error_rate):
            return _UNAVAILABLE
        if self._roll(self.config.not_png_rate):
            return Reply(200, (("Content-Type", "text/html; charset=utf-8"),), _PROXY_ERROR_PAGE)
        return None

    def _roll(self, rate: float) -> bool:
        """True with probability `rate`; draws nothing when the fault is off."""
        return rate > 0 and self._random.random() < rate


def _with_rate(fault: Action, gate: Headers) -> Action:
    """A fault's answer, with the rate headers of the request it replaces."""
    return with_headers(fault, gate) if isinstance(fault, Reply) else fault


# --------------------------------------------------------------------------- blocking entry


def serve(config: FakeConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    """Run the fake in the foreground until SIGINT or SIGTERM, then close it cleanly."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(config, host=host, port=port))


async def _serve_until_signalled(config: FakeConfig, *, host: str, port: int) -> None:
    """Start, announce the URL on one stdout line (the keys on the next), wait for a signal."""
    server = FakeServer(config)
    bound = await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"batchmap fake-server listening on http://{shown}:{bound}", flush=True)
    print(
        f"accepts X-Api-Key {config.valid_key!r}; {config.forbidden_key!r} gets 403, "
        "any other key 401",
        flush=True,
    )
    print("to rehearse against it, paste in another shell:", flush=True)
    print(f"export IDENTIFAI_BASE_URL=http://{shown}:{bound}", flush=True)
    print(f"export IDENTIFAI_API_KEY={shlex.quote(config.valid_key)}", flush=True)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await server.close()
