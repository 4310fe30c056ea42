"""Small generated photos whose bright region lies where the fake's heatmap is hottest.

The fake server's heatmap for an identifier is a Gaussian blob centred at a point its
sha256 picks (batchmap.fakeserver.heatmaps); each photo here is dark with a white disc at
the same relative place, so a composite is right when its hot pixels cover the disc.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from batchmap.fakeserver import SIZE

DARK = (40, 44, 52)
DISC = (250, 250, 250)


def heat_peak(identifier: str) -> tuple[float, float]:
    """Where the fake's heatmap for `identifier` is hottest, as fractions of width and height."""
    digest = hashlib.sha256(identifier.encode()).digest()
    cx, cy = 8 + digest[3] % (SIZE - 16), 8 + digest[4] % (SIZE - 16)  # as heatmaps._scanlines
    return (cx + 0.5) / SIZE, (cy + 0.5) / SIZE


def disc(identifier: str, size: tuple[int, int]) -> tuple[float, float, float]:
    """The marked region of the photo for `identifier`: centre x, y and radius in pixels."""
    fx, fy = heat_peak(identifier)
    return fx * size[0], fy * size[1], 0.12 * min(size)


def make_photo(path: Path, identifier: str, size: tuple[int, int] = (300, 200)) -> Path:
    """A dark photo with a white disc where the heatmap of `identifier` peaks."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", size, DARK)
    x, y, r = disc(identifier, size)
    ImageDraw.Draw(picture).ellipse((x - r, y - r, x + r, y + r), fill=DISC)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def hot_centroid(path: Path) -> tuple[float, float, int]:
    """The centre of a composite's hot (red-dominant) pixels, and how many there are."""
    from PIL import Image

    with Image.open(path) as opened:
        picture = opened.convert("RGB")
    width, pixels = picture.width, picture.tobytes()
    sx = sy = n = 0
    for index in range(len(pixels) // 3):
        r, g, b = pixels[3 * index : 3 * index + 3]
        if r > g + 40 and r > b + 40:
            sx += index % width
            sy += index // width
            n += 1
    return (sx / n if n else -1.0), (sy / n if n else -1.0), n


def sharp_ids(prefix: str, count: int) -> list[str]:
    """Identifiers the fake answers 200 whose heatmap peaks at full heat (red) in a small blob
    away from the edges: their hot pixels are unmistakable in a composite."""
    from tests.conftest import make_ids

    picked: list[str] = []
    batch = 0
    while len(picked) < count:
        for identifier in make_ids(f"{prefix}-{batch}", ok=64):
            digest = hashlib.sha256(identifier.encode()).digest()
            fx, fy = heat_peak(identifier)
            if digest[5] % 4 == 3 and digest[2] % 8 <= 3 and 0.2 < fx < 0.8 and 0.2 < fy < 0.8:
                picked.append(identifier)
        batch += 1
    return picked[:count]
