"""`make mutate`: break one line at a time and check that the tests cited as proof notice.

Each mutation names a file, a substring that occurs on exactly one line of it, what that
substring becomes, the tests that must then fail, and the guarantee (README's Guarantees table)
it breaks. Every mutation is applied to a temporary COPY of the working tree, never to the
tree itself; the copy is imported first (PYTHONPATH), bytecode is never written (a flipped `<`
keeps a file's size and mtime second, which would let a stale .pyc hide it). KILLED means a
test failed (or hung past the timeout); SURVIVED means the cited tests do not prove the
guarantee. The exit code is 1 when any mutation survives, 2 when the unmutated tests fail.

    python tools/mutate.py [NAME ...] [--each] [--list] [--timeout S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300.0  # seconds for one pytest run; a hang counts as KILLED


@dataclass(frozen=True, slots=True)
class Mutation:
    """One-line break: in `file`, the line holding `find` gets `find` replaced by `replace`."""

    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    guarantee: str


# The table the coordinator extends. Tests are those the README cites for the guarantee.
MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "png-crc-unchecked",
        "batchmap/policy.py",
        "if zlib.crc32(view[offset + 4 : end - 4]) != crc:",
        "if False:",
        ("tests/test_policy.py",),
        "a row is done only with its complete PNG",
    ),
    Mutation(
        "done-recorded-unpublished",
        "batchmap/runner.py",
        "await asyncio.to_thread(publish, paths, out=ctx.settings.out)",
        "pass",
        (
            "tests/test_e2e.py::test_every_done_row_has_its_exact_png_inside_out",
            "tests/test_runner.py::test_a_flush_cancelled_halfway_still_records_its_batch",
        ),
        "a row is done only with its file at its path",
    ),
    Mutation(
        "recover-keeps-running-files",
        "batchmap/session.py",
        "remove_file(heatmap_path(out, claimed.identifier, layout=layout))",
        "pass",
        (
            "tests/test_crash.py::test_recovery_removes_the_file_of_a_running_row_before_any_request",
        ),
        "kill -9 leaves nothing stray",
    ),
    Mutation(
        "recover-keeps-running-rows",
        "batchmap/session.py",
        "    store.recover()",
        "    pass",
        (
            "tests/test_crash.py::test_recovery_removes_the_file_of_a_running_row_before_any_request",
            "tests/test_crash.py::test_kill_9_at_random_instants_then_resume_finishes_everything_exactly_once",
        ),
        "kill -9 loses nothing",
    ),
    Mutation(
        "partials-kept",
        "batchmap/files.py",
        "shutil.rmtree(partial_dir)",
        "pass",
        (
            "tests/test_crash.py::test_recovery_removes_the_file_of_a_running_row_before_any_request",
        ),
        "no partial file is left",
    ),
    Mutation(
        "failed-row-keeps-stray-file",
        "batchmap/runner.py",
        "remove_file(self._path_for(job))",
        "pass",
        (
            "tests/test_crash.py::test_a_leftover_file_of_a_pending_row_never_stays_when_the_row_fails",
        ),
        "a row that ends without a heatmap keeps no file",
    ),
    Mutation(
        "stop-leaves-rows-running",
        "batchmap/runner.py",
        "ctx.store.release(leftover)",
        "pass",
        (
            "tests/test_runner.py::test_a_graceful_stop_returns_unfinished_rows_to_pending",
            "tests/test_crash.py::test_a_signal_stops_the_run_with_130_and_resume_finishes_without_refetching",
        ),
        "Ctrl-C leaves no row running",
    ),
    Mutation(
        "stop-does-not-wake-waiters",
        "batchmap/runner.py",
        "self._interrupt(WAITING)",
        "pass",
        (
            "tests/test_crash.py::test_a_signal_stops_the_run_with_130_and_resume_finishes_without_refetching",
            "tests/test_crash.py::test_a_pause_the_server_imposed_survives_a_restart",
            "tests/test_nights_e2e.py::test_a_stop_while_every_worker_waits_out_a_pause_is_at_once",
        ),
        "Ctrl-C stops at once",
    ),
    Mutation(
        "claim-finished-rows",
        "batchmap/store/jobs.py",
        "f\"WHERE state = 'pending'{asked}{self._upto} ORDER BY rowid LIMIT ?) \"",
        "f\"WHERE state IN ('pending', 'done'){asked}{self._upto} ORDER BY rowid LIMIT ?) \"",
        (
            "tests/test_e2e.py::test_rerun_load_and_resume_of_a_finished_table_send_no_request_and_change_no_row",
        ),
        "a finished table is never fetched again",
    ),
    Mutation(
        "no-lock",
        "batchmap/lock.py",
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        "pass",
        ("tests/test_e2e.py::test_a_second_run_on_the_same_database_is_refused_naming_the_first",),
        "two runs: the second is refused",
    ),
    Mutation(
        "pause-shortened",
        "batchmap/pacer.py",
        "if until > self.paused_until:",
        "if True:",
        (
            "tests/test_pacer.py",
            "tests/test_runner.py::test_a_429_pauses_the_whole_pool_and_costs_no_attempt",
        ),
        "a pause is never shortened",
    ),
    Mutation(
        "sleepers-not-requeued",
        "batchmap/pacer.py",
        "continue  # a pause came while we waited: queue again",
        "pass",
        (
            "tests/test_pacer.py",
            "tests/test_runner.py::test_a_429_pauses_the_whole_pool_and_costs_no_attempt",
        ),
        "a 429 pauses every worker",
    ),
    Mutation(
        "max-rate-ignored",
        "batchmap/pacer.py",
        "rates = [r for r in (self.max_rate, self.windows.rate, self.aimd.rate) if r is not None]",
        "rates = [r for r in (self.windows.rate, self.aimd.rate) if r is not None]",
        (
            "tests/test_pacer.py",
            "tests/test_faults_e2e.py::test_a_zero_rate_limit_header_never_switches_pacing_off",
        ),
        "--max-rate is a ceiling",
    ),
    Mutation(
        "long-window-averaged",
        "batchmap/strategies.py",
        "return min(self.windows.values(), key=lambda w: (w.low, w.limit / w.low))",
        "return min(self.windows.values(), key=lambda w: w.limit / w.low)",
        (
            "tests/test_strategies.py::test_the_pace_is_the_shortest_window_s_not_the_long_window_s_average",
            "tests/test_laravel_limiter.py",
        ),
        "a window's quota is spent at the short limit's pace, not averaged",
    ),
    Mutation(
        "creeping-cut",
        "batchmap/strategies.py",
        "DECREASE = 0.7  # rate after a congestion signal",
        "DECREASE = 0.9  # rate after a congestion signal",
        ("tests/test_strategies.py",),
        "a refusal that names no limit cuts the pace under it in one step",
    ),
    Mutation(
        "no-wait-not-doubled",
        "batchmap/pacer.py",
        "pause = wait or self._pause_floor() * 2.0 ** self._strike(sent_at, now)",
        "pause = wait or self._pause_floor()",
        ("tests/test_pacer.py::test_429s_that_name_no_wait_double_the_pause_until_one_succeeds",),
        "429s that name no wait, in a row, double the pause",
    ),
    Mutation(
        "header-outranks-successes",
        "batchmap/strategies.py",
        "if window.zeros >= LIAR:",
        "if False:",
        ("tests/test_strategies.py::test_a_header_that_successes_contradict_is_ignored",),
        "a success outranks a header saying 0 remain",
    ),
    Mutation(
        "429-costs-an-attempt",
        "batchmap/runner.py",
        "self.ctx.tally.rate_limited += 1",
        "self.ctx.tally.rate_limited += 1; job = Claim(job.rowid, job.identifier, 9)",
        ("tests/test_runner.py::test_a_429_pauses_the_whole_pool_and_costs_no_attempt",),
        "a 429 is never an attempt",
    ),
    Mutation(
        "auth-not-raised",
        "batchmap/runner.py",
        "self.ctx.end(AuthError(stop_message(outcome.http_status or 401)))",
        "pass",
        (
            "tests/test_runner.py::test_a_refused_key_stops_the_run_and_leaves_rows_pending",
            "tests/test_e2e.py::test_a_wrong_key_stops_the_run_with_exit_3_and_leaves_rows_pending",
        ),
        "401/403 stop the run",
    ),
    Mutation(
        "no-backoff",
        "batchmap/runner.py",
        "heapq.heappush(self._retries, (ctx.clock() + delay, job.rowid, retry))",
        "heapq.heappush(self._retries, (ctx.clock(), job.rowid, retry))",
        (
            "tests/test_runner.py::test_a_broken_row_backs_off_without_sleeping_while_the_api_answers",
        ),
        "transient errors back off",
    ),
    Mutation(
        "retry-after-not-a-floor",
        "batchmap/policy.py",
        "return max(jitter(ceiling), retry_after or 0.0)",
        "return jitter(ceiling)",
        ("tests/test_policy.py",),
        "Retry-After is a floor for backoff",
    ),
    Mutation(
        "500-is-permanent",
        "batchmap/policy.py",
        "if status == 408 or status >= 500:",
        "if status == 408:",
        (
            "tests/test_policy.py",
            "tests/test_e2e.py::test_transient_5xx_are_retried_until_every_row_ends_right",
        ),
        "5xx is transient",
    ),
    Mutation(
        "outage-never-declared",
        "batchmap/health.py",
        "if len(self._streak) >= STREAK and now - self._streak_since >= STREAK_SECONDS:",
        "if False:",
        (
            "tests/test_health.py",
            "tests/test_runner.py::test_an_outage_pauses_the_pool_probes_and_spends_no_attempt",
        ),
        "an outage fails no row and spends no attempt",
    ),
    Mutation(
        "outage-not-refunded",
        "batchmap/runner.py",
        "        self._refund(call.refund)",
        "        pass",
        (
            "tests/test_runner.py::test_an_outage_pauses_the_pool_probes_and_spends_no_attempt",
            "tests/test_runner.py::test_an_outage_a_classifications_request_reveals_gives_the_workers_attempts_back",
        ),
        "an outage spends no attempt",
    ),
    Mutation(
        "refund-one-attempt-each",
        "batchmap/health.py",
        "refund = {key: paid for key, paid in self._streak.items() if key is not None and paid}",
        "refund = {key: 1 for key, paid in self._streak.items() if key is not None and paid}",
        ("tests/test_health.py::test_who_pays_for_a_failure",),
        "an outage spends no attempt",
    ),
    Mutation(
        "never-give-up-at-start",
        "batchmap/health.py",
        "if self._start_failures >= START_PROBES:",
        "if False:",
        (
            "tests/test_health.py",
            "tests/test_mistakes_e2e.py::test_a_wrong_port_stops_within_seconds_with_exit_4_and_rows_untouched",
        ),
        "a wrong address stops fast",
    ),
    Mutation(
        "no-404-probation",
        "batchmap/runner.py",
        "self._hold_404(job, outcome, attempts)",
        "self._finish(self._failure(job, outcome, attempts=attempts, retryable=False))",
        (
            "tests/test_runner.py::test_a_new_job_whose_first_answers_are_all_404_stops_with_rows_pending",
        ),
        "a wrong prefix costs a handful of requests",
    ),
    Mutation(
        "max-wait-ignored",
        "batchmap/runner.py",
        "if wait is not None and wait > ctx.settings.pace.max_wait:",
        "if False:",
        (
            "tests/test_runner.py::test_a_wait_longer_than_max_wait_stops_the_run_instead_of_sleeping",
            "tests/test_faults_e2e.py::test_a_wait_longer_than_max_wait_stops_with_exit_4_and_rows_pending",
        ),
        "a long Retry-After stops the run",
    ),
    Mutation(
        "key-not-redacted",
        "batchmap/policy.py",
        "    return re.sub(pattern, REDACTED, text, flags=re.IGNORECASE)",
        "    return text",
        (
            "tests/test_policy.py",
            "tests/test_fetch_hostile.py::test_a_server_echoing_the_key_never_gets_it_into_the_error",
        ),
        "the key is never shown",
    ),
    Mutation(
        "key-with-space-accepted",
        "batchmap/policy.py",
        "    if any(c.isspace() for c in cleaned):",
        "    if False:",
        ("tests/test_policy.py",),
        "a key that cannot be a header is refused",
    ),
    Mutation(
        "undecided-classification-ends-row",
        "batchmap/store/jobs.py",
        'if item.has_heatmap is False and item.status in (None, "done")',
        "if item.has_heatmap is False",
        (
            "tests/test_store.py::test_classifications_finalise_only_pending_rows_without_heatmap_whose_answer_is_done",
            "tests/test_runner.py::test_an_undecided_classification_never_finalises_a_row",
        ),
        "a running classification never ends a row",
    ),
    Mutation(
        "timeline-not-written",
        "batchmap/runner.py",
        "minutes = ctx.timeline.take(ctx.pacer.view()) if self.run_id is not None else []",
        "minutes = []",
        (
            "tests/test_runner.py::test_the_timeline_counts_what_the_server_answered",
            "tests/test_timeline_e2e.py",
        ),
        "the timeline is written with its rows",
    ),
    Mutation(
        "redirects-fail-rows",
        "batchmap/runner.py",
        "self._hold_redirect(self._failure(job, outcome, attempts=attempts, retryable=False))",
        "self._finish(self._failure(job, outcome, attempts=attempts, retryable=False))",
        (
            "tests/test_nights_e2e.py::test_a_base_url_that_redirects_to_https_stops_and_names_the_base_url_to_use",
            "tests/test_nights_e2e.py::test_a_redirect_loop_stops_the_run_with_rows_pending",
        ),
        "a redirecting address fails no row",
    ),
    Mutation(
        "lone-failures-are-outages",
        "batchmap/health.py",
        "if failure is Failure.TIMEOUT or row in self.suspects:",
        "if False:",
        (
            # The e2e run kills it only when the broken rows' last tries come after the others
            # ended (the job's order, backoff's jitter): the table kills it every time.
            "tests/test_health.py::test_a_body_that_trickles_past_the_timeout_is_the_rows_own",
            "tests/test_health.py::test_rows_failing_on_their_own_never_make_an_outage",
            "tests/test_nights_e2e.py::test_rows_that_always_trickle_fail_on_their_own_and_the_job_ends",
        ),
        "a row that fails alone fails; the job ends",
    ),
    Mutation(
        "silence-never-gives-up",
        "batchmap/health.py",
        "if len(self._silent) >= START_PROBES:",
        "if False:",
        (
            "tests/test_nights_e2e.py::test_a_server_that_never_answers_stops_the_run_like_a_refused_one",
        ),
        "silence stops a run like refusal",
    ),
    Mutation(
        "long-wait-forgotten",
        "batchmap/session.py",
        "wait_until = server_wait(store, max_wait=pace.max_wait)",
        "wait_until = 0.0",
        ("tests/test_nights_e2e.py::test_a_daily_quota_is_kept_until_the_time_the_server_named",),
        "a server's long wait is kept exactly",
    ),
    Mutation(
        "no-grace-after-a-stop",
        "batchmap/runner.py",
        "await asyncio.wait_for(self.ctx.stop.force.wait(), GRACE)",
        "await self.ctx.stop.force.wait()",
        (
            "tests/test_nights_e2e.py::test_a_signal_stops_within_seconds_even_with_slow_requests_in_flight",
        ),
        "a signal stops within seconds",
    ),
    Mutation(
        "classifications-429-uncounted",
        "batchmap/minutes.py",
        "and not (classifications and status != 429):",
        "and not classifications:",
        (
            "tests/test_nights_e2e.py::test_429s_answered_to_classifications_requests_are_counted_in_the_timeline",
        ),
        "the timeline adds up to the server's log",
    ),
)


@dataclass(frozen=True, slots=True)
class Result:
    """How one mutation fared: KILLED or SURVIVED (or ERROR for a table entry that is wrong)."""

    mutation: Mutation
    verdict: str
    seconds: float
    detail: str  # the failing test, "timeout", or why the entry could not be applied


def copy_tree(to: Path) -> None:
    """The working tree as git sees it (tracked, untracked not ignored), uncommitted edits too."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a deleted but still tracked file is skipped
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)


