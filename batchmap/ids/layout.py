"""Finding how a CSV file is laid out from its first rows: the delimiter, whether the first
row is a header, and which column holds the identifiers; what was guessed becomes a note."""

from __future__ import annotations

import contextlib
import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from batchmap.errors import InputError
from batchmap.ids.read import EXAMPLE_CHARS, example
from batchmap.ids.shapes import HEADER_NAMES, HEADER_WORDS, fits, looks_identifai, narrowest, normal

# How many rows after the first decide the header, the column and the delimiter; the
# look-ahead also stops after this many characters, so huge lines cannot fill memory.
LOOKAHEAD_ROWS = 100
LOOKAHEAD_CHARS = 1024 * 1024
# The share of the first rows that must agree (on a width, an alphabet) for a guess to hold.
_SHARE = 0.9
# csv.Sniffer's regexes take seconds on a look-ahead full of quotes (2 s on 1 MB): it sees
# this much of it, several times the sample its documentation suggests.
_SNIFF_CHARS = 64 * 1024
# The delimiters a file may use, comma first: it wins ties, as what files were read as.
_DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
# A wrong --column lists the header's names, this many (each clipped): one line.
_SHOWN_COLUMNS = 20


@dataclass(frozen=True)
class ColumnChoice:
    """How to read the file: the column, its header (None: no header), what was guessed."""

    index: int
    header: str | None
    notes: list[str] = field(default_factory=list)
    # Another column that looks like identifiers when the chosen one does not, named.
    better: str | None = None


def filled(row: Sequence[str]) -> bool:
    return any(cell.strip() for cell in row)


