"""`make demo`: the real client against the bundled fake identifAI on sample_ids.csv.

Starts `batchmap fake-server` on a free port with identifAI's documented limits (2/s, 60/min),
runs `batchmap run`, shows `status` and writes an HTML report, then stops the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
KEY = "demo-key"


def batchmap(*args: str, env: dict[str, str] | None = None) -> int:
    """Run the real CLI as a user would; its output goes straight to the terminal."""
    print(f"\n$ batchmap {' '.join(args)}", flush=True)
    return subprocess.call([sys.executable, "-m", "batchmap", *args], cwd=OUT, env=env)


def start_server() -> tuple[subprocess.Popen[str], str]:
    """The fake server on a free port; its first line says where it listens."""
    server = subprocess.Popen(
        [sys.executable, "-m", "batchmap", "fake-server", "--port", "0", "--valid-key", KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if "listening on " not in line:
        server.kill()
        sys.exit(f"demo: the fake server did not start ({line!r})")
    return server, line.rsplit(" ", 1)[-1]


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    server, url = start_server()
    env = {**os.environ, "IDENTIFAI_API_KEY": KEY, "IDENTIFAI_BASE_URL": url}
    try:
        print(f"fake identifAI at {url} (limits 2/s and 60/min per key, like the real API)")
        code = batchmap("run", str(ROOT / "sample_ids.csv"), env=env)
        print(f"(exit code {code}: 1 means the run finished and some rows failed, as 3 must here)")
        batchmap("status")
        batchmap("report", "--format", "html", "-o", "report.html")
        batchmap("report", "--state", "failed", "--format", "csv")
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"\nheatmaps in {OUT / 'heatmaps'}; open {OUT / 'report.html'} in a browser")
    return 0 if code in (0, 1) else code


if __name__ == "__main__":
    sys.exit(main())
