"""Warnings about identifiers that look unlike the rest: a repeated header, a path, a line
of another format, another length or alphabet. A shape is only ever a hint: every value is
loaded as given; each warning counts all of its values and shows a few, with their lines."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from batchmap.ids.read import example

MAX_EXAMPLES = 5  # per warning: memory stays flat however many values look odd
# The share of sampled values that makes a shape "the rest's"; 0.8 lets a fifth differ.
SHAPE_SHARE = 0.8
# The first this many identifiers are the sample that fixes "the rest's" shape.
SHAPE_SAMPLE = 128

# identifAI's identifiers are 64 lowercase hex in every doc example, v2 tickets 24.
_IDENTIFAI = re.compile(r"[0-9a-f]{64}|[0-9a-f]{24}")
_IDENTIFAI_LENGTHS = frozenset({24, 64})
# Alphabets a column of identifiers may share, narrowest first, with how messages say them.
_ALPHABETS = {
    "digits": (string.digits, "digits"),
    "hex": ("0123456789abcdef", "lowercase hex characters"),
    "HEX": ("0123456789ABCDEF", "uppercase hex characters"),
    "alnum": (string.digits + string.ascii_letters, "letters and digits"),
    "token": (string.digits + string.ascii_letters + "-_", "letters, digits, '-' and '_'"),
}
# Each alphabet's bytes and the NUL that joins a batch: what bytes.translate deletes.
_DELETE = {name: (chars + "\0").encode() for name, (chars, _) in _ALPHABETS.items()}
# Header cells that name the identifier column, most specific first ("image_id,id" picks
# image_id, not a row number), then other words that head such a column.
HEADER_NAMES = ("image_identifier", "image_id", "identifier", "identifiers", "id")
HEADER_WORDS = frozenset(
    (
        *HEADER_NAMES,
        *("ids", "image", "images", "image_ids", "hash", "image_hash", "sha", "sha256"),
        *("name", "image_name", "file", "filename", "file_name", "path", "url", "uuid", "key"),
    )
)
# A value this long or longer is never taken for a repeated header.
_HEADER_CHARS = 40
# A value ending so is a file name, not an identifier (the wrong column, most likely).
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic")


def looks_identifai(cell: str) -> bool:
    return _IDENTIFAI.fullmatch(cell.strip()) is not None


def normal(value: str) -> str:
    """A header cell as compared with HEADER_WORDS: "Image-ID" is "image_id"."""
    return value.casefold().replace(" ", "_").replace("-", "_")


def fits(value: str, alphabet: str) -> bool:
    """Whether every character of the value is in the alphabet (strip runs in C)."""
    return value.isascii() and not value.strip(_ALPHABETS[alphabet][0])


def narrowest(values: Sequence[str], *, share: float) -> str | None:
    """The narrowest alphabet that holds at least `share` of the values, if any."""
    for name in _ALPHABETS:
        if sum(fits(value, name) for value in values) >= share * len(values):
            return name
    return None


@dataclass
class Examples:
    """How many values fell in one warning's category, with the first few as examples."""

    count: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, value: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((line, value))

    def lines(self) -> str:
        """The examples for a message: "lines 2 'x', 5 'y', ..."."""
        shown = ", ".join(f"{line} {example(value)}" for line, value in self.examples)
        more = ", ..." if self.count > len(self.examples) else ""
        return f"line{'s' if self.count > 1 else ''} {shown}{more}"


class Shape:
    """The alphabet and lengths most sampled values share: what "the rest" looks like."""

    def __init__(self, values: Sequence[str]) -> None:
        self.alphabet = narrowest(values, share=SHAPE_SHARE) if values else None
        lengths = Counter(map(len, values)).most_common(1)
        self.lengths: frozenset[int] | None = None
        if lengths and lengths[0][1] >= SHAPE_SHARE * len(values):
            self.lengths = frozenset({lengths[0][0]})
        if self.alphabet == "hex" and self.lengths and self.lengths <= _IDENTIFAI_LENGTHS:
            self.lengths = _IDENTIFAI_LENGTHS  # v1 identifiers and v2 tickets mix freely

    def fits(self, value: str) -> bool:
        """Whether a value has the shape; always True when the sample had none."""
        if self.alphabet is None:
            return True
        lengths = self.lengths
        return (lengths is None or len(value) in lengths) and fits(value, self.alphabet)

    def describe(self) -> str:
        words = _ALPHABETS[self.alphabet or "token"][1]
        if self.lengths is None:
            return words
        if self.lengths == _IDENTIFAI_LENGTHS:
            return f"64 (or 24) {words}"
        return f"{next(iter(self.lengths))} {words}"


