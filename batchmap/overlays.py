"""`batchmap export overlays`: each done heatmap blended over its own photo, one file a row.

Streaming and bounded: rows come from the store one at a time, a photo is decoded at a
reduced scale where its format allows (JPEG's draft mode decodes 8,000 px at 1/8) and is
never kept larger than `max_side`, so memory stays flat at any count and size. Resumable and
idempotent like the fetch: a composite newer than its photo and heatmap is kept, and each
file appears whole (written beside, then renamed). Originals are only read. Pillow is an
optional extra (`pip install batchmap[images]`).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from batchmap import originals as photos
from batchmap.errors import InputError, StorageError
from batchmap.files import file_name
from batchmap.models import JobState
from batchmap.store import Store

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_MAX_SIDE = 2048
DEFAULT_OPACITY = 0.5
MISSING_LIST = "missing-originals.csv"
SHEET_CELL = 320  # pixels per contact-sheet cell (the picture; its caption goes below)
SHEET_CAPTION = 34
# Decoded whole, a picture costs 4 bytes a pixel (Pillow's RGB is RGBX): 70 megapixels is
# 280 MB, e.g. an 8,000 x 8,000 PNG. A JPEG decodes at 1/2..1/8 scale: a gigapixel is ~60 MB.
PIXEL_LIMIT = 70_000_000
JPEG_PIXEL_LIMIT = 1_000_000_000
MAX_SHEET = 400  # rows per contact sheet at most: the sheet is held in memory while drawn
NO_PILLOW = (
    "export overlays needs Pillow, an optional extra: pip install 'batchmap[images]'"
    " (or pip install Pillow)"
)


@dataclass
class OverlayReport:
    """What one export did: counts, and where the lists are."""

    out: Path
    written: int = 0
    kept: int = 0  # composites already there and up to date
    missing: int = 0  # rows whose photo is missing (or not a readable file)
    unreadable: int = 0  # photos or heatmaps Pillow could not decode
    sheets: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def listed(self) -> Path:
        return self.out / MISSING_LIST

    def lines(self) -> list[str]:
        """What the CLI prints."""
        found = [
            f"wrote {self.written:,} composites to {self.out}"
            + (f" ({self.kept:,} already there and up to date)" if self.kept else "")
            + (f"; {self.sheets:,} contact sheets" if self.sheets else "")
        ]
        if self.missing or self.unreadable:
            found.append(
                f"{self.missing:,} photos missing, {self.unreadable:,} unreadable (skipped):"
                f" listed in {self.listed}"
            )
            found.extend(f"  {example}" for example in self.examples)
        return found


def pillow() -> Any:
    """The PIL.Image module, or the one clear message that says how to get it."""
    try:
        from PIL import Image
    except ImportError:
        raise InputError(NO_PILLOW) from None
    return Image


class OverlayOptions(TypedDict, total=False):
    """The keywords of `export_overlays` (and of `batchmap.Job.export_overlays`)."""

    max_side: int  # pixels, the longer side of a composite (DEFAULT_MAX_SIDE)
    opacity: float  # of the heatmap over the photo, 0 to 1 (DEFAULT_OPACITY)
    fmt: str  # "jpeg" or "png"
    sheet: int | None  # a contact sheet per that many rows
    force: bool  # write every composite again
    on_row: Callable[[int], None] | None  # called with the count of rows done so far


def export_overlays(
    db: Path,
    out: Path,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    opacity: float = DEFAULT_OPACITY,
    fmt: str = "jpeg",
    sheet: int | None = None,
    force: bool = False,
    on_row: Callable[[int], None] | None = None,
) -> OverlayReport:
    """Write a composite of photo and heatmap for every done row with a photo; see module doc."""
    image = pillow()
    if not 16 <= max_side <= 65_536:
        raise InputError(f"--max-side {max_side}: expected 16 to 65536 pixels")
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"--opacity {opacity}: expected 0 to 1")
    if sheet is not None and not 1 <= sheet <= MAX_SHEET:
        raise InputError(f"--sheet {sheet}: expected 1 to {MAX_SHEET} rows a sheet")
    suffix = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt.lower())
    if suffix is None:
        raise InputError(f"--format {fmt}: expected jpeg or png")
    with Store(db, create=False) as store:
        where = photos.remembered(store.get_meta(photos.META_KEY))
        if where is None:
            raise InputError(
                f"{db}: the job knows no photos; load the CSV again with --images DIR"
                " (or --image-column NAME), e.g. batchmap load ids.csv --images photos/"
            )
        if out.absolute() == where.directory.absolute():
            raise InputError(
                f"--out {out}: that is the photos' folder; composites could replace photos"
                " named like them: give another folder"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"{out}: cannot create ({error.strerror or error})") from None
        report = OverlayReport(out)
        sheets = _Sheets(image, out, per=sheet, suffix=suffix) if sheet else None
        with _missing_list(report.listed) as note:
            for count, row in enumerate(store.rows(state=JobState.DONE), 1):
                _one(image, row, where, report, note, sheets, suffix=suffix, force=force,
                     max_side=max_side, opacity=opacity)  # fmt: skip
                if on_row is not None:
                    on_row(count)
        if sheets is not None:
            sheets.flush()
            report.sheets = sheets.written
        if not report.missing and not report.unreadable:
            report.listed.unlink(missing_ok=True)
    return report


def _one(
    image: Any,
    row: dict[str, Any],
    where: photos.Originals,
    report: OverlayReport,
    note: Callable[[dict[str, Any], str, str], None],
    sheets: _Sheets | None,
    *,
    suffix: str,
    force: bool,
    max_side: int,
    opacity: float,
) -> None:
    identifier = str(row["identifier"])
    photo = where.path(identifier, row.get("user_columns"))
    if photo is None or not photos.readable(photo):
        report.missing += 1
        note(row, str(photo or ""), "missing")
        _example(report, f"missing: {photo or identifier}")
        return
    heat = Path(str(row["path"]))
    target = report.out / (Path(file_name(identifier)).stem + suffix)
    if target.absolute() == photo.absolute():  # never write over a photo
        report.unreadable += 1
        note(row, str(photo), "the composite would replace the photo: choose another --out")
        return
    if not force and _up_to_date(target, photo, heat):
        report.kept += 1
    else:
        try:
            composite = blend(image, photo, heat, max_side=max_side, opacity=opacity)
        except (OSError, ValueError, image.DecompressionBombError) as error:
            report.unreadable += 1
            reason = " ".join(str(error).split())[:200]
            note(row, str(photo), f"unreadable: {reason}")
            _example(report, f"unreadable: {photo} ({reason})")
            return
        _save(composite, target)
        report.written += 1
    if sheets is not None:
        sheets.add(row, target)


def blend(image: Any, photo: Path, heat: Path, *, max_side: int, opacity: float) -> Image:
    """The photo (at most max_side px a side) with the heatmap stretched over it."""
    picture = _open_reduced(image, photo, max_side=max_side)
    with _opened(image, heat, jpeg_draft=False) as opened:  # a server's PNG: untrusted too
        heatmap = opened.convert("RGBA")
    if heatmap.size != picture.size:  # a heatmap covers its whole photo, whatever its size
        heatmap = heatmap.resize(picture.size, image.Resampling.BILINEAR)
    alpha = heatmap.getchannel("A").point(lambda level: round(level * opacity))
    return image.composite(heatmap.convert("RGB"), picture, alpha)  # type: ignore[no-any-return]


@contextmanager
def _opened(image: Any, path: Path, *, jpeg_draft: bool) -> Iterator[Any]:
    """An image opened lazily, refused (ValueError) when decoding it would take too much memory.

    Pillow's own decompression-bomb limit is replaced by one per format: a JPEG that will be
    decoded at a reduced scale (`jpeg_draft`) may be far larger than anything decoded whole.
    """
    saved = image.MAX_IMAGE_PIXELS
    image.MAX_IMAGE_PIXELS = None
    try:
        opened = image.open(path)
    finally:
        image.MAX_IMAGE_PIXELS = saved
    with opened:
        draft = jpeg_draft and opened.format == "JPEG"
        limit = JPEG_PIXEL_LIMIT if draft else PIXEL_LIMIT
        if opened.width * opened.height > limit:
            raise ValueError(
                f"{opened.width} x {opened.height} pixels: more than batchmap decodes"
                f" ({limit / 1e6:,.0f} megapixels{'' if draft else ' unless a JPEG'})"
            )
        yield opened


# EXIF orientation -> the transpose that makes the picture upright.
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
            6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip


def _open_reduced(image: Any, path: Path, *, max_side: int) -> Image:
    """Decode a photo no larger than needed: JPEG's draft scale, then reduce and resample.

    Only one full-size copy ever exists (none for JPEG): the shrinking happens in place.
    """
    with _opened(image, path, jpeg_draft=True) as picture:
        picture.draft("RGB", (max_side, max_side))  # JPEG only; a no-op for other formats
        orientation = picture.getexif().get(0x0112, 1)
        picture.load()
    factor = max(picture.size) // max_side
    if factor > 1:  # a box average by a whole factor first: one small copy, the big one freed
        picture = picture.reduce(factor)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), image.Resampling.LANCZOS)
    if picture.mode != "RGB":
        picture = picture.convert("RGB")
    if orientation in _UPRIGHT:
        picture = picture.transpose(getattr(image.Transpose, _UPRIGHT[orientation]))
    return picture  # type: ignore[no-any-return]


def _up_to_date(target: Path, *sources: Path) -> bool:
    try:
        made = target.stat().st_mtime
        return all(made >= source.stat().st_mtime for source in sources)
    except OSError:
        return False


def _save(picture: Image, target: Path) -> None:
    """Write whole or not at all: beside the target, then renamed over it."""
    partial = target.with_name(f".{target.name}.partial")
    options: dict[str, Any] = {"quality": 88} if target.suffix == ".jpg" else {}
    try:
        picture.save(partial, format="JPEG" if target.suffix == ".jpg" else "PNG", **options)
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise StorageError(f"{target}: cannot write ({error.strerror or error})") from None


def _example(report: OverlayReport, text: str) -> None:
    if len(report.examples) < photos.MAX_EXAMPLES:
        report.examples.append(text)


@contextmanager
def _missing_list(path: Path) -> Iterator[Callable[[dict[str, Any], str, str], None]]:
    """A CSV of the rows skipped, written as they come: identifier, photo, why, columns."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["identifier", "photo", "problem", "user_columns"])

        def note(row: dict[str, Any], photo: str, problem: str) -> None:
            kept = row.get("user_columns") or {}
            writer.writerow([row["identifier"], photo, problem, "; ".join(
                f"{k}: {v}" for k, v in kept.items()
            )])  # fmt: skip

        yield note


