"""The production limiter in the suite: the real CLI against Laravel 8's own ThrottleRequests.

identifAI answers through Laravel's throttle middleware. `tests/laravel/server.php` (a copy of
../shared/limiters/laravel/server.php) runs it unchanged under `php -S` from Debian's
php-cli and php-laravel-framework, which `.ci/run` installs; without them this test skips.
The limit is never told to batchmap: it learns it from the answers, and Laravel's own log
says what it cost. And the fake server's model of the limiter (batchmap.fakeserver.limits, which
the pacer's simulations in tests/limiters.py drive too) answers a scripted burst exactly as the
real middleware does: the same statuses and the same rate headers, request by request.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from batchmap.fakeserver.heatmaps import expected_status, heatmap_png
from tests.conftest import API_KEY, FakeServer, cli_env
from tests.limiters import Laravel

SERVER = Path(__file__).parent / "laravel" / "server.php"
AUTOLOAD = Path("/usr/share/php/Illuminate/autoload.php")
IDS = 40
LIMITS = "5:1,20:10"  # identifAI's shape (a short and a long window), 12x faster

pytestmark = pytest.mark.skipif(
    shutil.which("php") is None or not AUTOLOAD.exists(),
    reason="php-cli and php-laravel-framework are not installed (.ci/run installs them)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def laravel(tmp_path: Path, limits: str, ids: list[str], known: int) -> Iterator[tuple[str, Path]]:
    """Laravel's middleware under `php -S` with `limits`, the first `known` of `ids` having a
    PNG (the rest 404); yields its URL and its request log (time, status, id per line)."""
    fx = tmp_path / "fx"
    (fx / "www" / "png").mkdir(parents=True)
    (fx / "www" / "known").mkdir()
    for ident in ids[:known]:
        (fx / "www" / "png" / f"{ident}.png").write_bytes(heatmap_png(ident))
    (tmp_path / "cache").mkdir()
    log, port = tmp_path / "requests.log", free_port()
    env = {"FX": str(fx), "LIMITS": limits, "CACHE": str(tmp_path / "cache"), "LOG": str(log)}
    server = subprocess.Popen(
        ["php", "-S", f"127.0.0.1:{port}", str(SERVER)],
        env={**cli_env(), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", log
    finally:
        server.terminate()
        server.wait(10)


def test_laravel_throttle_costs_at_most_one_429_per_window_learned(tmp_path: Path) -> None:
    ids = [f"lv{i:04d}" for i in range(IDS)]
    (tmp_path / "ids.csv").write_text("\n".join(["identifier", *ids]) + "\n", encoding="utf-8")
    with laravel(tmp_path, LIMITS, ids, known=36) as (url, log):
        args = ["run", "ids.csv", "--db", "jobs.db", "--out", "out", "-q", "--no-prefilter"]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "batchmap", *args, "--base-url", url],
            cwd=tmp_path,
            env=cli_env(IDENTIFAI_API_KEY="testkey"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
    assert done.returncode == 1, done.stderr  # the four 404s fail, nothing else
    lines = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    statuses = [int(parts[1]) for parts in lines]
    assert statuses.count(200) == 36 and statuses.count(404) == 4
    # The scout reads "5 per window" from the first answer; the 20-per-window limit shows only
    # when used up, and its length only in its first 429: one 429, then none (one more of
    # slack for a loaded machine, where php -S may count a request late).
    assert statuses.count(429) <= 2, statuses
    assert len(statuses) / IDS <= 1.05
    # 20 at 5/s, a pause until the 10 s window ends, 20 more: about 14 s, not 20 at 2/s.
    first, last = float(lines[0][0]), float(lines[-1][0])
    assert last - first <= 16.0, (last - first, took)


# Requests per second of a scripted burst, one second after another: the short limit trips,
# then the long one (a request it refuses still counts on the short one), then both reopen.
BURSTS = (4, 3, 1, 0, 2)
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "retry-after", "x-ratelimit-reset")
Answer = tuple[int, dict[str, str | None]]


def scripted_burst(
    client: httpx.Client, laravel_url: str, fake_url: str, ident: str
) -> list[tuple[float, Answer, Answer]] | None:
    """(time sent, Laravel's answer, the fake's) per request of BURSTS, each second's pairs
    sent within that second; None if one was late (a loaded machine), so it proves nothing."""
    answers: list[tuple[float, Answer, Answer]] = []
    for count in BURSTS:
        time.sleep(math.ceil(time.time()) + 0.05 - time.time())
        second = math.floor(time.time())
        for _ in range(count):
            sent = time.time()
            real = client.get(f"{laravel_url}/api/classification/heatmap/{ident}",
                              headers={"X-Api-Key": "testkey"})  # fmt: skip
            fake = client.get(f"{fake_url}/api/classification/heatmap/{ident}",
                              headers={"X-Api-Key": API_KEY})  # fmt: skip
            if math.floor(time.time()) != second:
                return None
            answers.append((sent, rate_answer(real), rate_answer(fake)))
    return answers


def rate_answer(response: httpx.Response) -> Answer:
    return response.status_code, {name: response.headers.get(name) for name in RATE_HEADERS}


def test_the_fake_servers_limiter_answers_as_laravel_s_own_middleware(
    tmp_path: Path, fake_server_factory: Callable[..., FakeServer]
) -> None:
    fake = fake_server_factory("--limit", "3/1", "--limit", "5/4")
    ident = next(i for i in (f"lv{n:04d}" for n in range(100)) if expected_status(i) == 200)
    with laravel(tmp_path, "3:1,5:4", [ident], known=1) as (url, _), httpx.Client() as client:
        client.get(f"{url}/warm-up")  # php loads the framework once, outside the limits
        answers = scripted_burst(client, url, fake.url, ident)
        if answers is None:
            time.sleep(5)  # every window over: both limiters start afresh
            answers = scripted_burst(client, url, fake.url, ident)
    assert answers is not None, "every attempt straddled a second; the machine is too loaded"
    statuses = [real[0] for _, real, _ in answers]
    assert statuses == [200, 200, 200, 429, 200, 200, 429, 429, 200, 200]
    assert [fake for _, _, fake in answers] == [real for _, real, _ in answers]
    # The simulator's view of the same model, fed the times the requests were sent.
    model = Laravel(((3, 1), (5, 4)), headers="min", offset=0.0)
    for sent, real, _ in answers:
        status, headers = model.answer(sent)
        assert (status, {name: headers.get(name) for name in RATE_HEADERS}) == real
