"""The fake's heatmaps: deterministic PNGs; which identifiers have none (204) or are unknown."""

from __future__ import annotations

import functools
import hashlib
import math
import re
import struct
import zlib

SIZE = 64  # heatmaps are SIZE x SIZE RGB

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIGMAS = (5, 7, 9, 11, 13, 15, 17, 19)
_PEAKS = (0.7, 0.8, 0.9, 1.0)
_CENTRE = SIZE - 1  # centre of a blob template, which is 2*SIZE - 1 pixels square


def _jet(level: int) -> bytes:
    """The classic blue-cyan-yellow-red heatmap colour of `level` in 0..255."""
    t = level / 255
    return bytes(round(255 * min(1.0, max(0.0, 1.5 - abs(4 * t - k)))) for k in (3, 2, 1))


_PALETTE = tuple(_jet(level) for level in range(256))


@functools.cache
def _blob_template(sigma: int, peak: float) -> tuple[bytes, ...]:
    """RGB rows of a centred Gaussian blob; every heatmap is a SIZE-square crop of one."""
    side = 2 * SIZE - 1
    rows = []
    for y in range(side):
        dy2 = (y - _CENTRE) ** 2
        levels = (
            round(255 * peak * math.exp(-((x - _CENTRE) ** 2 + dy2) / (2 * sigma * sigma)))
            for x in range(side)
        )
        rows.append(b"".join(_PALETTE[level] for level in levels))
    return tuple(rows)


def _scanlines(digest: bytes) -> bytes:
    """The filtered PNG scanlines of the heatmap whose blob size, peak and centre `digest` picks."""
    template = _blob_template(_SIGMAS[digest[2] % len(_SIGMAS)], _PEAKS[digest[5] % len(_PEAKS)])
    cx, cy = 8 + digest[3] % (SIZE - 16), 8 + digest[4] % (SIZE - 16)
    x0, y0 = 3 * (_CENTRE - cx), _CENTRE - cy
    # Each row starts with filter type 0 (None).
    return b"".join(b"\x00" + row[x0 : x0 + 3 * SIZE] for row in template[y0 : y0 + SIZE])


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC of type + data."""
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@functools.lru_cache(maxsize=4096)
def heatmap_png(identifier: str) -> bytes:
    """The complete, deterministic 64x64 RGB heatmap PNG the fake serves for `identifier`."""
    digest = hashlib.sha256(identifier.encode()).digest()
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(_scanlines(digest), 6)),
            _chunk(b"IEND", b""),
        )
    )


def expected_status(identifier: str) -> int:
    """The fault-free answer for `identifier`: 1 in 16 is 204, 1 in 16 is 404, the rest 200."""
    bucket = hashlib.sha256(identifier.encode()).digest()[0] % 16
    return _SPECIAL.get(bucket, 200)


_SPECIAL = {0: 204, 1: 404}


_IDENTIFAI_ID = re.compile(r"[0-9a-f]{64}")


def identifai_shaped(identifier: str) -> bool:
    """Whether `identifier` looks like one identifAI issues: 64 lowercase hex characters."""
    return _IDENTIFAI_ID.fullmatch(identifier) is not None
