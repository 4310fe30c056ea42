"""Real rate limiters on real sockets, the limit never told to batchmap (issue 16).

    python -m tools.bench limiters            # every case (about 7 minutes)
    python -m tools.bench limiters-quick      # all but the 150 s Laravel 2/s case

Cases: Laravel 8's own ThrottleRequests under `php -S` and nginx's limit_req (both from
../shared/limiters, on its fixture), and small servers here for the other shapes, each a
model from tests/limiters.py behind a socket (the same model the simulator drives). Per case:
requests per resolved id, 429 share, steady (second half by time, answers/s ÷ the long-run
allowed rate), whole-run efficiency (the ideal finish time ÷ the real one; ideal: a client
that knows the limit and sends the moment it would be accepted), of_slow (answers/s over the
whole run ÷ the long-run allowed rate), and beside them the simulator's prediction for the
same case (`tests.limiters.simulate_ids`, 4 workers, 4 ms answers). Against fixed windows
"steady" cuts windows anywhere (a burst, then a pause): "whole" is the figure there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from batchmap.pacer import Pacer
from tests.limiters import (
    Laravel,
    Limiter,
    LimitsPackage,
    LyingRemaining,
    NginxLimitReq,
    SlidingLog,
    ideal_seconds,
    simulate_ids,
)
from tools.bench.common import Report, SharedData, line, percent, ratio, say
from tools.bench.processes import FINAL, batchmap, resolved_rows

# ../shared/limiters beside the checkout, or where LIMITERS_DIR says.
LIMITERS = Path(
    os.environ.get("LIMITERS_DIR") or Path(__file__).resolve().parents[3] / "shared" / "limiters"
)
KEY = "testkey"  # the only key ../shared/limiters accepts
Log = list[tuple[float, int]]  # (server time of a request, its status)


@dataclass(frozen=True)
class Case:
    """One limiter, the job run against it, and what the issue asks of it."""

    name: str
    title: str
    ids: int
    allowed: float  # requests per second the limiter allows in the long run
    model: Callable[[], Limiter]  # for the ideal and the simulator (the real one for ours)
    kind: str  # "laravel", "nginx" or "model" (served here)
    laravel_limits: str = ""
    targets: tuple[tuple[str, str, float], ...] = ()  # (figure, op, goal)
    server_model: Callable[[], Limiter] | None = None  # when the server differs from `model`
    extra: dict[str, float] = field(default_factory=dict)


CASES = [
    Case(
        "laravel-2",
        "Laravel 8 ThrottleRequests 2/s + 60/min (identifAI), 180 ids",
        180,
        1.0,
        lambda: Laravel(((2, 1), (60, 60)), headers="min"),
        "laravel",
        "2:1,60:60",
        (("per_id", "<=", 1.01), ("whole", ">=", 0.95), ("first_minute_429", "<=", 1)),
    ),
    Case(
        "laravel-20",
        "Laravel 8 ThrottleRequests 20/s + 300/30 s, 1000 ids",
        1000,
        10.0,
        lambda: Laravel(((20, 1), (300, 30)), headers="min"),
        "laravel",
        "20:1,300:30",
        (("of_slow", ">=", 0.98), ("share", "<=", 0.005)),
    ),
    Case(
        "limits-package",
        "fixed windows with X-RateLimit-* (the `limits` package) 20/s + 300/30 s, 600 ids",
        600,
        10.0,
        lambda: LimitsPackage(((20, 1), (300, 30))),
        "model",
        targets=(("whole", ">=", 0.95),),
    ),
    Case(
        "nginx",
        "nginx limit_req 20 r/s, burst 5, Retry-After: 1, 800 ids",
        800,
        20.0,
        lambda: NginxLimitReq(rate=20.0, burst=5),
        "nginx",
        targets=(("steady", ">=", 0.95), ("share", "<=", 0.01)),
    ),
    Case(
        "sliding",
        "sliding window counting refusals, no Retry-After, 10/s + 300/min, 400 ids",
        400,
        5.0,
        lambda: SlidingLog(((10, 1), (300, 60))),
        "model",
        targets=(("per_id", "<=", 1.03), ("whole", ">=", 0.9)),
    ),
    Case(
        "ietf",
        "IETF RateLimit-Policy/RateLimit headers, 20/s + 300/30 s, no Retry-After, 600 ids",
        600,
        10.0,
        lambda: LimitsPackage(((20, 1), (300, 30)), ietf=True),
        "model",
        targets=(("whole", ">=", 0.95),),
    ),
    Case(
        "retry-after-0",
        "leaky bucket 20/s burst 5, 429 with Retry-After: 0, 600 ids",
        600,
        20.0,
        lambda: NginxLimitReq(rate=20.0, burst=5, retry_after="0"),
        "model",
        targets=(("steady", ">=", 0.9), ("share", "<=", 0.02)),
    ),
    Case(
        "lying-remaining",
        "10/s allowed, every success says Remaining: 0 of 1000 (issue 17, 6), 300 ids",
        300,
        10.0,
        lambda: LyingRemaining(rate=10.0),
        "model",
        targets=(("steady", ">=", 0.9),),
    ),
]


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fixture(n: int, directory: Path) -> Path:
    """../shared/limiters' fixture of `n` ids in `directory`."""
    subprocess.run(
        [sys.executable, str(LIMITERS / "gen_fixture.py"), str(n), "16", str(directory)],
        check=True,
        capture_output=True,
    )
    return directory


