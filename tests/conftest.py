"""Fixtures for the end-to-end tests: the real CLI and the real fake server, as subprocesses.

Everything talks to 127.0.0.1 (one test also binds 127.0.0.2) and nothing else: proxy
variables are dropped from the CLI's environment so httpx cannot route around the loopback.
The helpers below are imported by tests/test_e2e.py and tests/test_crash.py.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchmap.fakeserver import expected_status, heatmap_png

# Distinctive so that a leak shows up in any byte scan; the fake servers accept only this key.
API_KEY = "e2e-key-Q7vX2mZk9PfL3tRw"
FORBIDDEN_KEY = "forbidden-key"  # the fake's default key that gets 403
CLI_TIMEOUT = 60.0
SERVER_READY_TIMEOUT = 15.0
EXPECTED_STATE = {200: "done", 204: "no_heatmap", 404: "failed"}
PARTIAL_DIR = ".partial"

Row = dict[str, Any]

_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
_LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- test data


def make_ids(prefix: str, *, ok: int = 0, no_heatmap: int = 0, missing: int = 0) -> list[str]:
    """sha256 hex identifiers whose fault-free answers are 200, 204 and 404 in these numbers."""
    wanted = {200: ok, 204: no_heatmap, 404: missing}
    taken: Counter[int] = Counter()
    picked: list[str] = []
    i = 0
    while any(taken[status] < n for status, n in wanted.items()):
        identifier = hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest()
        status = expected_status(identifier)
        if taken[status] < wanted[status]:
            picked.append(identifier)
            taken[status] += 1
        i += 1
    return picked


def expected_sha(identifier: str) -> str:
    """sha256 of the PNG the fake serves for `identifier`."""
    return hashlib.sha256(heatmap_png(identifier)).hexdigest()


def expected_state(identifier: str) -> str:
    """The final state a fault-free run must give `identifier`."""
    return EXPECTED_STATE[expected_status(identifier)]


def write_csv(path: Path, identifiers: Iterable[str], *, header: str | None = "identifier") -> Path:
    """A UTF-8 CSV with one identifier per row, quoted where the csv module needs it."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if header is not None:
            writer.writerow([header])
        for identifier in identifiers:
            writer.writerow([identifier])
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.02, what: str = ""
) -> None:
    """Poll until `condition()` holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


# --------------------------------------------------------------------------- the fake server


@dataclass
class FakeServer:
    """A running `batchmap fake-server` subprocess."""

    process: subprocess.Popen[bytes]
    url: str

    def stats(self) -> dict[str, Any]:
        """GET /_fake/stats."""
        with _LOCAL_OPENER.open(self.url + "/_fake/stats", timeout=10) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def per_identifier(self) -> Counter[str]:
        """Heatmap requests (with the valid key) per identifier so far."""
        return Counter(self.stats()["per_identifier"])

    def requests(self) -> int:
        """API requests answered (or dropped) so far."""
        count: int = self.stats()["requests"]
        return count

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within a few seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_fake_server(*flags: str, host: str = "127.0.0.1", log: Path | None = None) -> FakeServer:
    """Start a fake server on a free port of `host` and wait for its announcement line."""
    with contextlib.ExitStack() as stack:
        # The server's stderr (asyncio complaints, if any) goes to a log file for post-mortems.
        stderr = stack.enter_context(open(log, "ab")) if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(
            [
                sys.executable, "-m", "batchmap", "fake-server",
                "--host", host, "--port", "0", "--valid-key", API_KEY, *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=cli_env(),
        )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + SERVER_READY_TIMEOUT
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, left))
        chunk = os.read(process.stdout.fileno(), 1) if ready else b""
        if not chunk:
            process.kill()
            process.wait()
            pytest.fail(f"fake server {flags} did not start: {line!r}")
        line += chunk
    prefix = b"batchmap fake-server listening on "
    assert line.startswith(prefix), line
    url = line[len(prefix) :].decode().strip()
    assert url.startswith(f"http://{host}:"), url
    return FakeServer(process, url)


@pytest.fixture
def fake_server_factory(tmp_path: Path) -> Iterator[Callable[..., FakeServer]]:
    """Start fake servers with the given flags; all are stopped when the test ends."""
    servers: list[FakeServer] = []

    def start(*flags: str, host: str = "127.0.0.1") -> FakeServer:
        server = start_fake_server(*flags, host=host, log=tmp_path / f"fake-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def shared_fake() -> Iterator[FakeServer]:
    """One fast fake server (no rate limit, no faults) for tests that use their own identifiers."""
    server = start_fake_server("--no-limits")
    yield server
    server.stop()


# --------------------------------------------------------------------------- the CLI


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: no proxies, no batchmap settings, wide rich output."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in _PROXY_VARS
        and not name.startswith(("IDENTIFAI_", "BATCHMAP_", "PYTEST_"))
    }
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    """How a finished CLI process ended."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Spawned:
    """A CLI process started in the background; its output goes to files (no pipe can fill)."""

    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def finish(self, *, timeout: float = CLI_TIMEOUT) -> Result:
        """Wait for the process to end and collect its output."""
        code = self.process.wait(timeout=timeout)
        return Result(
            code,
            self.stdout_path.read_text(encoding="utf-8", errors="replace"),
            self.stderr_path.read_text(encoding="utf-8", errors="replace"),
        )


