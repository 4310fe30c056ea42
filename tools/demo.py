"""`make demo`: the real client against the bundled fake identifAI on sample_ids.csv.

Starts `batchmap fake-server` on a free port with identifAI's documented limits (2/s, 60/min),
runs `batchmap run`, shows `status` and writes an HTML report, then stops the server.
"""

from __future__ import annotations

import io
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


def make_photos(folder: Path) -> None:
    """A made-up photo per sample id (photos/ID.jpg): a sky, a hill and a sun where the fake
    server's heatmap for that id is hottest, so the review page shows heat over something."""
    from PIL import Image, ImageDraw

    from batchmap.fakeserver import heatmap_png

    folder.mkdir()
    for line in (ROOT / "sample_ids.csv").read_text().split()[1:]:
        with Image.open(io.BytesIO(heatmap_png(line))) as heat:
            red = heat.convert("RGB").getchannel("R")
        box = red.point(lambda level: 255 * (level > 200)).getbbox() or (24, 24, 40, 40)
        fx, fy = (box[0] + box[2]) / 2 / red.width, (box[1] + box[3]) / 2 / red.height
        photo = Image.new("RGB", (640, 480), (120, 170, 220))
        draw = ImageDraw.Draw(photo)
        draw.ellipse((-200, 330, 840, 800), fill=(70, 130, 60))
        draw.ellipse((640 * fx - 40, 480 * fy - 40, 640 * fx + 40, 480 * fy + 40), fill="gold")
        photo.save(folder / f"{line}.jpg", quality=85)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    make_photos(OUT / "photos")
    server, url = start_server()
    env = {**os.environ, "IDENTIFAI_API_KEY": KEY, "IDENTIFAI_BASE_URL": url}
    try:
        print(f"fake identifAI at {url} (limits 2/s and 60/min per key, like the real API)")
        code = batchmap("run", str(ROOT / "sample_ids.csv"), "--images", "photos", env=env)
        print(f"(exit code {code}: 1 means the run finished and some rows failed, as 3 must here)")
        batchmap("status")
        batchmap("report", "--format", "html", "-o", "report.html")
        batchmap("report", "--state", "failed", "--format", "csv")
        batchmap("export", "overlays", "--out", "overlays", "--sheet", "25")
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"\nheatmaps in {OUT / 'heatmaps'}, composites in {OUT / 'overlays'}")
    print(f"open {OUT / 'report.html'} in a browser: it opens with each photo under its heatmap")
    return 0 if code in (0, 1) else code


if __name__ == "__main__":
    sys.exit(main())