class Checker:
    """Counts the identifiers that look unlike the rest, keeping a few examples of each kind.

    The first batch fixes "the rest's" shape; each batch is screened with whole-batch string
    operations (in C), so a clean file costs a few of them per batch, not a loop per value.
    """

    def __init__(self, where: str, *, header: str | None, better: str | None) -> None:
        self.where = where
        self.better = better  # another column that looks like identifAI's, named
        self.total = 0
        self.shape: Shape | None = None
        self.header_words = set(HEADER_WORDS) | ({normal(header)} if header else set())
        self.headers, self.paths, self.delimited, self.odd = (
            Examples(),
            Examples(),
            Examples(),
            Examples(),
        )
        self.identifai = 0
        self.sample: list[str] = []  # the first identifiers, until they fix the shape
        self.sample_lines: list[int] = []

    def check(self, values: Sequence[str], lines: Sequence[int]) -> None:
        """Account for a batch of non-empty identifiers, values[n] on lines[n]; the first
        SHAPE_SAMPLE of them, whatever the batches, fix the rest's shape."""
        if self.shape is None:
            self.sample.extend(values)
            self.sample_lines.extend(lines)
            if len(self.sample) >= SHAPE_SAMPLE:
                self._fix_shape()
            return
        self._screen(values, lines, self.shape)

    def _fix_shape(self) -> None:
        values = [value for value in self.sample[:SHAPE_SAMPLE] if self._category(value) is None]
        self.shape = Shape(values)
        self._screen(self.sample, self.sample_lines, self.shape)
        self.sample, self.sample_lines = [], []

    def _screen(self, values: Sequence[str], lines: Sequence[int], shape: Shape) -> None:
        """Count a batch, and tally its odd values: whole-batch screens first, in C."""
        if not values:
            return
        self.total += len(values)
        if self.better is not None:
            self.identifai += sum(map(looks_identifai, values))
        joined = "\0".join(values)  # no value holds a NUL
        lengths = set(map(len, values))
        screens = (
            min(lengths) < _HEADER_CHARS
            and not self.header_words.isdisjoint(normal(joined).split("\0")),
            "/" in joined or "\\" in joined or "." in joined,
            any(mark in joined for mark in (",", "\t", ";", "|")),
        )
        plain = shape.alphabet is not None and (
            joined.isascii()
            and not joined.encode().translate(None, _DELETE[shape.alphabet])
            and (shape.lengths is None or lengths <= shape.lengths)
        )
        if not any(screens) and (plain or shape.alphabet is None):
            return
        for value, line in zip(values, lines, strict=True):
            tally = self._category(value)
            if tally is None and not shape.fits(value):
                tally = self.odd
            if tally is not None:
                tally.add(line, value)

    def _category(self, value: str) -> Examples | None:
        """The warning a value belongs to whatever the others look like, if any."""
        if len(value) < _HEADER_CHARS and normal(value) in self.header_words:
            return self.headers
        if "/" in value or "\\" in value or value.lower().endswith(_IMAGE_SUFFIXES):
            return self.paths
        if "," in value or "\t" in value or ";" in value or "|" in value:
            return self.delimited
        return None

    def warnings(self) -> list[str]:
        """One line per kind of odd value, with counts and examples; empty if none."""
        if self.shape is None and self.sample:  # fewer identifiers than the sample
            self._fix_shape()
        found = [
            self._warning(self.headers, "looks", "like a header (repeated inside the file?)"),
            self._warning(self.paths, "looks", "like a path, URL or file name (wrong column?)"),
            self._warning(
                self.delimited, "contains", "',', ';', '|' or a tab (lines of another format?)"
            ),
        ]
        if self.shape is not None and self.shape.alphabet is not None:
            shape = self.shape.describe()
            found.append(self._warning(self.odd, "differs", f"from the others' {shape}"))
        if self.better is not None and self.identifai == 0:
            found.append(
                f"{self.where}: no identifier looks like identifAI's (64 lowercase hex"
                f" characters) but column {self.better} does;"
                " if requests answer 404, check --column"
            )
        return [warning for warning in found if warning]

    def _warning(self, tally: Examples, verb: str, what: str) -> str:
        """'F: 3 of 1,000 identifiers look like ...: lines 2 'x', ...; loaded as given'."""
        if not tally.count:
            return ""
        if tally.count > 1:
            verb = verb.removesuffix("s")
        return (
            f"{self.where}: {tally.count:,} of {self.total:,} identifiers {verb} {what}:"
            f" {tally.lines()}; loaded as given"
        )
