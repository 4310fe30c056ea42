"""The README's Guarantees table names only tests that exist, so a rename cannot orphan a claim."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import cli_env

ROOT = Path(__file__).resolve().parent.parent


def cited_tests() -> list[tuple[str, str]]:
    """(file, test) for every test the Guarantees table names; a bare name is in the last file."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    cited: list[tuple[str, str]] = []
    for row in table.splitlines():
        current = None
        for token in re.findall(r"`([^`]+)`", row):
            path, _, name = token.partition("::")
            if path.startswith("tests/"):
                current = path
                if name:
                    cited.append((path, name))
            elif token.startswith("test_") and current is not None:
                cited.append((current, token))
    return cited


def test_every_test_the_readme_cites_exists() -> None:
    cited = cited_tests()
    assert len(cited) > 40
    missing = [
        f"{path}::{name}"
        for path, name in cited
        if f"def {name}(" not in (ROOT / path).read_text(encoding="utf-8")
    ]
    assert missing == []


# -- the rehearsal, run as written --------------------------------------------------------


def _section(title: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)


def _expected_code(line: str) -> int:
    found = re.search(r"#.*\bexit (\d+)", line)
    return int(found.group(1)) if found else 0


def _start_fake(command: str) -> tuple[subprocess.Popen[str], list[str]]:
    """The README's fake-server line on a free port; returns the lines it says to paste."""
    args = shlex.split(command)
    assert args[:2] == ["batchmap", "fake-server"], command
    port = args.index("--port")
    args[port + 1] = "0"
    # Without rate limits, so that the rehearsal takes seconds rather than a minute.
    process = subprocess.Popen(
        [sys.executable, "-m", "batchmap", *args[1:], "--no-limits"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        text=True, env=cli_env(),
    )  # fmt: skip
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(5)]
    return process, [line.strip() for line in lines if line.startswith("export ")]


def test_the_readme_rehearsal_runs_as_written_with_the_exit_codes_it_says(tmp_path: Path) -> None:
    section = _section("Rehearse against the fake server")
    server_block, work_block, cron_block = _blocks(section)
    process, pasted = _start_fake(server_block.strip())
    try:
        documented = [line for line in work_block.splitlines() if line.startswith("export ")]
        # The fake prints the very lines the README pastes, but for the port it really has.
        assert [line.split("=")[0] for line in pasted] == [
            line.split("=")[0] for line in documented
        ]
        assert pasted[1] == documented[1]  # the key
        url = pasted[0].split("=", 1)[1]
        env = cli_env(
            IDENTIFAI_BASE_URL=url,
            IDENTIFAI_API_KEY="demo-key",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        )
        shutil.copy(ROOT / "sample_ids.csv", tmp_path)
        outputs = {}
        for line in work_block.splitlines():
            if not line.strip() or line.startswith("export "):
                continue
            done = subprocess.run(
                ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == _expected_code(line), (line, done.stdout, done.stderr)
            outputs[line.split("#")[0].strip()] = done
    finally:
        process.terminate()
        process.wait(timeout=10)
    dry = outputs["batchmap run sample_ids.csv --dry-run"].stdout
    assert "rows to fetch: 50 " in dry and "no request sent" in dry, dry
    assert "nothing to do" in outputs["batchmap resume"].stdout  # the second one
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert report.count("<img") >= 8  # the first 10 rows: 8 heatmaps, 2 unknown
    nightly = [line for line in outputs if "nightly.log" in line]
    assert outputs[nightly[0]].stdout == "" and outputs[nightly[0]].stderr == ""
    for logged in (tmp_path / "nightly.log").read_text().splitlines():
        assert {"time", "level", "event"} <= json.loads(logged).keys()
    # The cron line runs exactly the command the rehearsal ran last.
    assert cron_block.strip().endswith(nightly[0])
