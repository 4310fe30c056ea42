"""Where each identifier's original photo is: remembered by the job, found when asked.

`--images DIR` and `--image-column NAME` are saved once in the job's `meta` ("originals");
each row's path is worked out when a report or an export needs it, from the row's kept CSV
columns (`user_columns`) or its identifier. Originals are only ever read: never copied,
moved or changed, and nothing is sent anywhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchmap.errors import InputError

if TYPE_CHECKING:
    from batchmap.ids import IdSource
    from batchmap.store import Store

log = logging.getLogger("batchmap")
META_KEY = "originals"
COLUMNS_KEY = "user_columns"  # the kept columns' names, in the order first seen
MAX_COLUMN_NAMES = 100
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# Kept column names that hold a photo's file name or path, most specific first (casefolded,
# " " and "-" read as "_").
COLUMN_WORDS = (
    "image_path", "file_path", "path", "original", "photo", "image_file", "filename",
    "file_name", "file", "image_name", "image", "picture", "name",
)  # fmt: skip
MAX_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class Originals:
    """Where the photos are: a folder, and the kept column naming each (None: the identifier)."""

    directory: Path
    column: str | None = None

    def as_meta(self) -> dict[str, Any]:
        return {"dir": str(self.directory), "column": self.column}

    def path(self, identifier: str, columns: Mapping[str, str] | None) -> Path | None:
        """The photo of one row: the column's path (relative to the folder), or the identifier
        with or without an image suffix; None when the row names none."""
        if self.column is not None:
            value = (columns or {}).get(self.column, "").strip()
            if not value:
                return None
            candidate = Path(value).expanduser()
            return candidate if candidate.is_absolute() else self.directory / candidate
        plain = self.directory / identifier
        if "/" in identifier or "\\" in identifier or identifier in (".", ".."):
            return None  # an identifier never walks out of the folder
        if plain.is_file():
            return plain
        for suffix in IMAGE_SUFFIXES:
            for spelled in (suffix, suffix.upper()):
                found = plain.with_name(identifier + spelled)
                if found.is_file():
                    return found
        return plain


def remembered(meta: Any) -> Originals | None:
    """The originals a job remembers (its `meta` value), or None."""
    if not isinstance(meta, Mapping) or not isinstance(meta.get("dir"), str):
        return None
    column = meta.get("column")
    return Originals(Path(meta["dir"]), column if isinstance(column, str) else None)


def choose(
    *,
    csv_path: Path,
    images: Path | None,
    image_column: str | None,
    kept_names: list[str],
    samples: Iterable[Mapping[str, str]],
    id_header: str | None = None,
) -> Originals:
    """The originals a load names: the folder (default: the CSV's) and the column.

    Without --image-column, the first kept column whose name or values look like photo
    file names; with none, the identifier names the file.
    """
    directory = (images if images is not None else csv_path.parent).absolute()
    if images is not None and not directory.is_dir():
        raise InputError(f"--images {images}: no such folder")
    if image_column is not None:
        wanted = image_column.strip()
        if id_header is not None and wanted.casefold() == id_header.casefold():
            return Originals(directory, None)
        for name in kept_names:
            if name == wanted or name.casefold() == wanted.casefold():
                return Originals(directory, name)
        listed = ", ".join(kept_names) or "none besides the identifier"
        raise InputError(
            f"{csv_path}: --image-column {image_column!r}: no such column (other columns: {listed})"
        )
    return Originals(directory, _guess_column(kept_names, list(samples)))


def _normal(name: str) -> str:
    return name.casefold().replace(" ", "_").replace("-", "_")


def _guess_column(names: list[str], samples: list[Mapping[str, str]]) -> str | None:
    for name in names:
        values = [row[name] for row in samples if row.get(name)]
        if values and sum(v.lower().endswith(IMAGE_SUFFIXES) for v in values) * 2 >= len(values):
            return name
    by_word = {_normal(name): name for name in reversed(names)}
    for word in COLUMN_WORDS:
        if word in by_word:
            return by_word[word]
    return None


def readable(path: Path | None) -> bool:
    """Whether a photo can be opened for reading (a file, not a folder; permitted)."""
    return path is not None and path.is_file() and os.access(path, os.R_OK)


@dataclass
class Survey:
    """How many rows' originals were found, and a few of those that were not."""

    found: int = 0
    missing: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, identifier: str, path: Path | None) -> bool:
        if readable(path):
            self.found += 1
            return True
        self.missing += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(path) if path is not None else f"{identifier} (no name)")
        return False

    def line(self, originals: Originals) -> str:
        """One line for the load's log."""
        how = f"column {originals.column!r}" if originals.column else "the identifier"
        text = (
            f"originals: {self.found:,} of {self.found + self.missing:,} found under "
            f"{originals.directory} (named by {how})"
        )
        if self.missing:
            more = ", ..." if self.missing > len(self.examples) else ""
            text += f"; {self.missing:,} missing or unreadable: {', '.join(self.examples)}{more}"
        return text


def survey(originals: Originals, rows: Iterable[Mapping[str, Any]]) -> Survey:
    """Check every row's original (a stat each; never opened), streamed."""
    found = Survey()
    for row in rows:
        identifier = str(row["identifier"])
        found.add(identifier, originals.path(identifier, row.get("user_columns")))
    return found


# -- at load time ------------------------------------------------------------------------------


def checked(
    source: IdSource, *, images: Path | None, image_column: str | None
) -> Iterator[str | tuple[str, str | None]]:
    """The source's (identifier, columns) pairs, refusing a wrong --images or --image-column
    before the first row is stored (the load is one transaction: nothing is added)."""
    if images is not None and not images.is_dir():
        raise InputError(f"--images {images}: no such folder")
    items = source.with_columns()
    first = next(items, None)
    if first is None:
        return
    if image_column is not None:
        choose(
            csv_path=source.path, images=images, image_column=image_column,
            kept_names=source.kept_names, samples=(), id_header=source.id_name,
        )  # fmt: skip
    yield first
    yield from items  # no loop of ours per row: a million-row load stays as fast


def remember_load(
    store: Store, source: IdSource, *, images: Path | None, image_column: str | None
) -> Survey | None:
    """After a load: remember the kept columns' names and, when asked, where the photos are;
    log how many photos were found. Missing photos are counted, never an error."""
    names = store.get_meta(COLUMNS_KEY) or []
    added = [name for name in source.kept_names if name not in names]
    if added:
        store.set_meta(COLUMNS_KEY, [*names, *added][:MAX_COLUMN_NAMES])
    if images is None and image_column is None:
        return None
    samples = (row["user_columns"] for row in islice(store.rows(), 100) if row["user_columns"])
    found = choose(
        csv_path=source.path, images=images, image_column=image_column,
        kept_names=source.kept_names, samples=samples, id_header=source.id_name,
    )  # fmt: skip
    store.set_meta(META_KEY, found.as_meta())
    result = survey(found, store.rows())
    log.info("%s", result.line(found))
    return result