def mutated(text: str, mutation: Mutation) -> str:
    """`text` with the mutation applied; ValueError unless `find` is on exactly one line."""
    if "\n" in mutation.find or mutation.find == mutation.replace:
        raise ValueError("`find` must be part of one line, and `replace` differ from it")
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if mutation.find in line]
    if len(hits) != 1:
        raise ValueError(f"`find` is on {len(hits)} lines of {mutation.file}, not 1")
    lines[hits[0]] = lines[hits[0]].replace(mutation.find, mutation.replace, 1)
    return "".join(lines)


def environment(copy: Path) -> dict[str, str]:
    """Import batchmap from the copy, never write bytecode, keep pytest's own settings out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def pytest(copy: Path, tests: Sequence[str], *, timeout: float) -> tuple[bool, str]:
    """Run tests in the copy: (passed, the first failure or 'timeout')."""
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(
            argv,
            cwd=copy,
            env=environment(copy),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"timeout after {timeout:.0f} s"
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    if done.returncode == 0:
        return True, ""
    return False, failed[0] if failed else f"pytest exit {done.returncode}"


def check_copy_imports_itself(copy: Path) -> None:
    """The copy's batchmap must win over the installed (editable) one, or nothing is tested."""
    found = subprocess.run(
        [sys.executable, "-c", "import batchmap; print(batchmap.__file__)"],
        cwd=copy,
        env=environment(copy),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"mutate: the copy imports batchmap from {found}, not from {copy}")


