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
    # -- A row is `done` only when its complete PNG is at its path
    Mutation(
        "png-crc-unchecked",
        "batchmap/policy.py",
        "if zlib.crc32(body[offset + 4 : end - 4]) != crc:",
        "if False:",
        (
            "tests/test_e2e.py::test_every_done_row_has_its_exact_png_inside_out",
            "tests/test_e2e.py::test_a_damaged_png_is_retried_then_failed_and_never_saved",
            "tests/test_policy.py",
        ),
        "a row is done only when its complete PNG is at its path",
    ),
    Mutation(
        "done-recorded-unpublished",
        "batchmap/runner.py",
        "await asyncio.to_thread(publish, paths, out=self.settings.out)",
        "pass",
        (
            "tests/test_e2e.py::test_every_done_row_has_its_exact_png_inside_out",
            "tests/test_e2e.py::test_a_damaged_png_is_retried_then_failed_and_never_saved",
            "tests/test_policy.py",
        ),
        "a row is done only when its complete PNG is at its path",
    ),
    # -- kill -9 at any instant loses nothing and leaves nothing stray
    Mutation(
        "recover-keeps-running-files",
        "batchmap/app.py",
        "remove_file(heatmap_path(out, job.identifier, layout=layout))",
        "pass",
        (
            "tests/test_crash.py::test_a_leftover_file_of_an_unfinished_row_never_stays_when_the_row_fails",
            "tests/test_crash.py::test_kill_9_at_random_instants_then_resume_finishes_everything_exactly_once",
        ),
        "kill -9 leaves nothing stray (recovery removes the files of running rows)",
    ),
    Mutation(
        "recover-keeps-running-rows",
        "batchmap/app.py",
        "store.recover()",
        "pass",
        (
            "tests/test_crash.py::test_a_leftover_file_of_an_unfinished_row_never_stays_when_the_row_fails",
            "tests/test_crash.py::test_kill_9_at_random_instants_then_resume_finishes_everything_exactly_once",
        ),
        "kill -9 loses nothing: resume finishes the rows a killed run left running",
    ),
    Mutation(
        # Not app._recover's call: fetch_all calls remove_partials again, so one call deleted
        # changes nothing (an equivalent mutant).
        "partials-kept",
        "batchmap/files.py",
        "shutil.rmtree(partial_dir)",
        "pass",
        (
            "tests/test_crash.py::test_a_leftover_file_of_an_unfinished_row_never_stays_when_the_row_fails",
            "tests/test_crash.py::test_kill_9_at_random_instants_then_resume_finishes_everything_exactly_once",
        ),
        "kill -9 leaves nothing stray (.partial/ is emptied at start)",
    ),
    Mutation(
        "failed-row-keeps-stray-file",
        "batchmap/runner.py",
        "remove_file(self._path_for(job))",
        "pass",
        (
            "tests/test_crash.py::test_a_leftover_file_of_an_unfinished_row_never_stays_when_the_row_fails",
            "tests/test_crash.py::test_kill_9_at_random_instants_then_resume_finishes_everything_exactly_once",
        ),
        "a row that ends without a heatmap drops any file under its name",
    ),
    # -- Ctrl-C and SIGTERM stop gracefully
    Mutation(
        "stop-leaves-rows-running",
        "batchmap/runner.py",
        "self.store.release([*leftover, *self._in_flight.values()])",
        "pass",
        (
            "tests/test_crash.py::test_a_signal_stops_the_run_with_130_and_resume_finishes_without_refetching",
            "tests/test_runner.py::test_a_graceful_stop_returns_unfinished_rows_to_pending",
        ),
        "a graceful stop leaves no row running",
    ),
    Mutation(
        "stop-does-not-wake-waiters",
        "batchmap/runner.py",
        "self._interrupt(WAITING)",
        "pass",
        (
            "tests/test_crash.py::test_a_signal_stops_the_run_with_130_and_resume_finishes_without_refetching",
            "tests/test_runner.py::test_a_graceful_stop_returns_unfinished_rows_to_pending",
        ),
        "a stop interrupts workers waiting for their turn",
    ),
    # -- A finished table is never fetched again
    Mutation(
        "claim-finished-rows",
        "batchmap/store.py",
        "(SELECT rowid FROM jobs WHERE state = 'pending' ORDER BY rowid LIMIT ?)",
        "(SELECT rowid FROM jobs WHERE state IN ('pending', 'done') ORDER BY rowid LIMIT ?)",
        (
            "tests/test_e2e.py::test_rerun_load_and_resume_of_a_finished_table_send_no_request_and_change_no_row",
        ),
        "a finished table is never fetched again",
    ),
    # -- Two runs on one database: the second is refused
    Mutation(
        "no-lock",
        "batchmap/lock.py",
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        "pass",
        ("tests/test_e2e.py::test_a_second_run_on_the_same_database_is_refused_naming_the_first",),
        "two runs on one database: the second is refused, naming the first",
    ),
    # -- Loading is idempotent, streamed and atomic
    Mutation(
        "load-replaces-rows",
        "batchmap/store.py",
        '"INSERT OR IGNORE INTO jobs (identifier, created_at) "',
        '"INSERT OR REPLACE INTO jobs (identifier, created_at) "',
        (
            "tests/test_e2e.py::test_loading_is_idempotent_trims_and_counts_duplicates_and_blank_lines",
            "tests/test_store.py",
        ),
        "loading again never resets finished rows",
    ),
    # -- Bad input is one line with file and line, exit 2
    Mutation(
        "nul-bytes-accepted",
        "batchmap/ids.py",
        "if 0 in raw:",
        "if False:",
        (
            "tests/test_ids.py",
            "tests/test_e2e.py::test_bad_input_is_one_line_naming_the_file_with_exit_2",
        ),
        "bad input (NUL bytes) is one line with file and line, exit 2",
    ),
    # -- File names: deterministic, distinct (case-insensitively too), inside --out
    Mutation(
        "case-colliding-names",
        "batchmap/files.py",
        '_PLAIN = re.compile(r"[a-z0-9_-][a-z0-9_.-]{0,199}")',
        '_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")',
        (
            "tests/test_files.py",
            "tests/test_e2e.py::test_any_identifier_is_fetched_percent_encoded_and_saved_inside_out",
        ),
        "file names are distinct, also case-insensitively",
    ),
    # -- The identifier cannot reach another endpoint
    Mutation(
        "dots-not-encoded",
        "batchmap/fetch.py",
        'return HEATMAP_PATH + quote(identifier, safe="").replace(".", "%2E")',
        'return HEATMAP_PATH + quote(identifier, safe="")',
        ("tests/test_fetch.py::test_the_identifier_stays_one_encoded_path_segment",),
        "the identifier stays one percent-encoded path segment",
    ),
    # -- The API key goes only to the configured origin
    Mutation(
        "redirect-anywhere",
        "batchmap/fetch.py",
        "if _origin(target) != origin:",
        "if False:",
        (
            "tests/test_fetch.py::test_the_key_never_follows_a_redirect_to_another_origin",
            "tests/test_e2e.py::test_a_redirect_to_another_origin_is_refused_and_the_key_never_sent_there",
        ),
        "the API key goes only to the configured origin",
    ),
    # -- 429 is never a failure and pauses the whole pool for at least Retry-After
    Mutation(
        "429-no-pause",
        "batchmap/pacer.py",
        "self.pause(now + (wait or self._pause_floor()), reason)",
        "pass",
        ("tests/test_runner.py::test_a_429_pauses_the_whole_pool_and_costs_no_attempt",),
        "a 429 pauses the whole pool for at least Retry-After (the runner test cited alone)",
    ),
    Mutation(
        "429-no-pause-all-cited",
        "batchmap/pacer.py",
        "self.pause(now + (wait or self._pause_floor()), reason)",
        "pass",
        (
            "tests/test_runner.py::test_a_429_pauses_the_whole_pool_and_costs_no_attempt",
            "tests/test_pacer.py",
            "tests/test_e2e.py::test_a_rate_limited_run_paces_itself_and_never_fails_a_row_for_429",
        ),
        "a 429 pauses the whole pool for at least Retry-After (every test cited)",
    ),
    Mutation(
        "pause-shortened",
        "batchmap/pacer.py",
        "if until > self.paused_until:",
        "if until != self.paused_until:",
        (
            "tests/test_runner.py::test_a_429_pauses_the_whole_pool_and_costs_no_attempt",
            "tests/test_pacer.py",
            "tests/test_e2e.py::test_a_rate_limited_run_paces_itself_and_never_fails_a_row_for_429",
        ),
        "a pause in force is never shortened by a later, shorter one",
    ),
    Mutation(
        "sleepers-not-requeued",
        "batchmap/pacer.py",
        "continue  # a 429 paused the pool while we waited: queue again",
        "pass",
        (
            "tests/test_runner.py::test_a_429_pauses_the_whole_pool_and_costs_no_attempt",
            "tests/test_pacer.py",
            "tests/test_e2e.py::test_a_rate_limited_run_paces_itself_and_never_fails_a_row_for_429",
        ),
        "workers already asleep when a pause arrives wait for it too",
    ),
    Mutation(
        "429-costs-an-attempt",
        "batchmap/runner.py",
        "self._ready.appendleft(job)",
        "self._ready.appendleft(Job(job.rowid, job.identifier, job.attempts + 1))",
        (
            "tests/test_runner.py::test_a_429_pauses_the_whole_pool_and_costs_no_attempt",
            "tests/test_pacer.py",
            "tests/test_e2e.py::test_a_rate_limited_run_paces_itself_and_never_fails_a_row_for_429",
        ),
        "a 429 is never a failure and costs no attempt",
    ),
    # -- 401/403 stop the run at once with exit 3, rows stay pending
    Mutation(
        "auth-keeps-in-flight",
        "batchmap/runner.py",
        "self.stop.force.set()",
        "pass",
        (
            "tests/test_e2e.py::test_a_wrong_key_stops_the_run_with_exit_3_and_leaves_rows_pending",
            "tests/test_e2e.py::test_a_key_without_api_access_stops_with_exit_3_and_says_to_accept_the_terms",
        ),
        "a 401/403 abandons requests in flight",
    ),
    Mutation(
        "auth-not-raised",
        "batchmap/runner.py",
        "self.auth_error = AuthError(stop_message(outcome.http_status or 401))",
        "self.auth_error = None",
        (
            "tests/test_e2e.py::test_a_wrong_key_stops_the_run_with_exit_3_and_leaves_rows_pending",
            "tests/test_e2e.py::test_a_key_without_api_access_stops_with_exit_3_and_says_to_accept_the_terms",
        ),
        "401/403 stop the run with exit 3",
    ),
    Mutation(
        "403-not-a-stop",
        "batchmap/policy.py",
        "if status in (401, 403):",
        "if status == 401:",
        (
            "tests/test_e2e.py::test_a_wrong_key_stops_the_run_with_exit_3_and_leaves_rows_pending",
            "tests/test_e2e.py::test_a_key_without_api_access_stops_with_exit_3_and_says_to_accept_the_terms",
        ),
        "403 stops the run with exit 3",
    ),
    # -- --max-rate caps the pacer (README, Pacing)
    Mutation(
        "max-rate-ignored",
        "batchmap/pacer.py",
        "caps.append(self.max_rate)",
        "pass",
        ("tests/test_pacer.py::test_max_rate_is_a_ceiling",),
        "--max-rate caps the learned rate",
    ),
    # -- Transient errors are retried with backoff, then failed
    Mutation(
        "no-backoff",
        "batchmap/runner.py",
        "delay = backoff_delay(attempts, base=self.settings.backoff_base, jitter=self.jitter)",
        "delay = 0.0",
        (
            "tests/test_runner.py::test_transient_errors_back_off_and_then_succeed_without_sleeping",
            "tests/test_e2e.py::test_transient_5xx_are_retried_until_every_row_ends_right",
        ),
        "transient errors are retried with backoff",
    ),
    Mutation(
        "retry-after-not-a-floor",
        "batchmap/policy.py",
        "return max(jitter(ceiling), retry_after or 0.0)",
        "return jitter(ceiling)",
        (
            "tests/test_runner.py::test_transient_errors_back_off_and_then_succeed_without_sleeping",
            "tests/test_e2e.py::test_transient_5xx_are_retried_until_every_row_ends_right",
        ),
        "a server's Retry-After is a floor for the backoff",
    ),
    Mutation(
        "500-is-permanent",
        "batchmap/policy.py",
        "if status == 408 or status >= 500:",
        "if status == 408 or status > 500:",
        (
            "tests/test_runner.py::test_transient_errors_back_off_and_then_succeed_without_sleeping",
            "tests/test_e2e.py::test_transient_5xx_are_retried_until_every_row_ends_right",
        ),
        "every 5xx is transient",
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
