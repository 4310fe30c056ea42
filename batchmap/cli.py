"""Click commands only: parse options, call one method of batchmap.Job, show the result.

httpx and the worker pool are imported inside the commands that fetch, so that `status`
and `report` start in a fraction of the time.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from batchmap.config import (
    DEFAULT_BASE_URL,
    DEFAULT_DB,
    DEFAULT_LAYOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_OUT,
    DEFAULT_TIMEOUT,
    PACE,
    PROGRESS_EVERY,
    Api,
    Output,
    Pace,
)
from batchmap.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STORAGE,
    EXIT_USAGE,
    BatchmapError,
)
from batchmap.files import Layout
from batchmap.job import Job
from batchmap.models import JobState
from batchmap.overlays import DEFAULT_MAX_SIDE, DEFAULT_OPACITY
from batchmap.report import Format, silence_stdout, story_lines
from batchmap.timeline import human_seconds, iso
from batchmap.version import __version__

if TYPE_CHECKING:
    from batchmap.session import RunResult
    from batchmap.verify import VerifyReport

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("batchmap")


class BatchmapGroup(click.Group):
    """Turns batchmap's own errors into one line and the README's exit codes, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BatchmapError as error:
            _fail(str(error), error.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except OSError as error:
            _fail(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "), EXIT_STORAGE)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"batchmap: error: {message}", err=True)
    sys.exit(code)


class _Console(Console):
    """rich's Console, but a reader that leaves (`batchmap status | head -3`) is not an error."""

    def on_broken_pipe(self) -> None:
        _quiet_broken_pipe()


def _quiet_broken_pipe() -> NoReturn:
    # `batchmap status | head -3`: the reader left, which is fine; exit as a pipeline would.
    silence_stdout()
    sys.exit(0)


class _JsonLines(logging.Formatter):
    """`--log-format json`: one object a line with time, level, event and message."""

    def format(self, record: logging.LogRecord) -> str:

        return json.dumps(
            {
                "time": iso(),
                "level": record.levelname.lower(),
                "event": getattr(record, "event", "log"),
                "message": record.getMessage(),
            }
        )


def _setup_logging(quiet: bool, verbose: int, log_format: str = "plain") -> None:
    # -q and -v map to levels here and nowhere else.
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_JsonLines())
    # httpx logs one INFO line per request; only -vv wants that. It never logs headers.
    logging.getLogger("httpx").setLevel(logging.INFO if verbose > 1 else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)  # "Using selector: ..." is noise


def db_option(func: F) -> F:
    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_DB,
        envvar="BATCHMAP_DB",
        show_default=True,
        show_envvar=True,
        help="The job database (SQLite).",
    )(func)


def column_option(func: F) -> F:
    return click.option(
        "--column", default=None, help="CSV column holding identifiers (default: auto-detect)."
    )(func)


def images_options(func: F) -> F:
    """--images and --image-column of `load` and `run`: where each identifier's photo is."""
    func = click.option(
        "--image-column",
        default=None,
        help="CSV column naming each identifier's photo: a path, or a file name under --images "
        "(default: a column of image file names, else the identifier).",
    )(func)
    return click.option(
        "--images",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder of the original photos (read only, never copied); remembered by the job.",
    )(func)


def verbosity_options(*, requests: bool) -> Callable[[F], F]:
    """-q and -v; `requests`: whether this command sends requests, so -vv means something."""
    more = "More detail; -vv logs each request." if requests else "More detail."

    def decorate(func: F) -> F:
        func = click.option("--quiet", "-q", is_flag=True, help="Only errors and the summary.")(
            func
        )
        return click.option("--verbose", "-v", count=True, help=more)(func)

    return decorate


def _number(
    flag: str,
    kind: type[float] | type[int],
    default: float | None,
    text: str,
    *,
    envvar: str | None = None,
) -> Callable[[F], F]:
    """A numeric option of run and resume: its default shown unless None, and its variable."""
    return click.option(
        flag, type=kind, default=default, show_default=default is not None, envvar=envvar,
        show_envvar=envvar is not None, help=text,
    )  # fmt: skip