class _Sheets:
    """Contact sheets: a grid of up to `per` composites with their names and verdicts."""

    def __init__(self, image: Any, out: Path, *, per: int, suffix: str) -> None:
        self.image, self.out, self.per, self.suffix = image, out, per, suffix
        self.cells: list[tuple[Image, str, str]] = []
        self.written = 0

    def add(self, row: dict[str, Any], composite: Path) -> None:
        # Read back from the file (small: JPEG's draft scale), fresh or kept alike, so a
        # sheet comes out the same whether its composites were written now or before.
        try:
            small = _open_reduced(self.image, composite, max_side=SHEET_CELL - 8)
        except (OSError, ValueError):
            return
        kept = row.get("user_columns") or {}
        name = next(iter(kept.values()), "") or str(row.get("image_name") or row["identifier"])
        verdict = _verdict_text(row)
        self.cells.append((small, name, verdict))
        if len(self.cells) >= self.per:
            self.flush()

    def flush(self) -> None:
        if not self.cells:
            return
        from PIL import ImageDraw, ImageFont

        columns = math.ceil(math.sqrt(len(self.cells)))
        rows = math.ceil(len(self.cells) / columns)
        picture = max(small.height for small, _, _ in self.cells)
        height = picture + SHEET_CAPTION
        sheet = self.image.new("RGB", (columns * SHEET_CELL, rows * height), "white")
        draw = ImageDraw.Draw(sheet)
        try:
            font: Any = ImageFont.load_default(size=14)  # FreeType's, when Pillow has it
        except (TypeError, OSError):
            font = ImageFont.load_default()
        for n, (small, name, verdict) in enumerate(self.cells):
            x, y = (n % columns) * SHEET_CELL, (n // columns) * height
            sheet.paste(small, (x + (SHEET_CELL - small.width) // 2, y))
            for line, (text, colour) in enumerate(((name, "black"), (verdict, "dimgray"))):
                shown = _clip(text, font, SHEET_CELL - 8)
                draw.text((x + 4, y + picture + 1 + 16 * line), shown, fill=colour, font=font)
        self.written += 1
        _save(sheet, self.out / f"sheet-{self.written:04}{self.suffix}")
        self.cells.clear()


def _verdict_text(row: dict[str, Any]) -> str:
    verdict = str(row.get("verdict") or "")
    confidence = row.get("confidence")
    if not verdict:
        return "no verdict"
    if isinstance(confidence, int | float) and math.isfinite(confidence) and confidence >= 0:
        percent = confidence * 100 if confidence <= 1 else confidence
        return f"{verdict} {percent:.0f}%"
    return verdict


def _clip(text: str, font: Any, width: int) -> str:
    """The text, cut with "..." to fit `width` pixels; Latin-1 only for a bitmap font."""
    if type(font).__name__ == "ImageFont":  # Pillow's built-in bitmap font
        text = text.encode("latin-1", "replace").decode("latin-1")
    shown = text
    while shown and font.getlength(shown if shown == text else shown + "...") > width:
        shown = shown[: len(shown) - max(len(shown) // 8, 1)]
    return shown if shown == text else shown + "..."
