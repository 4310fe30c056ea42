"""Stream image identifiers out of a CSV file, so memory stays flat at any size.

Three parts: `read` decodes the file line by line and numbers its csv rows (every failure
names its line), `layout` finds the delimiter, header and column from the first rows, and
`shapes` warns about values that look unlike the rest (never refusing one). `IdSource`
puts them together: look ahead, pick the layout, then one identifier per row.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from batchmap.errors import InputError
from batchmap.ids import layout, read
from batchmap.ids.layout import LOOKAHEAD_CHARS, LOOKAHEAD_ROWS, ColumnChoice, filled
from batchmap.ids.read import MAX_IDENTIFIER_LENGTH
from batchmap.ids.shapes import HEADER_NAMES, MAX_EXAMPLES, Checker, Examples

if TYPE_CHECKING:
    from _csv import Reader as CsvReader  # the type of csv.reader(...), typeshed only

__all__ = [
    "HEADER_NAMES",
    "LOOKAHEAD_CHARS",
    "LOOKAHEAD_ROWS",
    "MAX_COLUMNS_BYTES",
    "MAX_EXAMPLES",
    "MAX_IDENTIFIER_LENGTH",
    "IdSource",
]

# A row's other columns are kept as one JSON object of at most this many bytes (UTF-8), so
# a stored row stays small; longer ones are cut to fit, with a warning naming their lines.
MAX_COLUMNS_BYTES = 4096
# Identifiers are checked for shape in batches: large enough for whole-batch string
# operations to pay, small enough to be part of the flat memory a load needs.
_CHECK_BATCH = 128


class IdSource:
    """Identifiers from one CSV file, streamed; counts what it skipped, warns about odd ones.

    After iteration, `notes` says how the file was read where that was guessed (delimiter,
    header, column) and `warnings` lists values that look unlike the rest; one line each.
    """

    def __init__(self, path: Path, *, column: str | None = None) -> None:
        self.path = path
        self.column = column
        self.kept_names: list[str] = []  # the other columns' names, once `with_columns` started
        self.id_name: str | None = None  # ... and the identifier column's header cell
        self._kept: deque[str | None] | None = None  # the columns of the identifier yielded next
        self.rows = 0  # data rows seen (after the header), updated while iterating
        self.blank = 0  # rows skipped because blank or with an empty identifier cell
        self.notes: list[str] = []  # how the file was read, when guessed from its content
        self.warnings: list[str] = []  # values unlike the rest; complete when iteration ends
        self._where = read.shown_path(path)

    def __iter__(self) -> Iterator[str]:
        """Yield trimmed, non-empty identifiers in file order; duplicates are the store's job."""
        self.rows = self.blank = 0
        self.notes = []
        self.warnings = []
        return self._identifiers()

    def with_columns(self) -> Iterator[str | tuple[str, str | None]]:
        """Each identifier with its row's other columns, as a JSON object (None: none there).

        A file of one column yields plain identifiers, as iterating does; one with others
        yields (identifier, columns) pairs. The object is at most MAX_COLUMNS_BYTES; a row
        whose columns are longer is cut, and warned about.
        """
        kept: deque[str | None] = deque()
        self._kept = kept
        try:
            items = iter(self)
            first = next(items, None)
            if first is None:
                return
            if not self.kept_names:
                yield first
                yield from items
                return
            yield first, kept.popleft()
            for identifier in items:
                yield identifier, kept.popleft()
        finally:
            self._kept = None

    def _open(self) -> BinaryIO:
        """The file opened for reading bytes; OS errors are one-line InputErrors."""
        return read.open_csv(self.path, self._where)

    def _identifiers(self) -> Iterator[str]:
        """The body of __iter__: look ahead to pick the layout, then read every row."""
        where = self._where
        with self._open() as stream:
            lines = read.decoded_lines(stream, where)
            head: list[str] = []
            failure: InputError | None = None
            try:
                chars = filled_lines = 0
                for line in lines:
                    head.append(line)
                    chars += len(line)
                    filled_lines += not line.isspace()
                    if filled_lines > LOOKAHEAD_ROWS or chars > LOOKAHEAD_CHARS:
                        break
            except InputError as error:  # raised again where the rows before it are read
                failure = error
            delimiter = layout.sniff_delimiter(head, column=self.column)
            rest = lines if failure is None else _raising(failure)
            straddling: list[str] = []  # lines past the head of the head's last row
            ahead, problem = read.rows_ahead(
                itertools.chain(head, _recorded(rest, straddling)),
                delimiter,
                where,
                until=len(head),
            )
            first = [(row, line) for row, line in ahead if filled(row)]
            if not first:
                raise problem or failure or InputError(f"{where}: empty file, no identifiers")
            found = layout.find_layout(first, delimiter, column=self.column, where=where)
            self.notes.extend(found.notes)
            reading = _Pass(self, found)
            width = max(len(row) for row, _ in first)
            if self._kept is not None and width > 1:
                reading.keep(first[0][0] if found.header is not None else [""] * width)
            failure = failure or problem
            rest = lines if failure is None else _raising(failure)  # the same error, in place
            rows = read.reader(itertools.chain(head, straddling, rest), delimiter)
            yield from reading.rows(rows, after=first[0][1] if found.header is not None else 0)
        reading.end()