def fetch_options(func: F) -> F:
    """The options of `run` and `resume`; defaults come from batchmap.config."""
    decorators = [
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help=f"Where heatmaps go (default: {DEFAULT_OUT}/, or what the job remembers).",
        ),
        click.option(
            "--layout",
            type=click.Choice([m.value for m in Layout]),
            default=None,
            help=f"sharded: OUT/ab/ID.png; flat: OUT/ID.png (default: {DEFAULT_LAYOUT}). "
            "Remembered by the job.",
        ),
        click.option(
            "--api-key",
            envvar="IDENTIFAI_API_KEY",
            default=None,
            show_envvar=True,
            help="identifAI API key; prefer the environment variable. Never stored.",
        ),
        click.option(
            "--base-url",
            envvar="IDENTIFAI_BASE_URL",
            default=None,
            show_envvar=True,
            help=f"API origin [default: {DEFAULT_BASE_URL}, or what the job "
            "remembers]. Given explicitly, it is remembered for later runs.",
        ),
        _number(
            "--concurrency",
            int,
            PACE.concurrency,
            "Requests in flight at most (1-256).",
            envvar="BATCHMAP_CONCURRENCY",
        ),
        _number(
            "--max-rate",
            float,
            PACE.max_rate,
            "Ceiling on request starts per second (default: learn the server's).",
            envvar="BATCHMAP_MAX_RATE",
        ),
        _number(
            "--max-attempts",
            int,
            PACE.max_attempts,
            "Tries per identifier for its own transient errors (outages spend none).",
        ),
        _number(
            "--backoff-base",
            float,
            PACE.backoff_base,
            "Seconds before the first retry of a transient error; doubles each time.",
        ),
        _number("--timeout", float, DEFAULT_TIMEOUT, "Seconds allowed for one request, in total."),
        _number(
            "--max-wait",
            float,
            PACE.max_wait,
            "A server-requested wait (Retry-After) longer than this stops the run (exit 4).",
        ),
        _number(
            "--outage-limit",
            float,
            PACE.outage_limit,
            "Seconds the API may stay unreachable before the run stops (exit 4).",
        ),
        _number(
            "--max-body",
            int,
            DEFAULT_MAX_BODY,
            "Bytes an answer may have; a larger one is refused while it streams.",
        ),
        click.option(
            "--prefilter/--no-prefilter",
            default=None,
            help="Ask the classifications endpoint first, 100 identifiers a request "
            "[default: on; --no-prefilter is remembered by the job].",
        ),
        click.option(
            "--proxy-sees-key",
            is_flag=True,
            help="Allow a proxy from HTTP_PROXY/ALL_PROXY for a plain-http --base-url (it reads "
            "the key).",
        ),
        click.option(
            "--progress-every",
            type=click.FloatRange(0.1, None),
            default=PROGRESS_EVERY,
            hidden=True,
            help="Seconds between plain progress lines.",
        ),
        click.option(
            "--limit",
            type=click.IntRange(1, None),
            default=None,
            help="Fetch at most N rows this run (in table order); the rest stay pending.",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Load nothing, send nothing: print the rows, requests and time this would take.",
        ),
        click.option(
            "--strict",
            is_flag=True,
            help="Exit 1 while any row of the job is failed, also from earlier runs.",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["plain", "json"]),
            default="plain",
            show_default=True,
            help="json: one JSON object a line on stderr (time, level, event, counts).",
        ),
        db_option,
        verbosity_options(requests=True),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@click.group(
    cls=BatchmapGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Start with `batchmap run ids.csv` (key in IDENTIFAI_API_KEY); "
    "`batchmap COMMAND --help` shows each command's options.",
)
@click.version_option(__version__, prog_name="batchmap")
def cli() -> None:
    """Download identifAI AI-heatmaps in bulk: paced, resumable, crash-safe."""


