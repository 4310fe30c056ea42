"""Build batchmap's wheel, install it in a clean venv and smoke-test it (run by `make test`).

It catches what an editable install hides: a module or data file (py.typed) missing from the
wheel, a broken entry point, metadata without license or version. pip's own configuration and
cache are used, so on a machine with local mirrors this runs offline in a few seconds.

    python tools/check_wheel.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--quiet", "--disable-pip-version-check"]
SMOKE = """
import importlib.metadata as md, importlib.resources as res, batchmap
assert batchmap.__version__ == md.version("batchmap"), batchmap.__version__
assert res.files("batchmap").joinpath("py.typed").is_file(), "py.typed missing"
meta = md.metadata("batchmap")
assert meta["License-Expression"] == "MIT", meta["License-Expression"]
assert meta.get_all("Project-URL"), "no project URLs"
print(batchmap.__file__)
"""


class WheelCheckError(Exception):
    """A step of the check failed; the message says which and shows its output."""


def step(what: str, argv: Sequence[str], *, cwd: Path) -> str:
    """Run one command outside the source tree's reach; its stdout, or WheelCheckError."""
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-2000:]
        raise WheelCheckError(f"{what} failed (exit {done.returncode}):\n{output}")
    print(f"  {what}: ok ({took:.1f} s)", flush=True)
    return done.stdout


def copy_source(to: Path) -> None:
    """What git would ship (tracked and untracked files, not ignored ones), edits included.

    Building from a copy keeps setuptools' build/ and egg-info out of the tree, and a stale
    build/lib from an earlier build can never slip a deleted module into the wheel.
    """
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as error:
        raise WheelCheckError(f"{ROOT} must be a git checkout to list its files: {error}") from None
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, to / name)


def build_wheel(work: Path) -> Path:
    """`pip wheel --no-deps` of a copy of this tree; the one wheel it made."""
    source, into = work / "src", work / "dist"
    copy_source(source)
    step(
        "build the wheel",
        [sys.executable, "-m", "pip", "wheel", *QUIET, "--no-deps", "-w", str(into), str(source)],
        cwd=work,
    )
    wheels = list(into.glob("batchmap-*.whl"))
    if len(wheels) != 1:
        raise WheelCheckError(f"expected one batchmap wheel in {into}, found {wheels}")
    return wheels[0]


def check_contents(wheel: Path) -> None:
    """The wheel holds py.typed and the license, and no tests or tools."""
    names = zipfile.ZipFile(wheel).namelist()
    missing = [want for want in ("batchmap/py.typed", "batchmap/cli.py") if want not in names]
    if not any(name.endswith("licenses/LICENSE") for name in names):
        missing.append("*.dist-info/licenses/LICENSE")
    stray = [name for name in names if name.startswith(("tests/", "tools/"))]
    if missing or stray:
        raise WheelCheckError(f"{wheel.name}: missing {missing}, should not ship {stray}")
    print(f"  contents of {wheel.name}: ok ({len(names)} files)", flush=True)


def check(work: Path) -> None:
    """Build, inspect, install into a fresh venv, smoke-test the command and the import."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    wheel = build_wheel(work)
    check_contents(wheel)
    venv = work / "venv"
    # No pip inside the venv: this interpreter's pip installs into it (--python), which saves
    # the few seconds ensurepip takes.
    step(
        "create a clean venv", [sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work
    )
    python = venv / "bin" / "python"
    step(
        "install the wheel and its dependencies",
        [sys.executable, "-m", "pip", "--python", str(python), "install", *QUIET, str(wheel)],
        cwd=work,
    )
    said = step("batchmap --version", [str(venv / "bin" / "batchmap"), "--version"], cwd=work)
    if version not in said:
        raise WheelCheckError(f"batchmap --version said {said.strip()!r}, pyproject has {version}")
    step("batchmap --help", [str(venv / "bin" / "batchmap"), "--help"], cwd=work)
    where = step("import batchmap", [str(python), "-c", SMOKE], cwd=work).strip()
    if not Path(where).resolve().is_relative_to(venv.resolve()):
        raise WheelCheckError(f"import batchmap found {where}, not the installed wheel")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check in a temporary directory (or --keep DIR); 1 with the failing step's output."""
    parser = argparse.ArgumentParser(prog="python tools/check_wheel.py", description=__doc__)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    print("wheel check: build, install in a clean venv, smoke-test", flush=True)
    try:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            check(args.keep.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="batchmap-wheel-") as tmp:
                check(Path(tmp))
    except WheelCheckError as error:
        print(f"wheel check: FAILED: {error}", file=sys.stderr)
        return 1
    print(f"wheel check: passed in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