class _Pass:
    """One pass over a file's rows: counts, checks and yields identifiers (and keeps the
    other columns when `keep` was called)."""

    def __init__(self, source: IdSource, found: ColumnChoice) -> None:
        self.source = source
        self.where = source._where
        self.layout = found
        self.checker = Checker(self.where, header=found.header, better=found.better)
        self.other_cells = False  # did a row without identifier hold anything else?
        self.batch: list[str] = []
        self.batch_lines: list[int] = []
        self.names: list[str] = []  # every column's name, once `keep` was called
        self.cut = Examples()  # rows whose other columns were cut to MAX_COLUMNS_BYTES

    def keep(self, header: list[str]) -> None:
        """Keep each row's other cells, named by the header (else "column N")."""
        names: list[str] = []
        for number, cell in enumerate(header, 1):
            name = cell.strip() or f"column {number}"
            while name in names:
                name += f" ({number})"
            names.append(name)
        self.names = names
        self.source.kept_names = [n for i, n in enumerate(names) if i != self.layout.index]
        self.source.id_name = self.layout.header

    def rows(self, rows: CsvReader, *, after: int) -> Iterator[str]:
        """The identifiers of the rows that start after line `after` (the header's); counts
        kept row by row, each identifier checked with the line its row starts on."""
        source, index, where = self.source, self.layout.index, self.where
        batch, batch_lines = self.batch, self.batch_lines
        kept = source._kept if self.names else None
        last = 0
        try:
            while last < after:  # the header, and any blank lines above it: not data rows
                next(rows)
                last = rows.line_num
            for row in rows:
                line, last = last + 1, rows.line_num
                source.rows += 1
                identifier = row[index].strip() if index < len(row) else ""
                if not identifier:
                    source.blank += 1
                    self.other_cells = self.other_cells or filled(row)
                    continue
                if len(identifier) > MAX_IDENTIFIER_LENGTH:
                    raise read.too_long(where, identifier, line=line)
                batch.append(identifier)
                batch_lines.append(line)
                if kept is not None:
                    kept.append(self.columns(row, line))
                if len(batch) >= _CHECK_BATCH:
                    self.flush()
                yield identifier
        except csv.Error as error:
            raise read.csv_problem(where, error, start=last + 1, end=rows.line_num) from None

    def flush(self) -> None:
        self.checker.check(self.batch, self.batch_lines)
        self.batch.clear()
        self.batch_lines.clear()

    def columns(self, row: list[str], line: int) -> str | None:
        """The row's other non-empty cells as compact JSON, cut to MAX_COLUMNS_BYTES."""
        found: dict[str, str] = {}
        names, index = self.names, self.layout.index
        for number, cell in enumerate(row):
            value = cell.strip()
            if value and number != index:
                found[names[number] if number < len(names) else f"column {number + 1}"] = value
        if not found:
            return None
        text = json.dumps(found, ensure_ascii=False, separators=(",", ":"))
        if len(text.encode()) <= MAX_COLUMNS_BYTES:
            return text
        self.cut.add(line, next(iter(found.values())))
        return _cut_columns(found)

    def end(self) -> None:
        """After the last row: refuse a file without identifiers, complete the warnings."""
        self.flush()
        source = self.source
        if source.rows == source.blank:
            if self.layout.header is not None and not self.other_cells:
                raise InputError(f"{self.where}: no identifiers (header only)")
            column = "1" if self.layout.header is None else repr(self.layout.header)
            raise InputError(
                f"{self.where}: no identifiers (column {column} is empty in every row)"
            )
        source.warnings.extend(self.checker.warnings())
        if self.cut.count:
            source.warnings.append(
                f"{self.where}: {self.cut.count:,} rows' other columns are longer than"
                f" {MAX_COLUMNS_BYTES:,} bytes; kept cut to fit: {self.cut.lines()}"
            )


def _cut_columns(found: dict[str, str]) -> str:
    """Columns as JSON within MAX_COLUMNS_BYTES: the value that overflows is clipped (a
    binary search on its length, as escapes and UTF-8 vary), later columns are dropped."""

    def size(columns: dict[str, str]) -> int:
        return len(json.dumps(columns, ensure_ascii=False, separators=(",", ":")).encode())

    kept: dict[str, str] = {}
    for name, value in found.items():
        key = name[:200]
        kept[key] = value
        if size(kept) <= MAX_COLUMNS_BYTES:
            continue
        low, high = 0, len(value)
        while low < high:
            middle = (low + high + 1) // 2
            kept[key] = value[:middle] + "…"
            low, high = (middle, high) if size(kept) <= MAX_COLUMNS_BYTES else (low, middle - 1)
        kept[key] = value[:low] + "…"
        if not low or size(kept) > MAX_COLUMNS_BYTES:
            del kept[key]
        break
    return json.dumps(kept, ensure_ascii=False, separators=(",", ":"))


def _recorded(lines: Iterator[str], into: list[str]) -> Iterator[str]:
    """The lines, each also appended to `into` (at most one row's: the look-ahead's last)."""
    for line in lines:
        into.append(line)
        yield line


def _raising(error: InputError) -> Iterator[str]:
    """Lines that end in an error found while looking ahead, raised where it happened."""
    raise error
    yield ""  # pragma: no cover  (makes this a generator)