@cli.command(
    epilog="Example: batchmap load ids.csv --column image_id --db jobs.db",
    short_help="Add a CSV's identifiers to the job; fetch nothing.",
)
@click.argument("ids_csv", type=click.Path(path_type=Path))
@db_option
@column_option
@images_options
@verbosity_options(requests=False)
def load(
    ids_csv: Path,
    db: Path,
    column: str | None,
    images: Path | None,
    image_column: str | None,
    quiet: bool,
    verbose: int,
) -> None:
    """Load IDS_CSV into the job table and say what was added; fetch nothing."""
    from batchmap.session import show_load

    _setup_logging(quiet, verbose)
    loaded = Job(db).load(ids_csv, column=column, images=images, image_column=image_column)
    show_load(ids_csv, loaded)


@cli.command(
    epilog="Example: IDENTIFAI_API_KEY=... batchmap run ids.csv --out heatmaps/",
    short_help="Load a CSV, then fetch every unfinished heatmap.",
)
@click.argument("ids_csv", type=click.Path(path_type=Path))
@column_option
@images_options
@fetch_options
def run(
    ids_csv: Path,
    column: str | None,
    images: Path | None,
    image_column: str | None,
    db: Path,
    **options: Any,
) -> None:
    """Load IDS_CSV, then fetch every identifier not finished."""
    options["images"], options["image_column"] = images, image_column
    _fetch(db, options, load=ids_csv, column=column, retry_failed=False)


@cli.command(
    epilog="Example: batchmap resume --retry-failed",
    short_help="Continue the job where it stopped.",
)
@click.option("--retry-failed", is_flag=True, help="Also retry rows that ended failed.")
@fetch_options
def resume(retry_failed: bool, db: Path, **options: Any) -> None:
    """Continue the job table where it stopped (no CSV needed)."""
    _fetch(db, options, load=None, column=None, retry_failed=retry_failed)


@cli.command(
    epilog="Example: batchmap status --json | jq .counts",
    short_help="Counts, errors, pauses and the last 24 hours.",
)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 while any row is failed (for cron and scripts); 0 otherwise.",
)
def status(db: Path, as_json: bool, check: bool) -> None:
    """Counts per state and HTTP status, frequent errors, last activity, any pause."""
    facts = Job(db).status()
    if as_json:
        click.echo(json.dumps(facts, indent=2, allow_nan=False))
    else:
        _show_status(facts)
    if check and facts["counts"].get(JobState.FAILED.value):
        sys.exit(EXIT_FAILED)


@cli.command(
    epilog="Example: batchmap report --format html -o report.html",
    short_help="One record per identifier: csv, json, jsonl or html.",
)
@db_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in Format]),
    default="csv",
    show_default=True,
)
@click.option(
    "--state",
    type=click.Choice([s.value for s in JobState]),
    default=None,
    help="Only rows in this state.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of standard output.",
)
def report(db: Path, fmt: str, state: str | None, output: Path | None) -> None:
    """One record per identifier as csv, json or jsonl; an html page; or timeline-csv.

    The html page is one file (styles, script and charts inlined); its thumbnails link to
    the heatmap files under --out, so keep it where it can reach them. timeline-csv has one
    row per minute of each run.
    """
    written = Job(db).report(output, fmt=fmt, state=state)
    if output is None:
        return
    click.echo(written.message(output), err=True)


@cli.command(
    epilog="Example: batchmap verify --repair && batchmap resume",
    short_help="Check every done file; --repair refetches bad ones.",
)
@db_option
@click.option(
    "--repair",
    is_flag=True,
    help="Return missing or changed rows to pending (resume refetches only them); "
    "drop partial files.",
)
@verbosity_options(requests=False)
def verify(db: Path, repair: bool, quiet: bool, verbose: int) -> None:
    """Check every done row's file against its recorded size and sha256; find strays."""

    _setup_logging(quiet, verbose)
    report = Job(db).verify(repair=repair, on_progress=_verify_progress(quiet))
    _show_verify(report, repair=repair)
    # With --repair the question is whether everything found was repaired; stray files are
    # not the job's (listed, never touched) and do not stand between a repair and `resume`.
    fine = report.repaired if repair else report.clean
    sys.exit(EXIT_OK if fine else EXIT_FAILED)