@dataclass
class Workspace:
    """A tmp_path with a job database, an output directory and the CLI run inside it."""

    root: Path
    env: dict[str, str]
    spawned: list[Spawned] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.root / "jobs.db"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def csv(self, identifiers: Iterable[str], *, name: str = "ids.csv") -> Path:
        """Write identifiers to a CSV in the workspace; returns its path."""
        return write_csv(self.root / name, identifiers)

    def command(self, *args: str | Path) -> list[str]:
        return [sys.executable, "-m", "batchmap", *map(str, args)]

    def cli(
        self, *args: str | Path, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT
    ) -> Result:
        """Run `batchmap ARGS` to completion with cwd=root."""
        done = subprocess.run(
            self.command(*args),
            cwd=self.root,
            env=self.env if env is None else env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        return Result(
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    def spawn(self, *args: str | Path, env: dict[str, str] | None = None) -> Spawned:
        """Start `batchmap ARGS` in the background; it is killed at teardown if still running."""
        n = len(self.spawned)
        stdout_path, stderr_path = self.root / f"spawn-{n}.out", self.root / f"spawn-{n}.err"
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                self.command(*args),
                cwd=self.root,
                env=self.env if env is None else env,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        spawned = Spawned(process, stdout_path, stderr_path)
        self.spawned.append(spawned)
        return spawned

    def fetch_args(
        self, command: Sequence[str | Path], server: FakeServer, *extra: str | Path
    ) -> list[str | Path]:
        """`run CSV` or `resume` against `server` with this workspace's --db and --out."""
        return [
            *command,
            "--db", self.db, "--out", self.out, "--base-url", server.url,
            "--progress-every", "0.2", *extra,
        ]  # fmt: skip

    def run(self, csv_path: Path, server: FakeServer, *extra: str | Path) -> Result:
        return self.cli(*self.fetch_args(["run", csv_path.name], server, *extra))

    def resume(self, server: FakeServer, *extra: str | Path) -> Result:
        return self.cli(*self.fetch_args(["resume"], server, *extra))

    def rows(self) -> dict[str, Row]:
        """Every row of the job table by identifier, read with the sqlite3 module."""
        return read_rows(self.db)

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--db", self.db, "--json")
        assert result.code == 0, result.output
        data: dict[str, Any] = json.loads(result.stdout)
        return data


def read_rows(db: Path) -> dict[str, Row]:
    """The job table as a user's sqlite3 would read it; {} if the table does not exist yet."""
    conn = sqlite3.connect(db, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        try:
            found = conn.execute("SELECT * FROM jobs ORDER BY rowid").fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return {}
            raise
        return {row["identifier"]: dict(row) for row in found}
    finally:
        conn.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose environment carries the valid API key; stray CLI processes are killed."""
    space = Workspace(tmp_path, cli_env(IDENTIFAI_API_KEY=API_KEY))
    yield space
    for spawned in space.spawned:
        if spawned.process.poll() is None:
            spawned.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            spawned.process.wait(timeout=5)


# --------------------------------------------------------------------------- checks


def files_under(out: Path) -> set[Path]:
    """Every regular file under `out` except in OUT/.partial, resolved."""
    if not out.exists():
        return set()
    return {
        path.resolve()
        for path in out.rglob("*")
        if path.is_file() and PARTIAL_DIR not in path.relative_to(out).parts
    }


def partial_files(out: Path) -> list[Path]:
    """Whatever is left in OUT/.partial."""
    partial = out / PARTIAL_DIR
    return sorted(partial.rglob("*")) if partial.exists() else []


def check_done_row(row: Row, out: Path) -> None:
    """A `done` row: its complete PNG, with the recorded size and sha256, is inside `out`."""
    identifier = row["identifier"]
    path = Path(row["path"])
    assert path.resolve().is_relative_to(out.resolve()), (identifier, path)
    assert path.is_file(), f"done row {identifier!r} has no file at {path}"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == expected_sha(identifier), identifier
    assert row["sha256"] == expected_sha(identifier), identifier
    assert row["bytes"] == len(data) == len(heatmap_png(identifier)), identifier
    assert row["http_status"] == 200


def check_final_states(rows: dict[str, Row], identifiers: Sequence[str], out: Path) -> None:
    """Every identifier is in the table once, in its fault-free final state, with its file."""
    assert sorted(rows) == sorted(identifiers)
    for identifier in identifiers:
        row = rows[identifier]
        assert row["state"] == expected_state(identifier), row
        if row["state"] == "done":
            check_done_row(row, out)
        else:
            assert row["path"] is None, row
    done_paths = {Path(r["path"]).resolve() for r in rows.values() if r["state"] == "done"}
    assert files_under(out) == done_paths, "files under --out other than the done rows' PNGs"
    assert partial_files(out) == [], "partial files left behind"


# --------------------------------------------------------------------------- the fast lane

# Tests that drive real sockets or subprocesses in real time carry the `e2e` marker, so that
# `make test-fast` (pytest -m "not e2e") runs everything else in well under a minute. A test
# is e2e when its module says so (`*_e2e.py`, the crash test), when it uses a fixture that
# starts a server or the CLI, or when it is marked by hand (`pytestmark = pytest.mark.e2e`).
_E2E_FIXTURES = {"workspace", "fake_server_factory", "shared_fake"}
_E2E_MODULES = {
    "test_crash", "test_fakeserver", "test_hostile", "test_fetch_hostile", "test_laravel_limiter",
    "test_readme",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the socket and subprocess tests `e2e` (see above)."""
    for item in items:
        module = item.path.stem
        fixtures = set(getattr(item, "fixturenames", ()))
        if module.endswith("_e2e") or module in _E2E_MODULES or fixtures & _E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)
