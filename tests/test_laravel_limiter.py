"""The production limiter in the suite: the real CLI against Laravel 8's own ThrottleRequests.

identifAI answers through Laravel's throttle middleware. `tests/laravel/server.php` (a copy of
../shared/limiters/laravel/server.php) runs it unchanged under `php -S` from Debian's
php-cli and php-laravel-framework, which `.ci/run` installs; without them this test skips.
The limit is never told to batchmap: it learns it from the answers, and Laravel's own log
says what it cost.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchmap.fakeserver.heatmaps import heatmap_png
from tests.conftest import cli_env

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


def test_laravel_throttle_costs_at_most_one_429_per_window_learned(tmp_path: Path) -> None:
    fx = tmp_path / "fx"
    (fx / "www" / "png").mkdir(parents=True)
    (fx / "www" / "known").mkdir()
    ids = [f"lv{i:04d}" for i in range(IDS)]
    for ident in ids[:36]:
        (fx / "www" / "png" / f"{ident}.png").write_bytes(heatmap_png(ident))
    (tmp_path / "ids.csv").write_text("\n".join(["identifier", *ids]) + "\n", encoding="utf-8")
    (tmp_path / "cache").mkdir()
    log, port = tmp_path / "requests.log", free_port()
    env = {"FX": str(fx), "LIMITS": LIMITS, "CACHE": str(tmp_path / "cache"), "LOG": str(log)}
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
        args = ["run", "ids.csv", "--db", "jobs.db", "--out", "out", "-q", "--no-prefilter"]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "batchmap", *args, "--base-url", f"http://127.0.0.1:{port}"],
            cwd=tmp_path,
            env=cli_env(IDENTIFAI_API_KEY="testkey"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(10)
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