@cli.group(
    epilog="Example: batchmap export overlays --out overlays/ --sheet 24",
    short_help="Files made from the job: composites of photo and heatmap.",
)
def export() -> None:
    """Files made from the job's heatmaps (`batchmap export overlays --help`)."""


@export.command(
    "overlays",
    epilog="Example: batchmap export overlays --out overlays/ --sheet 24",
    short_help="Each done heatmap blended over its own photo, one file a row.",
)
@db_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the composites (created; never the photos' folder unless you say so).",
)
@click.option(
    "--max-side",
    type=click.IntRange(16, 65_536),
    default=DEFAULT_MAX_SIDE,
    show_default=True,
    help="Largest side of a composite in pixels; bigger photos are scaled down.",
)
@click.option(
    "--opacity",
    type=click.FloatRange(0.0, 1.0),
    default=DEFAULT_OPACITY,
    show_default=True,
    help="How strongly the heatmap covers the photo.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jpeg", "png"]),
    default="jpeg",
    show_default=True,
)
@click.option(
    "--sheet",
    type=click.IntRange(1, 400),
    default=None,
    help="Also a contact sheet per N rows: a grid of composites with names and verdicts.",
)
@click.option("--force", is_flag=True, help="Write every composite again, even if up to date.")
def export_overlays(
    db: Path, out: Path, max_side: int, opacity: float, fmt: str, sheet: int | None, force: bool
) -> None:
    """Write OUT/ID.jpg for every done row whose photo the job knows (load --images DIR).

    Needs Pillow: pip install 'batchmap[images]'. Resumable: up-to-date composites are kept.
    Missing or unreadable photos are skipped and listed in OUT/missing-originals.csv.
    """

    def show(count: int) -> None:
        if count % 100 == 0:
            click.echo(f"\r{count:,} rows done", err=True, nl=False)

    report = Job(db).export_overlays(
        out, max_side=max_side, opacity=opacity, fmt=fmt, sheet=sheet, force=force,
        on_row=show if sys.stderr.isatty() else None,
    )  # fmt: skip
    if sys.stderr.isatty():
        click.echo("\r", err=True, nl=False)
    for line in report.lines():
        click.echo(line)


def _verify_progress(quiet: bool) -> Callable[[int, int], None] | None:
    if quiet or not sys.stderr.isatty():
        return None

    def show(checked: int, total: int) -> None:
        click.echo(f"\rchecked {checked}/{total}", err=True, nl=checked >= total)

    return show


def _show_verify(report: VerifyReport, *, repair: bool) -> None:
    lines = [
        f"{_plural(report.checked, 'done row')} checked: {report.ok} ok, "
        f"{report.missing} missing, {report.changed} changed; "
        f"{_plural(report.stray, 'stray file')}, {_plural(report.partials, 'partial file')}"
    ]
    for label, examples in (
        ("missing", report.missing_examples),
        ("changed", report.changed_examples),
        ("stray", report.stray_examples),
    ):
        lines.extend(f"  {label}: {path}" for path in examples)
    if repair:
        lines.append(
            f"repaired: {_plural(report.returned_to_pending, 'row')} back to pending "
            f"(`batchmap resume` fetches them), {report.partials_removed} partial files "
            "removed; stray files are left for you to look at"
        )
    elif report.missing or report.changed:
        lines.append("`batchmap verify --repair` returns those rows to pending")
    for line in lines:
        click.echo(line)