class ModelServer:
    """A limiter model from tests/limiters.py on a socket, serving the fixture (200 with its
    PNG, 204 for known ids, 404 for the rest); one lock, so the model sees one request at a
    time, on the wall clock. `log` holds (time, status) per request."""

    def __init__(self, model: Limiter, fx: Path) -> None:
        self.model, self.fx = model, fx
        self.log: Log = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                ident = self.path.rsplit("/", 1)[-1]
                with outer.lock:
                    now = time.time()
                    status, headers = outer.model.answer(now)
                    outer.log.append((now, status))
                body = b""
                if status == 200:
                    png = outer.fx / "www" / "png" / f"{ident}.png"
                    if png.is_file():
                        body = png.read_bytes()
                    elif (outer.fx / "www" / "known" / ident).exists():
                        status = 204
                    else:
                        status, body = 404, b'{"error":"Not Found"}'
                elif status == 429:
                    body = b'{"message":"Too Many Attempts."}'
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if status != 204:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Running:
    """A started limiter: its URL and how to read its request log."""

    procs: ClassVar[list[subprocess.Popen[bytes]]] = []

    def __init__(self, url: str, read: Callable[[], Log]) -> None:
        self.url, self.read = url, read


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _read_log(path: Path) -> Log:
    log: Log = []
    if path.exists():
        for text in path.read_text(encoding="utf-8").splitlines():
            parts = text.split()
            if len(parts) >= 2 and parts[1].isdigit():
                log.append((float(parts[0]), int(parts[1])))
    return sorted(log)


