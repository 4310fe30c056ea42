"""The Python API: what `import batchmap` exports, and `Job` used from a script or a notebook."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import batchmap
from batchmap import Job, JobState, Pace, Progress, Stop
from tests.conftest import API_KEY, FakeServer, make_ids, write_csv

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_exports_exactly_its_documented_api() -> None:
    # As httpx's test_exported_members: a name added or dropped is a decision, not an accident.
    assert batchmap.__all__ == [
        "Api", "ApiUnusableError", "AuthError", "BatchmapError", "InputError", "Job",
        "JobState", "Layout", "LoadStats", "LockedError", "Output", "Pace", "Progress",
        "RunResult", "Stop", "StorageError", "__version__",
    ]  # fmt: skip
    for name in batchmap.__all__:
        assert getattr(batchmap, name) is not None
    assert (ROOT / "batchmap" / "py.typed").exists()


def test_importing_batchmap_does_not_load_httpx() -> None:
    # `status` and `report` start fast because nothing pulls the HTTP stack in eagerly.
    code = "import sys, batchmap; print('httpx' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.stdout.strip() == "False", found.stderr


def test_load_takes_a_csv_or_any_iterable_and_counts(tmp_path: Path) -> None:
    job = Job(tmp_path / "jobs.db")
    assert job.load(["a", " b ", "", "a"]) == batchmap.LoadStats(3, 2, 1, 1)
    stats = job.load(write_csv(tmp_path / "ids.csv", ["b", "c"]))
    assert (stats.read, stats.added) == (2, 1)
    assert [row["identifier"] for row in job.rows(state="pending")] == ["a", "b", "c"]


def test_run_fetches_reports_progress_and_leaves_no_signal_handler(
    tmp_path: Path, shared_fake: FakeServer
) -> None:
    ids = make_ids("api", ok=6, no_heatmap=1, missing=1)
    job = Job(tmp_path / "jobs.db")
    job.load(ids)
    seen: list[Progress] = []
    before = signal.getsignal(signal.SIGINT)
    result = job.run(
        api_key=API_KEY, base_url=shared_fake.url, out=tmp_path / "heatmaps",
        pace=Pace(concurrency=2), on_progress=seen.append,
    )  # fmt: skip
    assert signal.getsignal(signal.SIGINT) is before
    assert result.exit_code == 1  # the unknown identifier
    assert (result.counts[JobState.DONE], result.counts[JobState.FAILED]) == (6, 1)
    assert seen and dataclasses.is_dataclass(seen[-1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[-1].done = 0  # type: ignore[misc]
    assert job.status()["counts"]["done"] == 6
    assert job.verify().clean


def test_arun_works_inside_a_running_loop_and_a_cancelled_task_stops_gracefully(
    tmp_path: Path, fake_server_factory: Callable[..., FakeServer]
) -> None:
    server = fake_server_factory("--no-limits", "--latency", "0.3")
    job = Job(tmp_path / "jobs.db")
    job.load(make_ids("notebook", ok=40))

    async def notebook() -> None:  # a notebook cell already runs inside an event loop
        task = asyncio.create_task(
            job.arun(api_key=API_KEY, base_url=server.url, out=tmp_path / "h", prefilter=False)
        )
        await asyncio.sleep(1.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(notebook())
    counts = {row["state"] for row in job.rows()}
    assert "running" not in counts and "pending" in counts


def test_a_stop_token_ends_a_run_with_interrupted(tmp_path: Path, shared_fake: FakeServer) -> None:
    job = Job(tmp_path / "jobs.db")
    job.load(make_ids("token", ok=30))
    stop = Stop()

    def halt(progress: Progress) -> None:
        if progress.done >= 1:
            stop.request()

    result = job.run(
        api_key=API_KEY, base_url=shared_fake.url, out=tmp_path / "h",
        pace=Pace(max_rate=20), on_progress=halt, stop=stop,
    )  # fmt: skip
    assert result.interrupted and result.exit_code == 130
    assert result.counts[JobState.PENDING] > 0


def test_the_readme_python_section_runs_as_written(tmp_path: Path, shared_fake: FakeServer) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's Python API section has no example"
    write_csv(tmp_path / "ids.csv", make_ids("readme", ok=5, no_heatmap=1))
    env = {**os.environ, "IDENTIFAI_API_KEY": API_KEY, "IDENTIFAI_BASE_URL": shared_fake.url}
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_dir_lists_the_public_names_for_tab_completion() -> None:
    listed = dir(batchmap)
    assert set(batchmap.__all__) <= set(listed)
    assert {"Job", "Pace", "Progress"} <= set(listed)


def test_run_inside_a_running_loop_names_arun_and_leaves_no_coroutine_behind(
    tmp_path: Path,
) -> None:
    code = (
        "import asyncio, warnings, batchmap\n"
        "warnings.simplefilter('error')\n"
        "async def cell():\n"
        "    batchmap.Job('jobs.db').run(api_key='k')\n"
        "try:\n"
        "    asyncio.run(cell())\n"
        "except RuntimeError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=tmp_path, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert "await job.arun(...)" in done.stdout, done.stdout + done.stderr
    assert "never awaited" not in done.stderr, done.stderr
    assert not (tmp_path / "jobs.db").exists()


def test_the_last_progress_call_is_the_final_state(tmp_path: Path, shared_fake: FakeServer) -> None:
    job = Job(tmp_path / "jobs.db")
    job.load(make_ids("final", ok=30, no_heatmap=2, missing=1))
    seen: list[Progress] = []
    result = job.run(api_key=API_KEY, base_url=shared_fake.url, out=tmp_path / "h",
                     on_progress=seen.append)  # fmt: skip
    last = seen[-1]
    assert (last.finished, last.total, last.pending) == (33, 33, 0)
    assert (last.done, last.no_heatmap, last.failed) == (30, 2, 1) == (
        result.counts[JobState.DONE], result.counts[JobState.NO_HEATMAP],
        result.counts[JobState.FAILED],
    )  # fmt: skip


def test_api_errors_name_the_arguments_not_the_cli_options(
    tmp_path: Path, shared_fake: FakeServer
) -> None:
    job = Job(tmp_path / "jobs.db")
    job.load(make_ids("words", ok=1))
    with pytest.raises(batchmap.AuthError) as refused:
        job.run(api_key="not-the-key", base_url=shared_fake.url, out=tmp_path / "h")
    assert "api_key" in str(refused.value) and "--api-key" not in str(refused.value)
    with pytest.raises(batchmap.InputError) as wrong:
        job.run(api_key=API_KEY, base_url="ftp://x", out=tmp_path / "h")
    assert "base_url" in str(wrong.value) and "--base-url" not in str(wrong.value)
    with pytest.raises(batchmap.InputError) as moved:
        job.run(api_key=API_KEY, base_url=shared_fake.url, out=tmp_path / "elsewhere")
    assert str(moved.value).startswith("out "), moved.value


def test_limit_fetches_at_most_that_many_rows_and_leaves_the_rest_pending(
    tmp_path: Path, shared_fake: FakeServer
) -> None:
    ids = make_ids("limit-api", ok=25)
    job = Job(tmp_path / "jobs.db")
    job.load(ids)
    result = job.run(api_key=API_KEY, base_url=shared_fake.url, out=tmp_path / "h", limit=10)
    assert result.exit_code == 0
    assert (result.counts[JobState.DONE], result.counts[JobState.PENDING]) == (10, 15)
    with pytest.raises(batchmap.InputError, match="limit=0"):
        job.run(api_key=API_KEY, limit=0)


def test_a_misspelt_or_missing_keyword_is_a_type_error_and_touches_nothing(tmp_path: Path) -> None:
    # run and arun share one keyword list (RunOptions): a typo must not be silently ignored.
    job = Job(tmp_path / "jobs.db")
    with pytest.raises(TypeError, match="unexpected keyword argument 'outt'"):
        job.run(api_key=API_KEY, outt=tmp_path / "h")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing required keyword argument: 'api_key'"):
        job.run()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"Job\.arun\(\) got an unexpected keyword"):
        asyncio.run(job.arun(api_key=API_KEY, prefiltre=False))  # type: ignore[call-arg]
    assert list(tmp_path.iterdir()) == []