def _parse_limit(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> Any:
    limits = []
    for value in values:
        count, _, seconds = value.partition("/")
        try:
            limits.append((int(count), float(seconds)))
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected COUNT/SECONDS, like 60/60") from None
    return tuple(limits)


@cli.command(
    "fake-server",
    epilog="Example: batchmap fake-server --port 8000 --strict-ids, then paste the two "
    "export lines it prints and run `batchmap run ids.csv --limit 10` in another shell.",
    short_help="A local identifAI stand-in for rehearsals.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True, help="0 picks a free port.")
@click.option("--valid-key", default="demo-key", show_default=True)
@click.option(
    "--forbidden-key",
    default="forbidden-key",
    show_default=True,
    help="A key that gets 403 (terms of service not accepted).",
)
@click.option(
    "--limit",
    "limits",
    multiple=True,
    callback=_parse_limit,
    help="Fixed-window limit COUNT/SECONDS, repeatable [default: 2/1 and 60/60].",
)
@click.option("--no-limits", is_flag=True, help="No fixed-window rate limit at all.")
@click.option(
    "--no-rate-headers",
    "rate_headers",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Send no Retry-After or X-RateLimit-*.",
)
@click.option("--leaky-rate", type=float, default=None, help="Also a leaky bucket: requests/s.")
@click.option("--leaky-burst", type=int, default=1, show_default=True)
@click.option("--error-rate", type=float, default=0.0, help="Share of answers that are 503.")
@click.option("--latency", type=float, default=0.0, help="Seconds added to every answer.")
@click.option("--drop-rate", type=float, default=0.0, help="Share of connections dropped.")
@click.option("--truncate-rate", type=float, default=0.0, help="Share of PNGs cut in half.")
@click.option("--not-png-rate", type=float, default=0.0, help="Share of 200s that are HTML.")
@click.option("--redirect-to", default=None, help="Answer every request 302 to this origin.")
@click.option("--seed", type=int, default=None, help="Seed for the fault dice.")
@click.option(
    "--exact-windows",
    "whole_seconds",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Windows end exactly W s after their first hit (Laravel on Redis), not on a second.",
)
@click.option(
    "--rate-limit-status",
    type=click.Choice(["429", "503"]),
    default="429",
    show_default=True,
    callback=lambda _ctx, _param, value: int(value),
    help="Status of a rate-limited answer; 503 is nginx limit_req's default.",
)
@click.option(
    "--no-classifications",
    "classifications",
    is_flag=True,
    flag_value=False,
    default=True,
    help="No classifications endpoint: 404 like an unknown route.",
)
@click.option(
    "--classifications-shape",
    type=click.Choice(["documented", "odd"]),
    default="documented",
    show_default=True,
    help='odd: a 200 in an undocumented shape ({"data": [...]}).',
)
@click.option(
    "--unknown-classifications",
    type=click.Choice(["absent", "404"]),
    default="absent",
    show_default=True,
    help="Unknown identifiers are left out of the array, or 404 the whole request.",
)
@click.option(
    "--pending-rate",
    type=float,
    default=0.0,
    help="Share of classifications still running (status new, has_heatmap false).",
)
@click.option("--outage-at", type=float, default=None, help="Seconds after start an outage begins.")
@click.option("--outage-for", type=float, default=0.0, help="Seconds the outage lasts.")
@click.option(
    "--outage-kind",
    type=click.Choice(["refuse", "503", "reset"]),
    default="refuse",
    show_default=True,
    help="refuse connections, answer 503, or reset connections.",
)
@click.option(
    "--outage-retry-after", type=int, default=None, help="Retry-After on the outage's 503s."
)
@click.option(
    "--strict-ids",
    is_flag=True,
    help="Answer 404 for identifiers that are not identifAI-shaped (64 lowercase hex), "
    "as identifAI would: a wrong CSV column fails here too.",
)
def fake_server(
    host: str, port: int, limits: tuple[tuple[int, float], ...], no_limits: bool, **options: Any
) -> None:
    """A local identifAI stand-in for demos, rehearsals and tests."""
    from batchmap.fakeserver import FakeConfig, serve

    if not limits:
        limits = () if no_limits else FakeConfig().limits
    try:
        config = FakeConfig(limits=limits, **options)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    serve(config, host=host, port=port)


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    return f"{count} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"


def _configs(options: dict[str, Any]) -> tuple[Api, Pace, Output]:
    """The validated configuration objects from a fetch command's options."""
    key = options["api_key"]
    if not key:
        _fail("no API key: set IDENTIFAI_API_KEY (or pass --api-key)", EXIT_USAGE)
    api = Api(key, options["base_url"], timeout=options["timeout"], max_body=options["max_body"])
    pace = Pace(
        concurrency=options["concurrency"],
        max_rate=options["max_rate"],
        max_attempts=options["max_attempts"],
        backoff_base=options["backoff_base"],
        max_wait=options["max_wait"],
        outage_limit=options["outage_limit"],
    )
    layout = Layout(options["layout"]) if options["layout"] else None
    return api, pace, Output(options["out"], layout)


def _fetch(
    db: Path, options: dict[str, Any], *, load: Path | None, column: str | None, retry_failed: bool
) -> NoReturn:
    from batchmap.context import Stop
    from batchmap.progress import Mode, ProgressView

    _setup_logging(options["quiet"], options["verbose"], options["log_format"])
    if options["dry_run"]:
        _dry_run(db, options, load=load, column=column, retry_failed=retry_failed)
    api, pace, output = _configs(options)
    if options["log_format"] == "json":
        mode = Mode.QUIET if options["quiet"] else Mode.JSON
    else:
        mode = Mode.QUIET if options["quiet"] else Mode.LIVE if sys.stderr.isatty() else Mode.PLAIN
    view = ProgressView(mode, every=options["progress_every"])

    class ShownStop(Stop):
        """A stop the progress display tells about (Ctrl-C, SIGTERM, SIGHUP)."""

        def request(self, reason: str = "stop requested") -> None:
            super().request(reason)
            view.stopping(force=self.force.is_set())

    try:
        result = Job(db).fetch(
            api, pace, output, load=load, column=column, retry_failed=retry_failed,
            prefilter=options["prefilter"], limit=options["limit"],
            images=options.get("images"), image_column=options.get("image_column"),
            proxy_sees_key=options["proxy_sees_key"], on_progress=view, stop=ShownStop(),
            signals=True,
        )  # fmt: skip
    finally:
        view.close()
    if options["log_format"] == "json":
        _log_summary(result)  # stdout stays empty: the whole log is JSON lines on stderr
    else:
        _show_summary(result)
    code = result.exit_code
    if options["strict"] and code == EXIT_OK and result.counts[JobState.FAILED]:
        code = EXIT_FAILED
    sys.exit(code)


def _dry_run(
    db: Path, options: dict[str, Any], *, load: Path | None, column: str | None, retry_failed: bool
) -> NoReturn:
    from batchmap.estimate import estimate

    if options["max_rate"] is not None:
        Pace(max_rate=options["max_rate"])  # the same one-line refusal as a real run
    found = estimate(
        db, load=load, column=column, retry_failed=retry_failed, prefilter=options["prefilter"],
        max_rate=options["max_rate"], limit=options["limit"],
    )  # fmt: skip
    for line in found.lines(str(load) if load is not None else None):
        click.echo(line)
    sys.exit(EXIT_OK)


def _log_summary(result: RunResult) -> None:
    counts = {state.value: n for state, n in result.counts.items()}
    click.echo(
        json.dumps(
            {
                "time": iso(),
                "level": "info",
                "event": "summary",
                "exit_code": result.exit_code,
                "interrupted": result.interrupted,
                "elapsed_seconds": round(result.elapsed, 1),
                "counts": counts,
                "this_run": {s.value: n for s, n in result.tally.finished.items()},
                "requests": result.tally.requests,
                "rate_limited": result.tally.rate_limited,
                "message": " ".join(_summary_lines(result)),
            }
        ),
        err=True,
    )


def _show_summary(result: RunResult) -> None:

    counts, tally = result.counts, result.tally
    console = _Console(soft_wrap=True)
    if _nothing_done(result):
        for line in _summary_lines(result):
            console.print(line, highlight=False)
        return
    table = Table(
        title=f"batchmap: run {'interrupted' if result.interrupted else 'finished'} "
        f"after {human_seconds(result.elapsed)}"
    )
    table.add_column("state")
    table.add_column("rows", justify="right")
    table.add_column("this run", justify="right")
    for state in JobState:
        if state is not JobState.RUNNING:
            table.add_row(state.value, str(counts[state]), str(tally.finished[state]))
    console.print(table)
    console.print(
        f"{_plural(tally.requests, 'request')}, {_plural(tally.retries, 'retry')} scheduled, "
        f"{tally.rate_limited} answered 429",
        highlight=False,
    )
    for line in _summary_lines(result):
        console.print(line, highlight=False)


def _nothing_done(result: RunResult) -> bool:
    tally = result.tally
    return not result.interrupted and not tally.requests and not sum(tally.finished.values())


def _summary_lines(result: RunResult) -> list[str]:
    """What the end of a run means, in a line or two (after the table, or in the JSON)."""
    counts, tally = result.counts, result.tally
    left = counts[JobState.PENDING] + counts[JobState.RUNNING]
    failed = counts[JobState.FAILED]
    if _nothing_done(result):
        # Nothing was left to fetch: say so in one line instead of a table of zeros.
        line = f"nothing to do: {_plural(sum(counts.values()) - left, 'row')} finished earlier"
        if failed:
            line += f"; {_plural(failed, 'row')} failed earlier (`batchmap report --state failed`)"
        return [line]
    lines = []
    if result.interrupted:
        lines.append("Stopped: unfinished rows are pending again; `batchmap resume` continues.")
    elif result.limit is not None and left:
        lines.append(
            f"--limit {result.limit}: {_plural(left, 'row')} still pending; "
            "`batchmap resume` fetches the rest."
        )
    if failed and not result.interrupted:
        hint = "Some rows failed: `batchmap report --state failed` lists them"
        if result.failed_earlier and not tally.finished[JobState.FAILED]:
            hint = (
                f"{_plural(result.failed_earlier, 'row')} failed earlier "
                "(`batchmap report --state failed`)"
            )
        if result.retryable_failures:
            hint += (
                f"; {result.retryable_failures} could succeed later: "
                "`batchmap resume --retry-failed`"
            )
        else:
            hint += " (all permanent, e.g. 404: a retry would only spend quota)"
        lines.append(hint + ".")
    return lines


def _show_status(facts: dict[str, Any]) -> None:
    from batchmap.where import where_lines

    console = _Console(soft_wrap=True)
    console.print(f"{facts['database']}: {facts['total']} identifiers", highlight=False)
    for line in where_lines(
        base_url=facts.get("base_url") or "(not chosen yet: identifAI unless --base-url)",
        out=facts.get("out"),
        db=Path(facts["database"]),
        limits=facts.get("learned_limits") or [],
    ):
        console.print(line, highlight=False)
    table = Table()
    table.add_column("state")
    table.add_column("rows", justify="right")
    for state, n in facts["counts"].items():
        table.add_row(state, str(n))
    console.print(table)
    codes = ", ".join(f"{code}: {n}" for code, n in facts["http_status"].items())
    console.print(f"HTTP status: {codes or 'none yet'}", highlight=False)
    for entry in facts["top_errors"]:
        console.print(f"  {entry['count']:>6} x {entry['error']}", highlight=False)
    console.print(f"last activity: {facts['last_activity'] or 'never'}", highlight=False)
    if facts.get("active_run_pid"):
        console.print(f"a run is active now (pid {facts['active_run_pid']})", highlight=False)
    for line in story_lines(facts):
        console.print(line, highlight=False)
    if facts["pause"]:
        pause = facts["pause"]
        console.print(
            f"paused for {pause['seconds_left']}s more: {pause['reason']}", highlight=False
        )


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point."""
    # SIGTERM takes Ctrl-C's path everywhere: exit 130, one line, nothing half-done. During
    # a run, the run's own handler replaces this one to stop gracefully.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)  # a closed terminal: stop, never die half-done
    cli(prog_name="batchmap")
