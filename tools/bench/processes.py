"""Child processes: the real CLI under a peak-RSS wrapper, and `batchmap fake-server`."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import httpx

from tools.bench.common import say

SERVER_START_TIMEOUT = 20.0
# Settings a user's environment could slip into the runs, and proxies (everything is local).
_DROPPED_ENV = {
    "identifai_api_key",
    "identifai_base_url",
    "batchmap_db",
    "batchmap_concurrency",
    "batchmap_max_rate",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
}


def batchmap_argv(*args: str) -> list[str]:
    """The real CLI, as `python -m batchmap`."""
    return [sys.executable, "-m", "batchmap", *args]


def shown(args: Sequence[str], key: str | None = None) -> str:
    """A command line as a user would type it."""
    prefix = f"IDENTIFAI_API_KEY={key} " if key else ""
    return f"  $ {prefix}batchmap {shlex.join(args)}"


def child_env(key: str | None = None) -> dict[str, str]:
    """This environment without batchmap settings or proxies, plus the key if given."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _DROPPED_ENV}
    if key is not None:
        env["IDENTIFAI_API_KEY"] = key
    return env


@dataclass(frozen=True, slots=True)
class Finished:
    """How a child process ended: exit code, wall time, its own peak RSS, its output."""

    code: int
    wall: float
    maxrss_mb: float | None  # None when not measured
    stdout: str
    stderr: str
    timed_out: bool


TIME = "/usr/bin/time"
# The fallback when GNU time is missing: a small parent that reports its child's ru_maxrss.
_RSS_WRAPPER = (
    "import os, sys\n"
    "pid = os.spawnv(os.P_NOWAIT, sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def rss_wrapped(argv: Sequence[str], report_to: Path) -> list[str]:
    """`argv` under a small parent that writes the child's peak RSS (KiB) to `report_to`.

    os.wait4 on our own child is not enough: Linux keeps in ru_maxrss the high-water mark of
    the image a process replaced by exec, and Python spawns with vfork, so each child would
    report at least this bench's own RSS. GNU time (or the wrapper) is small.
    """
    if Path(TIME).exists():
        return [TIME, "-f", "%M", "-o", str(report_to), *argv]
    return [sys.executable, "-c", _RSS_WRAPPER, str(report_to), *argv]


class Child:
    """A subprocess in a session of its own, waited for in a thread so its end time is exact.

    The main thread stays free to poll or signal. With `rss`, it runs under rss_wrapped().
    """

    live: ClassVar[set[Child]] = set()

    def __init__(
        self, argv: Sequence[str], *, cwd: Path, env: dict[str, str], rss: bool = True
    ) -> None:
        # Files, not pipes: a chatty child can never block; they live as long as the Child.
        self._out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._rss_file: Path | None = None
        if rss:
            handle, name = tempfile.mkstemp(prefix="bench-rss-")
            os.close(handle)
            self._rss_file = Path(name)
            argv = rss_wrapped(argv, self._rss_file)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._out, stderr=self._err, start_new_session=True
        )
        self._ended = 0.0
        Child.live.add(self)
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        _, status = os.waitpid(self.proc.pid, 0)
        self._ended = time.perf_counter()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        Child.live.discard(self)

    @property
    def running(self) -> bool:
        """True until the process has exited."""
        return self._waiter.is_alive()

    def signal(self, signum: int) -> None:
        """Send a signal to the process itself, if it still runs."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the process and anything it started (its whole session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    @classmethod
    def kill_all(cls) -> None:
        """Kill every child still running (the bench is ending early)."""
        for child in list(cls.live):
            child.kill()

    def wait(self, timeout: float) -> Finished:
        """Wait for the end (killing the process after `timeout`) and collect what it did."""
        self._waiter.join(timeout)
        timed_out = self._waiter.is_alive()
        if timed_out:
            self.kill()
            self._waiter.join()
        outputs = []
        for handle in (self._out, self._err):
            handle.seek(0)
            outputs.append(handle.read().decode("utf-8", "replace"))
            handle.close()
        return Finished(
            code=self.proc.returncode,
            wall=self._ended - self.started,
            maxrss_mb=self._read_rss(),
            stdout=outputs[0],
            stderr=outputs[1],
            timed_out=timed_out,
        )

    def _read_rss(self) -> float | None:
        """The wrapper's report: the last line holds KiB (GNU time may add a line before it)."""
        if self._rss_file is None:
            return None
        lines = self._rss_file.read_text(encoding="utf-8").split()
        self._rss_file.unlink(missing_ok=True)
        return int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None


def run_child(
    argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 85.0
) -> Finished:
    """Run a command to its end and measure it."""
    return Child(argv, cwd=cwd, env=env or child_env()).wait(timeout)


def batchmap(
    args: Sequence[str], *, cwd: Path, key: str | None = None, timeout: float = 85.0
) -> Finished:
    """Print and run one batchmap command; complain on stderr if it timed out."""
    say(shown(args, key))
    done = run_child(batchmap_argv(*args), cwd=cwd, env=child_env(key), timeout=timeout)
    if done.timed_out:
        say(f"  !! killed after {timeout:.0f} s")
    if done.code not in (0, 1, 130):
        say(f"  !! exit {done.code}: {done.stderr.strip()[-500:]}")
    return done


class FakeServer:
    """`batchmap fake-server` as a subprocess on a free port, and its /_fake/ endpoints."""

    def __init__(self, key: str, flags: Sequence[str]) -> None:
        self.key = key
        self.args = ["fake-server", "--port", "0", "--valid-key", key, *flags]
        say(shown(self.args))
        self.proc = subprocess.Popen(
            batchmap_argv(*self.args), stdout=subprocess.PIPE, env=child_env(), text=True
        )
        self.url = self._read_url()
        self.client = httpx.Client(base_url=self.url, trust_env=False, timeout=10.0)

    def _read_url(self) -> str:
        """The URL from the server's first stdout line (a thread, so a silent server times out)."""
        stdout = self.proc.stdout
        assert stdout is not None
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(SERVER_START_TIMEOUT)
        text = found[0].strip() if found else ""
        if "listening on " not in text:
            self.proc.kill()
            raise RuntimeError(f"the fake server did not start: {text!r}")
        return text.rsplit(" ", 1)[-1]

    def stats(self) -> dict[str, Any]:
        """GET /_fake/stats."""
        data: dict[str, Any] = self.client.get("/_fake/stats").json()
        return data

    def reset(self) -> None:
        """Zero the counters."""
        self.client.post("/_fake/reset").raise_for_status()

    def close(self) -> None:
        """Stop the server."""
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def fake_server(section: str, flags: Sequence[str]) -> Iterator[FakeServer]:
    """A fake server with a key of the section's own for the duration of a block."""
    key = f"bench-{section}-{os.urandom(6).hex()}"
    server = FakeServer(key, flags)
    try:
        yield server
    finally:
        server.close()


def n429(stats: dict[str, Any]) -> int:
    """429 answers in a stats snapshot."""
    return int(stats["by_status"].get("429", 0))


def resolved_rows(db: Path) -> dict[str, int]:
    """Rows per state, read straight from the job table."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


FINAL = ("done", "no_heatmap", "failed")