@contextlib.contextmanager
def serve(case: Case, fx: Path) -> Iterator[Running]:
    """Start the case's limiter on 127.0.0.1; stop it after."""
    if case.kind == "laravel":
        port, cache = free_port(), fx / "cache"
        cache.mkdir()
        log = fx / "requests.log"
        env = {**os.environ, "FX": str(fx), "LIMITS": case.laravel_limits}
        env |= {"CACHE": str(cache), "LOG": str(log)}
        proc = subprocess.Popen(
            ["php", "-S", f"127.0.0.1:{port}", str(LIMITERS / "laravel" / "server.php")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(port)
            yield Running(f"http://127.0.0.1:{port}", lambda: _read_log(log))
        finally:
            proc.terminate()
            proc.wait(10)
    elif case.kind == "nginx":
        port = free_port()
        up = LIMITERS / "nginx" / "up.sh"
        subprocess.run(["bash", str(up), str(fx), str(port), "20", "5", "0"], check=True)
        try:
            _wait_port(port)
            access = fx / "nginx" / "logs" / "access.log"
            yield Running(f"http://127.0.0.1:{port}", lambda: _read_log(access))
        finally:
            subprocess.run(["bash", str(LIMITERS / "nginx" / "down.sh"), str(fx)], check=False)
    else:
        server = ModelServer((case.server_model or case.model)(), fx)
        try:
            yield Running(server.url, lambda: sorted(server.log))
        finally:
            server.close()


@dataclass(frozen=True)
class Figures:
    """How a run used a limiter."""

    requests: int
    refused: int
    per_id: float
    share: float
    steady: float
    whole: float
    of_slow: float  # accepted per second over the whole run ÷ the long-run allowed rate
    seconds: float
    first_minute_429: int


def figures_of(log: Log, resolved: int, allowed: float, ideal: float) -> Figures:
    """Figures from a request log: whole = ideal ÷ first-to-last request; steady = accepted
    per second over the second half by time ÷ `allowed`."""
    first, last = log[0][0], log[-1][0]
    seconds = max(1e-9, last - first)
    middle = first + seconds / 2
    refused = sum(1 for _, status in log if status in (429, 503))
    tail = sum(1 for t, status in log if t >= middle and status not in (429, 503))
    return Figures(
        requests=len(log),
        refused=refused,
        per_id=len(log) / max(1, resolved),
        share=refused / len(log),
        steady=tail / (seconds / 2) / allowed,
        whole=ideal / seconds,
        of_slow=(len(log) - refused) / seconds / allowed,
        seconds=seconds,
        first_minute_429=sum(1 for t, s in log if t < first + 60 and s in (429, 503)),
    )


def simulated(case: Case, ideal: float) -> Figures:
    """The simulator's prediction: the same model, 4 workers, 4 ms answers, virtual time."""
    log = simulate_ids(Pacer(), case.model(), ids=case.ids)
    resolved = sum(1 for _, status in log if status not in (429, 503))
    return figures_of(log, resolved, case.allowed, ideal)


FORMAT: dict[str, Callable[[float], str]] = {
    "per_id": lambda v: f"{v:.3f}",
    "share": percent,
    "steady": ratio,
    "whole": ratio,
    "of_slow": ratio,
    "first_minute_429": lambda v: f"{v:.0f}",
}


def run_case(report: Report, case: Case) -> None:
    """Run batchmap against one real limiter and print its figures beside the simulator's."""
    say(f"== limiters/{case.name}: {case.title} ==")
    if case.kind == "laravel" and shutil.which("php") is None:
        say("  skipped: php is not installed (apt-get install php-cli php-laravel-framework)")
        return
    if case.kind == "nginx" and shutil.which("nginx") is None:
        say("  skipped: nginx is not installed (apt-get install nginx)")
        return
    ideal = ideal_seconds(case.model, case.ids)
    with tempfile.TemporaryDirectory(prefix=f"bench-{case.name}-") as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers run as nobody when the bench runs as root
        fx = fixture(case.ids, Path(tmp) / "fx")
        with serve(case, fx) as server:
            args = ["run", str(fx / "ids.csv"), "--db", "jobs.db", "--out", "heatmaps"]
            args += ["--base-url", server.url, "-q", "--no-prefilter"]
            done = batchmap(args, cwd=Path(tmp), key=KEY, timeout=ideal * 3 + 60)
            time.sleep(0.3)
            log = server.read()
        rows = resolved_rows(Path(tmp) / "jobs.db")
    resolved = sum(rows.get(state, 0) for state in FINAL)
    if not log:
        raise RuntimeError(f"{case.name}: the server saw no request (exit {done.code})")
    real = figures_of(log, resolved, case.allowed, ideal)
    if os.environ.get("BENCH_REFUSALS"):  # when each refusal came, seconds from the first request
        say(f"  refused at {[round(t - log[0][0], 2) for t, s in log if s in (429, 503)]}")
    sim = simulated(case, ideal)
    say(
        f"  exit {done.code}; {resolved} of {case.ids} resolved; {real.requests} requests, "
        f"{real.refused} refused; {real.seconds:.1f} s first to last request, ideal {ideal:.1f} s"
    )
    wanted = {figure: (op, goal) for figure, op, goal in case.targets}
    for figure in ("per_id", "share", "steady", "whole", "of_slow", "first_minute_429"):
        value, predicted = getattr(real, figure), getattr(sim, figure)
        shown = FORMAT[figure]
        report.figure(case.name, figure, value)
        report.figure(case.name, f"{figure}_sim", predicted)
        tail = ""
        if figure in wanted:
            op, goal = wanted[figure]
            tail = report.check(f"lim/{case.name}", figure, value, op, goal, shown)
        line(f"{figure}", f"{shown(value):>7} real  {shown(predicted):>7} sim", tail)


def section_limiters(report: Report, _shared: SharedData, *, quick: bool = False) -> None:
    """Every real-limiter case (quick: all but the 150 s Laravel 2/s one)."""
    only = os.environ.get("BENCH_LIMITERS", "")
    for case in CASES:
        if quick and case.name == "laravel-2":
            continue
        if only and case.name not in only.split(","):
            continue
        try:
            run_case(report, case)
        except Exception as error:  # one broken case must not hide the others
            report.errors[f"limiters/{case.name}"] = f"{type(error).__name__}: {error}"
        say()


def section_limiters_quick(report: Report, shared: SharedData) -> None:
    """The real limiters but the long Laravel 2/s case."""
    section_limiters(report, shared, quick=True)
