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
import operator
from collections.abc import Iterator, Sequence
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
# Rows are read, counted and checked for shape in batches: large enough for whole-batch
# operations (in C) to pay, small enough to be part of the flat memory a load needs.
_BATCH = 1024


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
        self.rows = 0  # data rows seen (after the header), updated while iterating
        self.blank = 0  # rows skipped because blank or with an empty identifier cell
        self.notes: list[str] = []  # how the file was read, when guessed from its content
        self.warnings: list[str] = []  # values unlike the rest; complete when iteration ends
        self._where = read.shown_path(path)

    def __iter__(self) -> Iterator[str]:
        """Yield trimmed, non-empty identifiers in file order; duplicates are the store's job."""
        return self._start(keep=False)  # type: ignore[return-value]  # no pairs without keep

    def with_columns(self) -> Iterator[str | tuple[str, str | None]]:
        """Each identifier with its row's other columns, as a JSON object (None: none there).

        A file of one column yields plain identifiers, as iterating does; one with others
        yields (identifier, columns) pairs. The object is at most MAX_COLUMNS_BYTES; a row
        whose columns are longer is cut, and warned about.
        """
        return self._start(keep=True)

    def _start(self, *, keep: bool) -> Iterator[str | tuple[str, str | None]]:
        """A new pass over the file, counts reset: the items of each batch of rows in turn
        (one level of iteration per item, in C)."""
        self.rows = self.blank = 0
        self.notes = []
        self.warnings = []
        return itertools.chain.from_iterable(self._batches(keep=keep))

    def _open(self) -> BinaryIO:
        """The file opened for reading bytes; OS errors are one-line InputErrors."""
        return read.open_csv(self.path, self._where)

    def _batches(self, *, keep: bool) -> Iterator[list[str] | list[tuple[str, str | None]]]:
        """Look ahead to pick the layout, then read every row: the items of each batch."""
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
            if keep and width > 1:
                reading.keep(first[0][0] if found.header is not None else [""] * width)
            failure = failure or problem
            rest = lines if failure is None else _raising(failure)  # the same error, in place
            rows = read.reader(itertools.chain(head, straddling, rest), delimiter)
            yield from reading.batches(rows, after=first[0][1] if found.header is not None else 0)
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

    def batches(
        self, rows: CsvReader, *, after: int
    ) -> Iterator[list[str] | list[tuple[str, str | None]]]:
        """The items of the rows that start after line `after` (the header's), _BATCH rows
        at a time; each batch counted and checked whole, an error raised after the items of
        the rows before it, naming the line its row starts on."""
        last = 0  # the line the rows read so far end on
        try:
            while last < after:  # the header, and any blank lines above it: not data rows
                next(rows)
                last = rows.line_num
        except csv.Error as error:
            raise read.csv_problem(self.where, error, start=last + 1, end=rows.line_num) from None
        batch: list[list[str]] = []
        while True:
            failure: csv.Error | InputError | None = None
            try:
                batch.extend(itertools.islice(rows, _BATCH))  # keeps the rows before an error
            except (csv.Error, InputError) as error:
                failure = error
            if failure is None and rows.line_num - last == len(batch):
                starts: Sequence[int] = range(last + 1, last + 1 + len(batch))  # a line each
                last = rows.line_num
            else:
                starts, last = _starts(batch, first=last + 1)
            items, problem = self.items(batch, starts)
            if items:
                yield items
            if problem is not None:
                raise problem
            if isinstance(failure, csv.Error):
                raise read.csv_problem(self.where, failure, start=last + 1, end=rows.line_num)
            if failure is not None:
                raise failure
            if not batch:
                return
            batch.clear()

    def items(
        self, batch: list[list[str]], starts: Sequence[int]
    ) -> tuple[list[str] | list[tuple[str, str | None]], InputError | None]:
        """A batch of rows (starting on those lines) counted and checked: its identifiers
        (with their columns when kept), and the error of the first too long, if any."""
        index = self.layout.index
        try:  # in C, unless a row is too short to have the column
            identifiers = list(map(str.strip, map(operator.itemgetter(index), batch)))
        except IndexError:
            identifiers = [row[index].strip() if index < len(row) else "" for row in batch]
        self.source.rows += len(batch)
        if "" in identifiers:  # blank rows: counted, then dropped
            self.source.blank += identifiers.count("")
            blank = [
                row for row, identifier in zip(batch, identifiers, strict=True) if not identifier
            ]
            self.other_cells = self.other_cells or any(map(filled, blank))
            filled_rows = [n for n, identifier in enumerate(identifiers) if identifier]
            batch = [batch[n] for n in filled_rows]
            starts = [starts[n] for n in filled_rows]
            identifiers = [identifiers[n] for n in filled_rows]
        problem = None
        if identifiers and max(map(len, identifiers)) > MAX_IDENTIFIER_LENGTH:
            bad = next(
                n for n, value in enumerate(identifiers) if len(value) > MAX_IDENTIFIER_LENGTH
            )
            problem = read.too_long(self.where, identifiers[bad], line=starts[bad])
            batch, starts, identifiers = batch[:bad], starts[:bad], identifiers[:bad]
        self.checker.check(identifiers, starts)
        if not self.names:
            return identifiers, problem
        columns = [self.columns(row, line) for row, line in zip(batch, starts, strict=True)]
        return list(zip(identifiers, columns, strict=True)), problem

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


def _starts(batch: list[list[str]], *, first: int) -> tuple[list[int], int]:
    """The line each row starts on, the first on `first`, and the line the last ends on: a
    row goes on for each line break its quoted cells hold."""
    starts: list[int] = []
    line = first
    for row in batch:
        starts.append(line)
        line += 1 + sum(cell.count("\n") for cell in row)
    return starts, line - 1


def _recorded(lines: Iterator[str], into: list[str]) -> Iterator[str]:
    """The lines, each also appended to `into` (at most one row's: the look-ahead's last)."""
    for line in lines:
        into.append(line)
        yield line


def _raising(error: InputError) -> Iterator[str]:
    """Lines that end in an error found while looking ahead, raised where it happened."""
    raise error
    yield ""  # pragma: no cover  (makes this a generator)
