"""The worker pool over httpx.MockTransport on a fake clock: outcomes, retries, outages, stops."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import batchmap.runner as runner_module
from batchmap import files
from batchmap.config import Pace
from batchmap.context import RunContext, RunSettings, Tally
from batchmap.errors import ApiUnusableError, AuthError, StorageError
from batchmap.fetch import make_client
from batchmap.files import Layout
from batchmap.models import Failure, JobState, Meaning, Outcome
from batchmap.pacer import Pacer
from batchmap.runner import PROBATION, Runner
from batchmap.store import Store
from tests.limiters import FakeClock
from tests.pngs import tiny_png

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def identifier_of(request: httpx.Request) -> str:
    return request.url.path.rsplit("/", 1)[-1]


class Harness:
    """A store, a fake clock and a runner whose client answers through `handler`."""

    def __init__(
        self, tmp_path: Path, ids: list[str], *, prefilter: bool = False, **pace: Any
    ) -> None:
        self.clock = FakeClock()
        self.store = Store(tmp_path / "jobs.db")
        self.store.load_ids(ids)
        self.out = tmp_path / "out"
        self.settings = RunSettings(
            out=self.out, layout=Layout.FLAT, pace=Pace(**pace), prefilter=prefilter,
            where="api.test:443",
        )  # fmt: skip
        self.pacer = Pacer(max_rate=pace.get("max_rate"), clock=self.clock, sleep=self.clock.sleep)
        self.requests: list[tuple[float, str]] = []
        self.pauses: list[str] = []

    def run(self, handler: Handler, *, before: Callable[[Runner], None] | None = None) -> Tally:
        async def logged(request: httpx.Request) -> httpx.Response:
            self.requests.append((self.clock(), identifier_of(request)))
            answer = handler(request)
            return await answer if asyncio.iscoroutine(answer) else answer  # type: ignore[return-value]

        async def go() -> Tally:
            client = make_client(
                "https://api.test", api_key="k", timeout=5, concurrency=4,
                transport=httpx.MockTransport(logged),
            )  # fmt: skip
            async with client:
                ctx = RunContext.make(
                    self.store, client, self.pacer, self.settings,
                    clock=self.clock, wall=lambda: 1.8e9 + self.clock(), sleep=self.clock.sleep,
                    jitter=lambda ceiling: ceiling,
                )  # fmt: skip
                runner = Runner(ctx, run_id=self.store.start_run({}))
                original = self.pacer.pause

                def pause(until: float, reason: str, **kw: bool) -> None:
                    self.pauses.append(reason)
                    original(until, reason, **kw)

                self.pacer.pause = pause  # type: ignore[method-assign]
                if before is not None:
                    before(runner)
                return await runner.run()

        return asyncio.run(go())

    def state(self, identifier: str) -> dict[str, object]:
        return next(r for r in self.store.rows() if r["identifier"] == identifier)

    def heatmap_requests(self) -> list[tuple[float, str]]:
        return [(t, i) for t, i in self.requests if not i.startswith("classifications")]


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


def test_a_broken_row_backs_off_without_sleeping_while_the_api_answers(tmp_path: Path) -> None:
    answers = iter([503, 503])

    def handler(request: httpx.Request) -> httpx.Response:
        if identifier_of(request) != "abc":
            return png_response(request)
        status = next(answers, 200)
        return png_response(request) if status == 200 else httpx.Response(status)

    h = Harness(tmp_path, ["a-first", "abc"], concurrency=1)
    h.run(handler)
    row = h.state("abc")
    assert row["state"] == "done" and row["attempts"] == 3
    times = [t for t, ident in h.requests if ident == "abc"]
    # Backoff 1 s then 2 s (jitter pinned to its ceiling), on the fake clock only.
    assert times[1] - times[0] >= 1.0 and times[2] - times[1] >= 2.0


def test_a_row_that_keeps_failing_while_others_succeed_fails_retryable(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if identifier_of(request) == "bad":
            return httpx.Response(502, text="Bad Gateway")
        return png_response(request)

    h = Harness(tmp_path, ["a-first", "bad", "c-after"], max_attempts=3, concurrency=1)
    h.run(handler)
    row = h.state("bad")
    assert (row["state"], row["attempts"], row["retryable"]) == ("failed", 3, 1)
    assert row["error"] == "HTTP 502: Bad Gateway"


def test_an_outage_pauses_the_pool_probes_and_spends_no_attempt(tmp_path: Path) -> None:
    ids = [f"id{i:02d}" for i in range(12)]
    h = Harness(tmp_path, ids, concurrency=4, max_attempts=2, max_rate=2)
    down_from, down_until = 1_000_002.0, 1_000_090.0

    def handler(request: httpx.Request) -> httpx.Response:
        if down_from <= h.clock() < down_until:
            raise httpx.ConnectError("connection refused", request=request)
        return png_response(request)

    h.run(handler)
    assert h.store.counts()[JobState.DONE] == 12
    assert {row["attempts"] for row in h.store.rows()} == {1}  # nobody paid for the outage
    assert any(reason.startswith("API unreachable since") for reason in h.pauses)
    during = [t for t, _ in h.requests if down_from <= t < down_until]
    assert len(during) < 12  # probes, one at a time, at growing intervals: no hammering


def test_an_outage_past_the_limit_stops_with_exit_4_and_rows_pending(tmp_path: Path) -> None:
    ids = [f"id{i:02d}" for i in range(10)]
    h = Harness(tmp_path, ids, concurrency=2, outage_limit=300, max_rate=2)

    def handler(request: httpx.Request) -> httpx.Response:
        if h.clock() > 1_000_001.0:
            return httpx.Response(503, text="down")
        return png_response(request)

    with pytest.raises(ApiUnusableError, match="--outage-limit") as raised:
        h.run(handler)
    assert raised.value.exit_code == 4
    counts = h.store.counts()
    assert counts[JobState.FAILED] == 0 and counts[JobState.RUNNING] == 0
    assert counts[JobState.PENDING] + counts[JobState.DONE] == 10 and counts[JobState.PENDING]


def test_a_new_job_whose_first_answers_are_all_404_stops_with_rows_pending(
    tmp_path: Path,
) -> None:
    ids = [f"id{i:02d}" for i in range(30)]
    h = Harness(tmp_path, ids, concurrency=2)
    with pytest.raises(ApiUnusableError, match="every request answered 404"):
        h.run(lambda request: httpx.Response(404, json={"message": "Not Found"}))
    assert h.store.counts()[JobState.PENDING] == 30
    assert len(h.requests) <= PROBATION + 2


def test_404s_after_a_success_are_ordinary_failures(tmp_path: Path) -> None:
    ids = ["a-ok", *(f"gone{i:02d}" for i in range(12))]

    def handler(request: httpx.Request) -> httpx.Response:
        if identifier_of(request).startswith("gone"):
            return httpx.Response(404, json={"error": "Image not found"})
        return png_response(request)

    h = Harness(tmp_path, ids, concurrency=1)
    h.run(handler)
    assert h.store.counts()[JobState.FAILED] == 12


def test_a_wait_longer_than_max_wait_stops_the_run_instead_of_sleeping(tmp_path: Path) -> None:
    h = Harness(tmp_path, ["a", "b", "c"], concurrency=1, max_wait=600)
    with pytest.raises(ApiUnusableError, match="over --max-wait"):
        h.run(lambda request: httpx.Response(429, headers={"retry-after": "86400"}))
    assert h.store.counts()[JobState.PENDING] == 3
    assert h.clock() - 1_000_000.0 < 600


def test_a_503_retry_after_pauses_everyone_as_asked(tmp_path: Path) -> None:
    told: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if identifier_of(request) == "b" and not told:
            told.append(h.clock())
            return httpx.Response(503, headers={"retry-after": "7"})
        return png_response(request)

    h = Harness(tmp_path, ["a", "b", "c", "d"], concurrency=1)
    h.run(handler)
    later = [t for t, ident in h.requests if t > told[0]]
    assert later and min(later) >= told[0] + 7


def test_a_429_pauses_the_whole_pool_and_costs_no_attempt(tmp_path: Path) -> None:
    limited: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if len(h.requests) == 3 and not limited:
            limited.append(h.clock())
            headers = {"retry-after": "5"}
            return httpx.Response(429, headers=headers, json={"message": "Too Many Attempts."})
        return png_response(request)

    h = Harness(tmp_path, [f"id{i}" for i in range(12)], concurrency=4, max_rate=50)
    tally = h.run(handler)
    after = [t for t, _ in h.requests if t > limited[0]]
    assert after and min(after) >= limited[0] + 5  # nobody hammered during the pause
    assert tally.rate_limited == 1
    assert h.store.counts()[JobState.DONE] == 12
    assert {row["attempts"] for row in h.store.rows()} == {1}


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_the_run_and_leaves_rows_pending(tmp_path: Path, status: int) -> None:
    h = Harness(tmp_path, [f"id{i}" for i in range(20)], concurrency=2)
    with pytest.raises(AuthError) as raised:
        h.run(lambda request: httpx.Response(status, json={"error": "no"}))
    assert raised.value.exit_code == 3
    assert h.store.counts()[JobState.PENDING] == 20
    assert len(h.requests) <= 2  # at most what was already in flight


def test_a_refused_key_abandons_requests_in_flight(tmp_path: Path) -> None:
    never = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if identifier_of(request) == "aaa-slow":
            await never.wait()  # a request that would hang for ever
        return httpx.Response(401, json={"error": "Unauthorized"})

    h = Harness(tmp_path, ["aaa-slow", "bbb", "ccc"], concurrency=2, max_rate=100)
    with pytest.raises(AuthError):
        h.run(handler)
    assert h.store.counts()[JobState.PENDING] == 3


def test_a_graceful_stop_returns_unfinished_rows_to_pending(tmp_path: Path) -> None:
    h = Harness(tmp_path, [f"id{i}" for i in range(50)], concurrency=2)
    runner_box: list[Runner] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if len(h.requests) == 5:
            runner_box[0].ctx.stop.request()
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
        runner._probation = False
        for job in h.store.claim(2):
            runner._in_flight[job.rowid] = job
            runner._decide(job, Outcome(Meaning.DONE, 200, body=tiny_png()))
        first = asyncio.create_task(runner.flush())
        await asyncio.sleep(0.05)
        first.cancel()  # as run() cancels its periodic flusher on the way out
        release.set()
        await runner.flush()

    async def go() -> None:
        async with httpx.AsyncClient() as client:
            await scenario(Runner(RunContext.make(h.store, client, h.pacer, h.settings)))

    asyncio.run(go())
    assert h.store.counts()[JobState.DONE] == 2
    assert all(Path(str(row["path"])).exists() for row in h.store.rows())


def test_an_outage_a_classifications_request_reveals_gives_the_workers_attempts_back(
    tmp_path: Path,
) -> None:
    # One handler for every transient failure: whichever request shows the API is down, the
    # attempts rows paid since its last good answer are given back (Health names them).
    h = Harness(tmp_path, ["a", "b"], prefilter=True)
    down = Outcome(Meaning.RETRY, 503, error="HTTP 503", failure=Failure.SERVER)

    async def scenario(runner: Runner) -> None:
        runner.ctx.health.on_answer()  # the API answered once: failures are rows' own again
        for job in h.store.claim(2):
            runner._in_flight[job.rowid] = job
            runner._decide(job, down)
        assert sorted((job.identifier, job.attempts) for _, _, job in runner._retries) == [
            ("a", 1), ("b", 1),
        ]  # fmt: skip
        h.clock.now += 3
        assert runner.failed(None, down).pause_for > 0  # the third subject: an outage
        assert not runner._retries
        assert sorted((job.identifier, job.attempts) for job in runner._ready) == [
            ("a", 0), ("b", 0),
        ]  # fmt: skip

    async def go() -> None:
        async with httpx.AsyncClient() as client:
            await scenario(Runner(RunContext.make(h.store, client, h.pacer, h.settings,
                                                  clock=h.clock)))  # fmt: skip

    asyncio.run(go())


# --------------------------------------------------------------------------- the prefilter


def classification(identifier: str, *, has_heatmap: bool, status: str = "done") -> dict[str, Any]:
    return {
        "identifier": identifier, "hash": "ab" * 32, "name": f"{identifier}.jpg",
        "has_heatmap": has_heatmap, "status": status,
        "verdict": {"classification": "artificial", "confidence": 0.93, "heuristic": "h"},
        "verdicts": [], "results": [],
    }  # fmt: skip


def classifying(no_heatmap: set[str], *, undecided: frozenset[str] = frozenset()) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/classifications"):
            asked = request.url.params.get_list("identifiers[]")
            return httpx.Response(200, json=[
                classification(i, has_heatmap=i not in no_heatmap,
                               status="new" if i in undecided else "done")
                for i in asked
            ])  # fmt: skip
        if identifier_of(request) in no_heatmap:
            return httpx.Response(204)
        return png_response(request)

    return handler


def test_the_prefilter_ends_rows_without_heatmap_and_keeps_every_verdict(tmp_path: Path) -> None:
    ids = [f"id{i:03d}" for i in range(150)]
    none = set(ids[::5])
    h = Harness(tmp_path, ids, prefilter=True, concurrency=4)
    h.run(classifying(none))
    asked = [ident for _, ident in h.requests if ident == "classifications"]
    heatmaps = [ident for _, ident in h.requests if ident != "classifications"]
    assert len(asked) == 2  # 100 + 50
    assert sorted(heatmaps) == sorted(set(ids) - none)  # no request for a row without heatmap
    assert h.store.counts()[JobState.NO_HEATMAP] == len(none)
    row = h.state("id001")
    assert (row["verdict"], row["confidence"], row["image_name"]) == ("artificial", 0.93,
                                                                      "id001.jpg")  # fmt: skip


def test_an_undecided_classification_never_finalises_a_row(tmp_path: Path) -> None:
    h = Harness(tmp_path, ["a", "b"], prefilter=True)
    handler = classifying({"a", "b"}, undecided=frozenset({"b"}))
    h.run(handler)
    assert [i for _, i in h.requests if i != "classifications"] == ["b"]
    assert h.state("b")["state"] == "no_heatmap" and h.state("b")["http_status"] == 204


def test_a_missing_classifications_endpoint_is_said_once_and_remembered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [f"id{i:03d}" for i in range(20)]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/classifications"):
            return httpx.Response(404, json={"message": "Not Found"})
        return png_response(request)

    h = Harness(tmp_path, ids, prefilter=True)
    h.run(handler)
    asked = [i for _, i in h.requests if i == "classifications"]
    assert len(asked) <= 2
    assert h.store.counts()[JobState.DONE] == 20
    assert caplog.text.count("classifications endpoint is not usable") == 1
    remembered = h.store.get_meta("prefilter")
    assert remembered["available"] is False and "https://api.test" in remembered["base_url"]


def test_the_timeline_counts_what_the_server_answered(tmp_path: Path) -> None:
    ids = [f"id{i:02d}" for i in range(20)]
    gone = set(ids[:3])

    def handler(request: httpx.Request) -> httpx.Response:
        if identifier_of(request) in gone:
            return httpx.Response(404)
        return png_response(request)

    h = Harness(tmp_path, ["a-ok", *ids], concurrency=2)
    h.run(handler)
    minutes = h.store.timeline()
    total = {
        key: sum(m[key] for m in minutes) for key in ("requests", "ok", "not_found", "finished")
    }
    assert total == {"requests": 21, "ok": 18, "not_found": 3, "finished": 21}
    assert json.dumps(minutes, allow_nan=False)


def test_a_full_out_disk_stops_every_worker_at_once_with_rows_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged: list[str] = []

    def full_disk(path: Path, data: bytes, *, out: Path) -> object:
        staged.append(path.name)
        if len(staged) >= 3:
            raise StorageError(f"{out}: No space left on device while writing {path.name}")
        return files.stage(path, data, out=out)

    monkeypatch.setattr(runner_module, "stage", full_disk)
    h = Harness(tmp_path, [f"id{i:02d}" for i in range(40)], concurrency=4, max_rate=20)
    with pytest.raises(StorageError, match="No space left"):
        h.run(png_response)
    counts = h.store.counts()
    assert counts[JobState.RUNNING] == 0 and counts[JobState.FAILED] == 0
    assert len(h.requests) <= 3 + 4  # the others stopped claiming: no request after the error
