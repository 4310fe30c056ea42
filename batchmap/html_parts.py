"""Small pieces the HTML pages share: inlined assets, links to files, confidences as text.

Pure helpers with no page of their own, so that report_html and report_review (which it
includes) both import them from below rather than from each other.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from batchmap.numeric import finite


@cache
def asset(name: str) -> str:
    """A file of batchmap/assets (package data), checked safe to inline in its element."""
    text = resources.files("batchmap").joinpath("assets", name).read_text(encoding="utf-8")
    assert "</" not in text, f"{name} must not contain '</' to be inlined"
    return text


def image_src(path: str, report_dir: Path) -> str:
    """The URL of `path` relative to `report_dir`, or a file:// URI when no relative path exists."""
    try:
        relative = os.path.relpath(path, report_dir)
    except ValueError:  # another drive on Windows
        return Path(path).absolute().as_uri()
    return quote(Path(relative).as_posix())


def confidence_text(value: Any) -> str:
    """A confidence as a percentage: 0..1 is a fraction, 1..100 already a percentage."""
    number = finite(value)
    if number is None or number < 0:
        return ""
    percent = number * 100 if number <= 1 else number
    return f"{percent:.0f}%" if percent <= 100 else f"{number:g}"
