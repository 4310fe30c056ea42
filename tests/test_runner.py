"""The worker pool over httpx.MockTransport on a fake clock: outcomes, retries, pauses, stops."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import batchmap.runner as runner_module
from batchmap import files
from batchmap.errors import AuthError
from batchmap.fetch import make_client
from batchmap.files import Layout
from batchmap.models import JobState, Outcome, Verdict
from batchmap.pacer import Pacer
from batchmap.runner import Runner, RunSettings, Tally
from batchmap.store import Store
from tests.limiters import FakeClock
from tests.pngs import tiny_png

Handler = Callable[[httpx.Request], httpx.Response]


def identifier_of(request: httpx.Request) -> str:
    return request.url.path.rsplit("/", 1)[-1]


class Harness:
    """A store, a fake clock and a runner whose client answers through `handler`."""

    def __init__(self, tmp_path: Path, ids: list[str], **settings: int) -> None:
        self.clock = FakeClock()
        self.store = Store(tmp_path / "jobs.db")
        self.store.load_ids(ids)
        self.out = tmp_path / "out"
        self.settings = RunSettings(out=self.out, layout=Layout.FLAT, **settings)
        self.pacer = Pacer(clock=self.clock, sleep=self.clock.sleep)
        self.requests: list[tuple[float, str]] = []

    def run(self, handler: Handler, *, before: Callable[[Runner], None] | None = None) -> Tally:
        def logged(request: httpx.Request) -> httpx.Response:
            self.requests.append((self.clock(), identifier_of(request)))
            return handler(request)

        async def go() -> Tally:
            client = make_client(
                "https://api.test", api_key="k", timeout=5, concurrency=4,
                transport=httpx.MockTransport(logged),
            )  # fmt: skip
            async with client:
                runner = Runner(
                    self.store, client, self.pacer, self.settings,
                    clock=self.clock, sleep=self.clock.sleep, jitter=lambda ceiling: ceiling,
                )  # fmt: skip
                if before is not None:
                    before(runner)
                return await runner.run()

        return asyncio.run(go())

    def state(self, identifier: str) -> dict[str, object]:
        return next(r for r in self.store.rows() if r["identifier"] == identifier)


def png_response(request: httpx.Request) -> httpx.Response:
    body = tiny_png(len(identifier_of(request)))
    return httpx.Response(200, content=body, headers={"content-type": "image/png"})


def test_each_answer_ends_in_its_state_and_png_bytes_land_on_disk(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        ident = identifier_of(request)
        if ident.startswith("none"):
            return httpx.Response(204)
        if ident.startswith("gone"):
            return httpx.Response(404, json={"error": "Image not found"})
        return png_response(request)

    h = Harness(tmp_path, ["ok1", "none1", "gone1", "ok22"])
    tally = h.run(handler)
    assert tally.finished == {JobState.DONE: 2, JobState.NO_HEATMAP: 1, JobState.FAILED: 1}
    row = h.state("ok22")
    body = tiny_png(4)
    assert row["state"] == "done" and Path(str(row["path"])).read_bytes() == body
    assert row["sha256"] == hashlib.sha256(body).hexdigest() and row["bytes"] == len(body)
    assert h.state("gone1")["error"] == "HTTP 404: Image not found"
    assert h.state("gone1")["retryable"] == 0
    assert h.state("none1")["path"] is None


def test_transient_errors_back_off_and_then_succeed_without_sleeping(tmp_path: Path) -> None:
    answers = iter([503, 503])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers, 200)
        return png_response(request) if status == 200 else httpx.Response(status)

    h = Harness(tmp_path, ["abc"])
    started = h.clock()
    h.run(handler)
    row = h.state("abc")
    assert row["state"] == "done" and row["attempts"] == 3
    times = [t for t, _ in h.requests]
    # Backoff 1 s then 2 s (jitter pinned to its ceiling), on the fake clock only.
    assert times[1] - times[0] >= 1.0 and times[2] - times[1] >= 2.0
    assert h.clock() - started < 10


def test_a_row_fails_retryable_after_max_attempts(tmp_path: Path) -> None:
    h = Harness(tmp_path, ["abc"], max_attempts=3)
    tally = h.run(lambda request: httpx.Response(502, text="Bad Gateway"))
    row = h.state("abc")
    assert (row["state"], row["attempts"], row["retryable"]) == ("failed", 3, 1)
    assert row["error"] == "HTTP 502: Bad Gateway"
    assert tally.retries == 2


def test_other_rows_proceed_while_one_waits_for_its_retry(tmp_path: Path) -> None:
    failed_once: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        ident = identifier_of(request)
        if ident == "slow" and ident not in failed_once:
            failed_once.add(ident)
            return httpx.Response(500)
        return png_response(request)

    h = Harness(tmp_path, ["slow", *(f"x{i}" for i in range(5))], concurrency=1)
    h.run(handler)
    order = [ident for _, ident in h.requests]
    assert order[0] == "slow" and order[-1] == "slow"  # the retry waited; the others did not
    assert h.store.counts()[JobState.DONE] == 6


def test_a_429_pauses_the_whole_pool_and_costs_no_attempt(tmp_path: Path) -> None:
    limited: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if not limited:
            limited.append(0)
            headers = {"retry-after": "5"}
            return httpx.Response(429, headers=headers, json={"message": "Too Many Attempts."})
        return png_response(request)

    h = Harness(tmp_path, [f"id{i}" for i in range(8)], concurrency=4)
    tally = h.run(handler)
    first = h.requests[0][0]
    in_flight = [t for t, _ in h.requests if t == first]
    later = [t for t, _ in h.requests if t != first]
    assert len(in_flight) <= 4  # those already sent when the 429 came back
    assert later and all(t >= first + 5 for t in later)  # then nobody hammered during the pause
    assert tally.rate_limited == 1
    assert h.store.counts()[JobState.DONE] == 8
    assert {row["attempts"] for row in h.store.rows()} == {1}


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_the_run_and_leaves_rows_pending(tmp_path: Path, status: int) -> None:
    h = Harness(tmp_path, [f"id{i}" for i in range(20)], concurrency=2)
    with pytest.raises(AuthError) as raised:
        h.run(lambda request: httpx.Response(status, json={"error": "no"}))
    assert raised.value.exit_code == 3
    assert h.store.counts()[JobState.PENDING] == 20
    assert len(h.requests) <= 2  # at most what was already in flight


def test_a_graceful_stop_returns_unfinished_rows_to_pending(tmp_path: Path) -> None:
    h = Harness(tmp_path, [f"id{i}" for i in range(50)], concurrency=2)
    runner_box: list[Runner] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if len(h.requests) == 5:
            runner_box[0].stop.request()
        return png_response(request)

    h.run(handler, before=runner_box.append)
    counts = h.store.counts()
    assert counts[JobState.RUNNING] == 0
    assert counts[JobState.DONE] + counts[JobState.PENDING] == 50
    assert 5 <= counts[JobState.DONE] <= 7


def test_a_flush_cancelled_halfway_still_records_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, ["a", "b"])
    release = threading.Event()

    def slow_publish(paths: list[Path], *, out: Path) -> None:
        release.wait(5)
        files.publish(paths, out=out)

    monkeypatch.setattr(runner_module, "publish", slow_publish)

    async def scenario(runner: Runner) -> None:
        for job in h.store.claim(2):
            runner._in_flight[job.rowid] = job
            runner._decide(job, Outcome(Verdict.DONE, 200, body=tiny_png()))
        first = asyncio.create_task(runner.flush())
        await asyncio.sleep(0.05)
        first.cancel()  # as run() cancels its periodic flusher on the way out
        release.set()
        await runner.flush()

    async def go() -> None:
        async with httpx.AsyncClient() as client:
            await scenario(Runner(h.store, client, h.pacer, h.settings))

    asyncio.run(go())
    assert h.store.counts()[JobState.DONE] == 2
    assert all(Path(str(row["path"])).exists() for row in h.store.rows())