def sniff_delimiter(lines: list[str], *, column: str | None) -> str:
    """Comma, tab, ';' or '|', from the first lines.

    A header naming the column settles it; then a delimiter that splits the lines steadily
    into a column of identifAI-shaped values (a TSV's text may hold commas, a ';' file
    decimal commas); then csv.Sniffer; where it cannot tell, the file is one column.
    """
    parsed = {delimiter: _rows(lines, delimiter) for delimiter in _DELIMITERS}
    names = HEADER_NAMES if column is None else (column.strip().casefold(),)
    for name in names:
        for delimiter, rows in parsed.items():
            first = rows[0] if rows else []
            if len(first) > 1 and name in (cell.strip().casefold() for cell in first):
                return delimiter
    for delimiter, rows in parsed.items():
        widths = Counter(map(len, rows)).most_common(1)
        steady = widths and widths[0][0] >= 2 and widths[0][1] >= _SHARE * len(rows)
        if steady and _column_by_content(rows[1:] or rows, width=0)[1]:
            return delimiter
    try:
        sample = "".join(lines)[:_SNIFF_CHARS]
        found = csv.Sniffer().sniff(sample, delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        return ","  # one column: a comma is what the file was always read as
    return found if found in _DELIMITERS else ","


def _rows(lines: list[str], delimiter: str) -> list[list[str]]:
    rows: list[list[str]] = []
    with contextlib.suppress(csv.Error):  # the rows before a parse error still count
        rows.extend(row for row in csv.reader(lines, delimiter=delimiter) if filled(row))
    return rows


def find_layout(
    rows: list[tuple[list[str], int]], delimiter: str, *, column: str | None, where: str
) -> ColumnChoice:
    """Where the identifiers are, from the first filled rows (the first may be a header)."""
    first, line = rows[0]
    cells = [cell.strip() for cell in first]
    after = [row for row, _ in rows[1:]]
    notes = []
    if delimiter != ",":
        notes.append(f"{where}: read as {_DELIMITERS[delimiter]}-separated")
    if column is not None:
        index = _named_column(cells, column, where=f"{where}:{line}")
        return ColumnChoice(index, cells[index], notes, _hint(cells, after, index))
    lowered = [cell.lower() for cell in cells]
    for name in HEADER_NAMES:
        if name in lowered:
            index = lowered.index(name)
            return ColumnChoice(index, cells[index], notes, _hint(cells, after, index))
    index, likely = _column_by_content(after or [first], width=len(cells))
    header = None
    if after and _looks_like_header(cells[index] if index < len(cells) else "", after, index):
        header = cells[index]
    if len(likely) > 1:
        listed = ", ".join(_column_name(cells, i, header=header is not None) for i in likely)
        notes.append(
            f"{where}: columns {listed} all look like identifiers;"
            f" reading column {index + 1} (use --column to choose)"
        )
    elif index:
        shown = _column_name(cells, index, header=header is not None)
        notes.append(f"{where}: reading column {shown}: its values look like identifiers")
    if header is not None:
        notes.append(
            f"{where}:{line}: took {example(header)} as the header:"
            " it looks unlike the identifiers below it"
        )
    return ColumnChoice(index, header, notes, None)


def _hint(cells: list[str], after: list[list[str]], index: int) -> str | None:
    """Another column, named, that looks like identifAI's when the chosen one does not."""
    if not after or _identifai_share(after, index) >= 0.5:
        return None
    other, likely = _column_by_content(after, width=0)
    return _column_name(cells, other, header=True) if likely else None


def _named_column(cells: list[str], column: str, *, where: str) -> int:
    """The index of the --column in the header row, or a one-line error listing them."""
    wanted = column.strip()
    if wanted in cells:
        return cells.index(wanted)
    folded = [cell.casefold() for cell in cells]
    if wanted.casefold() in folded:
        return folded.index(wanted.casefold())
    shown = []
    for cell in cells[:_SHOWN_COLUMNS]:
        plain = cell.isprintable() and "," not in cell and len(cell) <= EXAMPLE_CHARS
        shown.append(cell if cell and plain else example(cell))
    if len(cells) > _SHOWN_COLUMNS:
        shown.append(f"... {len(cells) - _SHOWN_COLUMNS} more")
    raise InputError(f"{where}: no column {column!r} in the header (columns: {', '.join(shown)})")


def _identifai_share(rows: Sequence[Sequence[str]], index: int) -> float:
    cells = [row[index] for row in rows if index < len(row) and row[index].strip()]
    return sum(map(looks_identifai, cells)) / len(cells) if cells else 0.0


def _column_by_content(rows: list[list[str]], *, width: int) -> tuple[int, list[int]]:
    """The column most of whose values look like identifAI's (else the first), and all such."""
    width = min(max([width, *map(len, rows)]), 100)
    shares = [_identifai_share(rows, index) for index in range(width)]
    likely = [index for index, share in enumerate(shares) if share >= 0.5]
    # max keeps the leftmost of ties
    return max(likely, key=lambda index: shares[index], default=0), likely


def _column_name(cells: list[str], index: int, *, header: bool) -> str:
    """A column for a message: its number, and its header cell when there is one."""
    if header and index < len(cells) and cells[index]:
        return f"{index + 1} ({example(cells[index])})"
    return str(index + 1)


def _looks_like_header(cell: str, after: list[list[str]], index: int) -> bool:
    """A first cell is a header when it holds letters outside the alphabet of the cells below.

    Case is ignored, and a first cell of digits never counts: a shorter or longer identifier
    of the same alphabet is loaded (and warned about), not dropped.
    """
    below = [row[index].strip().casefold() for row in after if index < len(row)]
    below = [value for value in below if value]
    first = cell.casefold()
    if not below or not any(char.isalpha() for char in first) or looks_identifai(first):
        return False
    if normal(first) in HEADER_WORDS and first not in below:
        return True
    alphabet = narrowest(below, share=_SHARE)
    if alphabet is None:
        return False
    if not fits(first, alphabet):
        return True
    # A word over coded values: "name" above "a1b2c3...".
    wordish = all(char.isalpha() or char in " _-" for char in first)
    coded = sum(any(char.isdigit() for char in value) for value in below)
    return wordish and coded >= _SHARE * len(below) and len(first) not in set(map(len, below))