def run_one(copy: Path, mutation: Mutation, *, each: bool, timeout: float) -> Result:
    """Apply, test, restore; with `each`, every cited test on its own (which ones kill it)."""
    path = copy / mutation.file
    original = path.read_text(encoding="utf-8")
    started = time.perf_counter()
    try:
        path.write_text(mutated(original, mutation), encoding="utf-8")
    except ValueError as error:
        return Result(mutation, "ERROR", 0.0, str(error))
    try:
        if each:
            killers = [t for t in mutation.tests if not pytest(copy, [t], timeout=timeout)[0]]
            verdict = "KILLED" if killers else "SURVIVED"
            detail = "killed by: " + ", ".join(killers) if killers else "no cited test fails"
        else:
            passed, detail = pytest(copy, mutation.tests, timeout=timeout)
            verdict = "SURVIVED" if passed else "KILLED"
    finally:
        path.write_text(original, encoding="utf-8")
    return Result(mutation, verdict, time.perf_counter() - started, detail)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Mutation names (default all), --each, --list, --timeout."""
    parser = argparse.ArgumentParser(
        prog="python tools/mutate.py",
        description="Apply one-line mutations to a copy of the tree and run the tests cited.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="mutations to run (default all)")
    parser.add_argument("--each", action="store_true", help="run each cited test on its own")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per pytest run")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation {', '.join(sorted(unknown))} (see --list)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Baseline, then every chosen mutation; a table; exit 1 if any survived."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    if args.list:
        for m in chosen:
            print(f"{m.name:<28} {m.file:<20} {m.guarantee}")
        return 0
    with tempfile.TemporaryDirectory(prefix="batchmap-mutate-") as tmp:
        copy = Path(tmp)
        copy_tree(copy)
        check_copy_imports_itself(copy)
        every_test = sorted({t for m in chosen for t in m.tests})
        print(
            f"baseline: the {len(every_test)} cited test targets on the unmutated copy", flush=True
        )
        passed, detail = pytest(copy, every_test, timeout=args.timeout * 2)
        if not passed:  # once more: a flaky test should be named, not stop the whole check
            print(f"baseline failed once ({detail}); trying again", flush=True)
            passed, again = pytest(copy, every_test, timeout=args.timeout * 2)
            if not passed:
                print(f"mutate: the tests fail without any mutation ({again}); fix that first")
                return 2
            print(f"FLAKY: {detail} (passed on the second try; its KILLED may be luck)")
        results = []
        for mutation in chosen:
            result = run_one(copy, mutation, each=args.each, timeout=args.timeout)
            results.append(result)
            print(
                f"{result.verdict:<9} {mutation.name:<28} {result.seconds:5.1f} s  {result.detail}",
                flush=True,
            )
    survived = [r for r in results if r.verdict != "KILLED"]
    print(f"\n{len(results) - len(survived)} of {len(results)} mutations killed.")
    for r in survived:
        print(f"  {r.verdict}: {r.mutation.name} ({r.mutation.file}): {r.mutation.guarantee}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
