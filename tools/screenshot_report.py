"""Screenshot an HTML report with headless Chromium.

Usage: python tools/screenshot_report.py REPORT.html OUT.png. A development aid for looking at
`batchmap report --format html`; the tests never need it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
WINDOW = "1200,900"
TIMEOUT_SECONDS = 60


def find_chromium() -> str | None:
    """The Chromium binary: the Debian path first, then whatever is on PATH."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def screenshot(
    report: Path, out: Path, *, chromium: str, window: str = WINDOW, dark: bool = False
) -> None:
    """Render `report` in a fresh headless profile and save a PNG of the window at `out`.

    `dark` asks for the dark colour scheme (prefers-color-scheme: dark).
    """
    with tempfile.TemporaryDirectory(prefix="batchmap-chromium-") as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={window}",
            # Blink's PreferredColorScheme: 0 is dark, 1 is light.
            f"--blink-settings=preferredColorScheme={0 if dark else 1}",
            f"--screenshot={out.absolute()}",
            report.absolute().as_uri(),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=TIMEOUT_SECONDS)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, take the screenshot, report one line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML report")
    parser.add_argument("out", type=Path, help="where to write the PNG")
    parser.add_argument("--window", default=WINDOW, help="WIDTH,HEIGHT (default %(default)s)")
    parser.add_argument("--dark", action="store_true", help="the dark colour scheme")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("error: chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    if not args.report.is_file():
        print(f"error: {args.report}: no such report", file=sys.stderr)
        return 2
    args.out.unlink(missing_ok=True)
    try:
        screenshot(args.report, args.out, chromium=chromium, window=args.window, dark=args.dark)
    except subprocess.TimeoutExpired:
        print(f"error: chromium took more than {TIMEOUT_SECONDS}s", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        last = (error.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        print(f"error: chromium exited with {error.returncode}: {''.join(last)}", file=sys.stderr)
        return 1
    if not args.out.is_file():
        print(f"error: chromium wrote no screenshot to {args.out}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
