"""Stream image identifiers out of a CSV file, so memory stays flat at any size.

The file is read as bytes: a bad byte or a NUL is reported with its exact line, and no
line or field can grow without bound. The first rows (a bounded look-ahead) decide the
delimiter, the header and the column; every identifier is then checked against the shape
most of them share, and values that look unlike the rest are counted into one-line
warnings. A shape is only ever a hint: no value is refused or dropped for it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import string
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from batchmap.errors import InputError

if TYPE_CHECKING:
    from _csv import Reader as CsvReader  # the type of csv.reader(...), typeshed only

MAX_IDENTIFIER_LENGTH = 1024
# One bound for a physical line and for a CSV field: large enough for any sane CSV,
# small enough that a binary file or an unclosed quote cannot fill memory.
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_FIELD_CHARS = 16 * 1024 * 1024

# Header cells that name the identifier column when --column is not given, most
# specific first: "image_id,id" picks image_id, not a row number.
HEADER_NAMES = ("image_identifier", "image_id", "identifier", "identifiers", "id")

# How many rows after the first decide the header, the column and the delimiter; the
# look-ahead also stops after this many characters, so huge lines cannot fill memory.
LOOKAHEAD_ROWS = 100
LOOKAHEAD_CHARS = 1024 * 1024
MAX_EXAMPLES = 5  # per warning: memory stays flat however many values look odd
# A row's other columns are kept as one JSON object of at most this many bytes (UTF-8);
# longer ones are cut to fit, with a warning naming their lines.
MAX_COLUMNS_BYTES = 4096

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_READ_BUFFER = 1024 * 1024
_SHOWN_COLUMNS = 20
_SHOWN_CHARS = 40
_EXAMPLE_CHARS = 32

_DELIMITERS = (",", "\t", ";", "|")  # comma first: it wins every tie
_DELIMITER_NAMES = {"\t": "tab", ";": "semicolon", "|": "pipe"}
# identifAI's identifiers are 64 lowercase hex in every doc example, v2 tickets 24.
_IDENTIFAI = re.compile(r"[0-9a-f]{64}|[0-9a-f]{24}")
_IDENTIFAI_LENGTHS = frozenset({24, 64})
# Alphabets a column of identifiers may share, narrowest first.
_ALPHABETS = {
    "digits": string.digits,
    "hex": "0123456789abcdef",
    "HEX": "0123456789ABCDEF",
    "alnum": string.digits + string.ascii_letters,
    "token": string.digits + string.ascii_letters + "-_",
}
_ALPHABET_WORDS = {
    "digits": "digits",
    "hex": "lowercase hex characters",
    "HEX": "uppercase hex characters",
    "alnum": "letters and digits",
    "token": "letters, digits, '-' and '_'",
}
_DELETE = {name: chars.encode() for name, chars in _ALPHABETS.items()}
_SHARE = 0.9  # the share of the sampled values that makes a shape "the rest's"
_SHAPE_SHARE = 0.8  # ... and the share that makes the others' shape worth a warning
_CHUNK = 64 * 1024  # bytes per chunk on the fast path: small, memory stays flat
_CHECK_BATCH = 128  # small: the batch is part of the flat memory a load needs
# Words that head an identifier column, compared casefolded with " " and "-" as "_".
_HEADER_WORDS = frozenset(
    (
        *HEADER_NAMES,
        *("ids", "image", "images", "image_ids", "hash", "image_hash", "sha", "sha256"),
        *("name", "image_name", "file", "filename", "file_name", "path", "url", "uuid", "key"),
    )
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic")
_SEPARATORS = (",", "\t", ";", "|")
_PATH_MARKS = ("/", "\\", ".")  # a path, a URL, a file name


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
        self.rows = 0  # data rows seen (after the header), updated while iterating (per chunk)
        self.blank = 0  # rows skipped because blank or with an empty identifier cell
        self.notes: list[str] = []  # how the file was read, when guessed from its content
        self.warnings: list[str] = []  # values unlike the rest; complete when iteration ends
        self._where = _shown_path(path)

    def __iter__(self) -> Iterator[str]:
        """Yield trimmed, non-empty identifiers in file order; duplicates are the store's job."""
        self.rows = self.blank = 0
        self.notes = []
        self.warnings = []
        return self._identifiers()

    def with_columns(self) -> Iterator[str | tuple[str, str | None]]:
        """Each identifier with its row's other columns, as a JSON object (None: none there).

        A file of one column yields plain identifiers, as iterating does (at full speed);
        one with others yields (identifier, columns) pairs, read row by row through csv
        (about half the speed, still streamed). The object is at most MAX_COLUMNS_BYTES; a
        row whose columns are longer is cut, and warned about.
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

    def _identifiers(self) -> Iterator[str]:
        """The body of __iter__: look ahead to pick the layout, then one identifier per row."""
        where = self._where
        if csv.field_size_limit() < MAX_FIELD_CHARS:  # process-wide; only ever raised
            csv.field_size_limit(MAX_FIELD_CHARS)
        with self._open() as stream:
            lines = _decoded_lines(stream, where)
            head, failure = _read_ahead(lines)
            delimiter = _sniff_delimiter(head, column=self.column)
            rest: Iterator[str] = lines if failure is None else _raise(failure)
            reader = csv.reader(itertools.chain(head, rest), delimiter=delimiter, strict=True)
            # A bad line found while looking ahead is one more line for the reader to meet.
            ahead, failure = _parse_ahead(reader, where, lines=len(head) + (failure is not None))
            filled = [(row, line) for row, line in ahead if _filled(row)]
            if not filled:
                raise failure or InputError(f"{where}: empty file, no identifiers")
            layout = self._layout(filled, delimiter)
            self.notes.extend(layout.notes)
            reading = _Pass(self, layout)
            header_line = filled[0][1] if layout.header is not None else 0
            width = max(len(row) for row, _ in filled)
            if self._kept is not None and width > 1:
                header = filled[0][0] if layout.header is not None else [""] * width
                reading.keep(header, self._kept)
            yield from reading.rows(item for item in ahead if item[1] > header_line)
            if failure is not None:
                raise failure
            if reading.kept is not None:  # every row through csv: its other cells are kept
                yield from reading.csv_rows(reader, base=0, until=-1, last=reader.line_num)
                reading.end()
                return
            for identifiers in reading.stream(stream, number=reader.line_num):
                yield from identifiers
                del identifiers  # before the next chunk is read: memory stays flat
        reading.end()

    def _open(self) -> BinaryIO:
        """Open the file for reading bytes, turning OS errors into one-line InputErrors."""
        where = self._where
        try:
            return open(self.path, "rb", buffering=_READ_BUFFER)
        except FileNotFoundError:
            raise InputError(f"{where}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{where}: is a directory, not a CSV file") from None
        except PermissionError:
            raise InputError(f"{where}: permission denied") from None
        except OSError as error:
            raise InputError(f"{where}: cannot read ({error.strerror or error})") from None

    def _layout(self, filled: list[tuple[list[str], int]], delimiter: str) -> _Layout:
        """Where the identifiers are, from the first filled rows (the first may be a header)."""
        first, line = filled[0]
        cells = [cell.strip() for cell in first]
        after = [row for row, _ in filled[1:]]
        notes = []
        if delimiter != ",":
            notes.append(f"{self._where}: read as {_DELIMITER_NAMES[delimiter]}-separated")
        if self.column is not None:
            index = self._named_column(cells, line=line)
            return _Layout(index, cells[index], delimiter, notes, self._hint(cells, after, index))
        lowered = [cell.lower() for cell in cells]
        for name in HEADER_NAMES:
            if name in lowered:
                index = lowered.index(name)
                return _Layout(
                    index, cells[index], delimiter, notes, self._hint(cells, after, index)
                )
        index, likely = _column_by_content(after or [first], width=len(cells))
        header = None
        if after and _looks_like_header(cells[index] if index < len(cells) else "", after, index):
            header = cells[index]
        if len(likely) > 1:
            listed = ", ".join(_column_name(cells, i, header=header is not None) for i in likely)
            notes.append(
                f"{self._where}: columns {listed} all look like identifiers;"
                f" reading column {index + 1} (use --column to choose)"
            )
        elif index:
            shown = _column_name(cells, index, header=header is not None)
            notes.append(f"{self._where}: reading column {shown}: its values look like identifiers")
        if header is not None:
            notes.append(
                f"{self._where}:{line}: took {_example(header)} as the header:"
                " it looks unlike the identifiers below it"
            )
        return _Layout(index, header, delimiter, notes, None)

    @staticmethod
    def _hint(cells: list[str], after: list[list[str]], index: int) -> str | None:
        other = _column_hint(after, index)
        return None if other is None else _column_name(cells, other, header=True)

    def _named_column(self, cells: list[str], *, line: int) -> int:
        """The index of the --column in the header row, or a one-line error listing them."""
        assert self.column is not None
        wanted = self.column.strip()
        if wanted in cells:
            return cells.index(wanted)
        folded = [cell.casefold() for cell in cells]
        if wanted.casefold() in folded:
            return folded.index(wanted.casefold())
        raise InputError(
            f"{self._where}:{line}: no column {self.column!r} in the header"
            f" (columns: {_shown_columns(cells)})"
        )

    def _nothing_found(self, name: str | None, *, only_blank_rows: bool) -> InputError:
        """The error for a file that holds rows but not one identifier."""
        if name is not None and only_blank_rows:
            return InputError(f"{self._where}: no identifiers (header only)")
        column = "1" if name is None else repr(name)
        return InputError(f"{self._where}: no identifiers (column {column} is empty in every row)")


class _Pass:
    """One pass over the rows after the look-ahead: counts, checks and yields identifiers.

    Lines without a quote, a NUL or a bare CR (nearly every file) are cut in chunks with
    str.split, several times faster than csv; any other chunk goes through csv, line by line.
    """

    def __init__(self, source: IdSource, layout: _Layout) -> None:
        self.source = source
        self.where = source._where
        self.layout = layout
        self.checker = _Checker(self.where, layout)
        self.other_cells = False  # did a row without identifier hold anything else?
        self.batch: list[str] = []
        self.batch_lines: list[int] = []
        self.kept: deque[str | None] | None = None  # set by keep(): other columns are kept
        self.names: list[str] = []
        self.cut = _Tally()  # rows whose other columns were cut to MAX_COLUMNS_BYTES

    def keep(self, header: list[str], kept: deque[str | None]) -> None:
        """Keep each row's other cells, named by the header (else "column N"), in `kept`."""
        self.kept = kept
        names: list[str] = []
        for number, cell in enumerate(header, 1):
            name = cell.strip() or f"column {number}"
            while name in names:
                name += f" ({number})"
            names.append(name)
        self.names = names
        self.source.kept_names = [n for i, n in enumerate(names) if i != self.layout.index]
        self.source.id_name = self.layout.header

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

    def rows(self, rows: Iterable[tuple[list[str], int]]) -> Iterator[str]:
        """Identifiers of csv rows, each with the line it starts on; counts kept row by row."""
        for row, line in rows:
            if identifier := self.take(row, line):
                yield identifier

    def take(self, row: list[str], line: int) -> str:
        """One row's identifier ("" if none), counted and queued for the checks."""
        source = self.source
        source.rows += 1
        try:
            identifier = row[self.layout.index].strip()
        except IndexError:
            identifier = ""
        if identifier:
            if len(identifier) > MAX_IDENTIFIER_LENGTH:
                raise _too_long(self.where, identifier, line=line)
            self.batch.append(identifier)
            self.batch_lines.append(line)
            if self.kept is not None:
                self.kept.append(self.columns(row, line))
            if len(self.batch) >= _CHECK_BATCH:
                self.flush()
        else:
            source.blank += 1
            self.other_cells = self.other_cells or _filled(row)
        return identifier

    def flush(self) -> None:
        self.checker.check(self.batch, self.batch_lines)
        self.batch.clear()
        self.batch_lines.clear()

    def stream(self, stream: BinaryIO, *, number: int) -> Iterator[Iterable[str]]:
        """Identifiers of the rest of the file, read in chunks that end at a line's end.

        Yields a list per plain chunk (one level of generators per identifier is what the
        fast path costs), and a generator over the csv rows of any other chunk: decoded at
        once if it can be, line by line (to name the line of a bad byte) if not.
        """
        while raw := stream.read(_CHUNK):
            if not raw.endswith(b"\n"):
                raw += stream.readline(MAX_LINE_BYTES + 1)
            text = _clean_text(raw)
            if text is not None and b'"' not in raw:
                lines = text.split("\n")
                if text.endswith("\n"):
                    lines.pop()
                yield self.chunk(lines, raw, first=number + 1)
                number += len(lines)
                del raw, text, lines  # before the next chunk is read: memory stays flat
                continue
            count = raw.count(b"\n") + (not raw.endswith(b"\n"))
            identifiers = None if text is None else self.quoted(text, first=number + 1)
            if identifiers is not None:
                yield identifiers
                number += count
                del raw, text, identifiers
                continue
            decoded: Iterator[str]
            if text is not None:  # a row goes on past the chunk: csv reads on into the stream
                rest = _decoded_lines_from([], stream, self.where, number=number + count)
                decoded = itertools.chain(io.StringIO(text, newline=""), rest)
            else:
                parts = raw.split(b"\n")
                tail = parts.pop()
                raws = [part + b"\n" for part in parts] + ([tail] if tail else [])
                decoded = _decoded_lines_from(raws, stream, self.where, number=number)
            del raw, text
            reader = csv.reader(decoded, delimiter=self.layout.delimiter, strict=True)
            yield self.csv_rows(reader, base=number, until=count)
            number += reader.line_num

    def csv_rows(self, reader: CsvReader, *, base: int, until: int, last: int = 0) -> Iterator[str]:
        """Identifiers of the rows of a reader over lines base+1.., until it has used
        `until` lines (and the row that straddles the end; -1: to the end, after `last`
        lines already used); csv errors name the row's line."""
        try:
            take = self.take
            for row in reader:
                if identifier := take(row, base + last + 1):
                    yield identifier
                last = reader.line_num
                if last >= until >= 0:
                    return
        except csv.Error as error:
            start, end = base + last + 1, base + reader.line_num
            raise _csv_problem(self.where, error, start=start, end=end) from None

    def chunk(self, lines: list[str], raw: bytes, *, first: int) -> Iterable[str]:
        """Identifiers of whole lines without quotes, as a list; counts kept chunk by chunk."""
        delimiter, index = self.layout.delimiter, self.layout.index
        split = delimiter.encode() in raw
        if not split:
            cells = list(map(str.strip, lines)) if index == 0 else [""] * len(lines)
        elif index == 0:
            cells = [line.partition(delimiter)[0].strip() for line in lines]
        else:
            cells = [
                row[index].strip() if len(row := line.split(delimiter)) > index else ""
                for line in lines
            ]

        def others() -> bool:
            return (split or index > 0) and any(
                line.replace(delimiter, "").strip()
                for line, cell in zip(lines, cells, strict=False)
                if not cell
            )

        plain = raw if index == 0 and not split else None
        return self.bulk(cells, first=first, raw=plain, others=others)

    def quoted(self, text: str, *, first: int) -> Iterable[str] | None:
        """Identifiers of a chunk with quotes, as a list, if each of its rows is one line."""
        reader = csv.reader(
            io.StringIO(text, newline=""), delimiter=self.layout.delimiter, strict=True
        )
        try:
            rows = list(reader)
        except csv.Error:  # a row goes on into the next chunk, or a real error: row by row
            return None
        if len(rows) != reader.line_num:
            return None
        index = self.layout.index
        cells = [row[index].strip() if len(row) > index else "" for row in rows]

        def others() -> bool:
            return any(_filled(row) for row, cell in zip(rows, cells, strict=False) if not cell)

        return self.bulk(cells, first=first, raw=None, others=others)

    def bulk(
        self, cells: list[str], *, first: int, raw: bytes | None, others: Callable[[], bool]
    ) -> Iterable[str]:
        """The identifiers of a chunk's rows (cells[n] on line first+n, "" if blank)."""
        lengths = set(map(len, cells))
        too_long = None
        if max(lengths) > MAX_IDENTIFIER_LENGTH:
            at = next(n for n, cell in enumerate(cells) if len(cell) > MAX_IDENTIFIER_LENGTH)
            too_long = _too_long(self.where, cells[at], line=first + at)
            del cells[at:]
            lengths, raw = set(map(len, cells)), None
        source = self.source
        source.rows += len(cells)
        blanks = cells.count("")
        if blanks:
            source.blank += blanks
            self.other_cells = self.other_cells or others()
        self.flush()  # keeps the examples in line order
        self.checker.check(cells, range(first, first + len(cells)), lengths=lengths, raw=raw)
        if too_long is not None:
            return _then_raise(list(filter(None, cells)), too_long)
        return list(filter(None, cells)) if blanks else cells

    def end(self) -> None:
        """After the last row: refuse a file without identifiers, complete the warnings."""
        self.flush()
        source = self.source
        if source.rows == source.blank:
            raise source._nothing_found(self.layout.header, only_blank_rows=not self.other_cells)
        source.warnings.extend(self.checker.warnings())
        if self.cut.count:
            source.warnings.append(
                f"{self.where}: {self.cut.count:,} rows' other columns are longer than"
                f" {MAX_COLUMNS_BYTES:,} bytes; kept cut to fit: {_lines(self.cut)}"
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


def _then_raise(identifiers: list[str], error: InputError) -> Iterator[str]:
    yield from identifiers
    raise error


def _clean_text(raw: bytes) -> str | None:
    """The chunk as text when nothing in it needs naming a line, else None (line by line).

    That is: no NUL, no CR but in CRLF, no line over the limits, valid UTF-8.
    """
    if len(raw) > MAX_LINE_BYTES or len(raw) > MAX_FIELD_CHARS or 0 in raw:
        return None
    if b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n"):
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class _Layout:
    """How to read the file: the column, its header (None: no header), what was guessed."""

    index: int
    header: str | None
    delimiter: str
    notes: list[str] = field(default_factory=list)
    # Another column that looks like identifiers when the chosen one does not, named.
    better: str | None = None


def _read_ahead(lines: Iterator[str]) -> tuple[list[str], InputError | None]:
    """The first lines, bounded in rows and characters; a bad line ends them, kept for later."""
    head: list[str] = []
    filled = chars = 0
    try:
        for line in lines:
            head.append(line)
            chars += len(line)
            filled += not line.isspace()
            if filled > LOOKAHEAD_ROWS or chars > LOOKAHEAD_CHARS:
                break
    except InputError as error:
        return head, error
    return head, None


def _parse_ahead(
    reader: CsvReader, where: str, *, lines: int
) -> tuple[list[tuple[list[str], int]], InputError | None]:
    """The rows in the looked-ahead lines, each with the line it starts on; errors kept."""
    ahead: list[tuple[list[str], int]] = []
    line_num = reader.line_num
    try:
        while line_num < lines:
            row = next(reader)
            ahead.append((row, line_num + 1))
            line_num = reader.line_num
    except StopIteration:
        pass
    except InputError as error:
        return ahead, error
    except csv.Error as error:
        end = reader.line_num
        return ahead, _csv_problem(where, error, start=line_num + 1, end=end)
    return ahead, None


def _raise(error: InputError) -> Iterator[str]:
    """Lines that end in an error found while looking ahead, raised where it happened."""
    raise error
    yield ""  # pragma: no cover  (makes this a generator)


def _filled(row: Sequence[str]) -> bool:
    return any(cell.strip() for cell in row)


def _sniff_delimiter(lines: list[str], *, column: str | None) -> str:
    """Comma, tab, ';' or '|': the one that splits the first lines into a steady column count.

    A header naming the column settles it; among steady splits, one that shows a column of
    identifAI-shaped values wins (a TSV's text may hold commas, a ';' file decimal commas),
    then comma (what the file was read as before sniffing), then the widest.
    """
    parsed: dict[str, list[list[str]]] = {}
    for delimiter in _DELIMITERS:
        rows = parsed[delimiter] = []
        try:
            for row in csv.reader(lines, delimiter=delimiter):
                if _filled(row):
                    rows.append(row)
        except csv.Error:
            pass
    names = HEADER_NAMES if column is None else (column.strip().casefold(),)
    for name in names:
        for delimiter in _DELIMITERS:
            first = parsed[delimiter][0] if parsed[delimiter] else []
            if len(first) > 1 and name in (cell.strip().casefold() for cell in first):
                return delimiter
    steady: list[tuple[bool, bool, int, str]] = []
    for delimiter in _DELIMITERS:
        rows = parsed[delimiter]
        widths = Counter(map(len, rows)).most_common(1)
        if widths and widths[0][0] >= 2 and widths[0][1] >= _SHARE * len(rows):
            _, likely = _column_by_content(rows[1:] or rows, width=0)
            steady.append((bool(likely), delimiter == ",", widths[0][0], delimiter))
    if not steady:
        return ","
    return max(steady, key=lambda candidate: candidate[:3])[3]  # max keeps the first of ties


def _looks_identifai(cell: str) -> bool:
    return _IDENTIFAI.fullmatch(cell.strip()) is not None


def _identifai_share(rows: Sequence[Sequence[str]], index: int) -> float:
    cells = [row[index] for row in rows if index < len(row) and row[index].strip()]
    return sum(map(_looks_identifai, cells)) / len(cells) if cells else 0.0


def _column_by_content(rows: list[list[str]], *, width: int) -> tuple[int, list[int]]:
    """The column most of whose values look like identifAI's (else the first), and all such."""
    width = min(max([width, *map(len, rows)]), 100)
    shares = [_identifai_share(rows, index) for index in range(width)]
    likely = [index for index, share in enumerate(shares) if share >= 0.5]
    # max keeps the leftmost of ties
    return max(likely, key=lambda index: shares[index], default=0), likely


def _column_hint(rows: list[list[str]], index: int) -> int | None:
    """Another column that looks like identifAI's when the chosen one does not."""
    if not rows or _identifai_share(rows, index) >= 0.5:
        return None
    other, likely = _column_by_content(rows, width=0)
    return other if likely else None


def _column_name(cells: list[str], index: int, *, header: bool) -> str:
    """A column for a message: its number, and its header cell when there is one."""
    if header and index < len(cells) and cells[index]:
        return f"{index + 1} ({_example(cells[index])})"
    return str(index + 1)


def _fits(value: str, alphabet: str) -> bool:
    """Whether every character of the value is in the alphabet (strip runs in C)."""
    return value.isascii() and not value.strip(_ALPHABETS[alphabet])


def _narrowest(values: Sequence[str], *, share: float) -> str | None:
    """The narrowest alphabet that holds at least `share` of the values, if any."""
    for name in _ALPHABETS:
        if sum(_fits(value, name) for value in values) >= share * len(values):
            return name
    return None


def _looks_like_header(cell: str, after: list[list[str]], index: int) -> bool:
    """A first cell is a header when it holds letters outside the alphabet of the cells below.

    Case is ignored, and a first cell of digits never counts: a shorter or longer identifier
    of the same alphabet is loaded (and warned about), not dropped.
    """
    below = [row[index].strip().casefold() for row in after if index < len(row)]
    below = [value for value in below if value]
    first = cell.casefold()
    if not below or not any(char.isalpha() for char in first) or _looks_identifai(first):
        return False
    if _normal(first) in _HEADER_WORDS and first not in below:
        return True
    alphabet = _narrowest(below, share=_SHARE)
    if alphabet is None:
        return False
    if not _fits(first, alphabet):
        return True
    # A word over coded values: "name" above "a1b2c3...".
    wordish = all(char.isalpha() or char in " _-" for char in first)
    coded = sum(any(char.isdigit() for char in value) for value in below)
    return wordish and coded >= _SHARE * len(below) and len(first) not in set(map(len, below))


@dataclass
class _Tally:
    """How many values fell in one warning's category, with the first few as examples."""

    count: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, value: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((line, value))

    def add_all(self, found: list[int], values: list[str], lines: Sequence[int]) -> None:
        """Add values[n] (on lines[n]) for each n found."""
        self.count += len(found)
        for n in found[: MAX_EXAMPLES - len(self.examples)]:
            self.examples.append((lines[n], values[n]))


class _Shape:
    """The alphabet and lengths most sampled values share: what "the rest" looks like."""

    def __init__(self, values: Sequence[str]) -> None:
        self.alphabet = _narrowest(values, share=_SHAPE_SHARE) if values else None
        lengths = Counter(map(len, values)).most_common(1)
        self.lengths: frozenset[int] | None = None
        if lengths and lengths[0][1] >= _SHAPE_SHARE * len(values):
            self.lengths = frozenset({lengths[0][0]})
        if self.alphabet == "hex" and self.lengths and self.lengths <= _IDENTIFAI_LENGTHS:
            self.lengths = _IDENTIFAI_LENGTHS  # v1 identifiers and v2 tickets mix freely

    def fits(self, value: str) -> bool:
        """Whether a value has the shape; always True when the sample had none."""
        if self.alphabet is None:
            return True
        lengths = self.lengths
        return (lengths is None or len(value) in lengths) and _fits(value, self.alphabet)

    def all_fit(
        self, values: list[str], *, lengths: set[int] | None = None, raw: bytes | None = None
    ) -> bool:
        """Whether every value has the shape, checked in C over the whole batch."""
        if self.alphabet is None:
            return False
        alphabet = _DELETE[self.alphabet]
        if raw is None or raw.translate(None, alphabet + b"\r\n"):
            joined = "".join(values)
            if not joined.isascii() or joined.encode().translate(None, alphabet):
                return False
        if self.lengths is None:
            return True
        return (lengths or set(map(len, values))) <= self.lengths | {0}

    def describe(self) -> str:
        words = _ALPHABET_WORDS[self.alphabet or "token"]
        if self.lengths is None:
            return words
        if self.lengths == _IDENTIFAI_LENGTHS:
            return f"64 (or 24) {words}"
        return f"{next(iter(self.lengths))} {words}"


class _Checker:
    """Counts the values that look unlike the rest, in batches, keeping a few examples."""

    def __init__(self, where: str, layout: _Layout) -> None:
        self.where = where
        self.layout = layout
        self.total = 0
        self.shape: _Shape | None = None
        self.header_words = set(_HEADER_WORDS)
        if layout.header:
            self.header_words.add(_normal(layout.header))
        self.headers = _Tally()
        self.paths = _Tally()
        self.delimited = _Tally()
        self.odd = _Tally()
        self.identifai = 0

    def check(
        self,
        values: list[str],
        lines: Sequence[int],
        *,
        lengths: set[int] | None = None,
        raw: bytes | None = None,
    ) -> None:
        """Account for one batch ("" for a blank row): the first also fixes the others' shape.

        `lengths` (of the values) and `raw` (the bytes the values are the lines of) save work.
        """
        if not values:
            return
        if self.shape is None:
            sample = values[: LOOKAHEAD_ROWS + 1]
            self.shape = _Shape([value for value in sample if value and not self._category(value)])
        self.total += len(values) - values.count("")
        shape = self.shape
        if self.layout.better is not None:
            self.identifai += sum(map(_looks_identifai, filter(None, values)))
        if shape.all_fit(values, lengths=lengths, raw=raw):
            if shape.alphabet in ("alnum", "token"):  # could spell a repeated header
                self._check_categories(values, lines)
            return
        seen = self._check_categories(values, lines)
        if shape.alphabet is not None:
            for n, value in enumerate(values):
                if value and n not in seen and not shape.fits(value):
                    self.odd.add(lines[n], value)

    def _check_categories(self, values: list[str], lines: Sequence[int]) -> set[int]:
        """Tally headers, paths and delimited lines; the indexes of the values tallied.

        Whole-batch string operations (in C) rule out most of the work: the values are
        joined on NUL, which no value can hold.
        """
        joined = "\0".join(values)
        seen: set[int] = set()
        normal = _normal(joined).split("\0")
        if not self.header_words.isdisjoint(normal):
            for n, word in enumerate(normal):
                if word in self.header_words and len(values[n]) < 40:
                    self.headers.add(lines[n], values[n])
                    seen.add(n)
        for tally, marks, test in (
            (self.paths, _PATH_MARKS, _looks_like_path),
            (self.delimited, _SEPARATORS, _looks_delimited),
        ):
            if any(mark in joined for mark in marks):
                found = [n for n, value in enumerate(values) if test(value) and n not in seen]
                tally.add_all(found, values, lines)
                seen.update(found)
        return seen

    def _category(self, value: str) -> _Tally | None:
        """The warning a value belongs to whatever the others look like, if any."""
        if len(value) < 40 and _normal(value) in self.header_words:
            return self.headers
        if _looks_like_path(value):
            return self.paths
        if _looks_delimited(value):
            return self.delimited
        return None

    def warnings(self) -> list[str]:
        """One line per kind of odd value, with counts and examples; empty if none."""
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
        if self.layout.better is not None and self.identifai == 0:
            found.append(
                f"{self.where}: no identifier looks like identifAI's (64 lowercase hex"
                f" characters) but column {self.layout.better} does;"
                " if requests answer 404, check --column"
            )
        return [warning for warning in found if warning]

    def _warning(self, tally: _Tally, verb: str, what: str) -> str:
        """'F: 3 of 1,000 identifiers look like ...: lines 2 'x', ...; loaded as given'."""
        if not tally.count:
            return ""
        if tally.count > 1:
            verb = verb.removesuffix("s")
        return (
            f"{self.where}: {tally.count:,} of {self.total:,} identifiers {verb} {what}:"
            f" {_lines(tally)}; loaded as given"
        )


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.lower().endswith(_IMAGE_SUFFIXES)


def _looks_delimited(value: str) -> bool:
    return "," in value or "\t" in value or ";" in value or "|" in value


def _normal(value: str) -> str:
    """A header cell as compared with _HEADER_WORDS: "Image-ID" is "image_id"."""
    return value.casefold().replace(" ", "_").replace("-", "_")


def _lines(tally: _Tally) -> str:
    shown = ", ".join(f"{line} {_example(value)}" for line, value in tally.examples)
    more = ", ..." if tally.count > len(tally.examples) else ""
    return f"line{'s' if tally.count > 1 else ''} {shown}{more}"


def _example(value: str) -> str:
    """A value as shown in a message: quoted, escaped, clipped (escapes count too)."""
    shown = value[:_EXAMPLE_CHARS]
    while len(repr(shown)) > _EXAMPLE_CHARS + 2:
        shown = shown[:-1]
    return repr(shown) + ("..." if len(shown) < len(value) else "")


def _decoded_lines(stream: BinaryIO, where: str) -> Iterator[str]:
    """Decode each physical line as UTF-8, naming the line of any NUL or bad byte."""
    raw = stream.readline(MAX_LINE_BYTES + 1)
    if raw.startswith(_UTF16_BOMS):
        raise InputError(
            f"{where}:1: not valid UTF-8 (it starts with a UTF-16 byte order mark;"
            " save it as UTF-8)"
        )
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    if raw:
        yield from _decoded_lines_from([raw], stream, where, number=0)


def _decoded_lines_from(
    raws: list[bytes], stream: BinaryIO, where: str, *, number: int
) -> Iterator[str]:
    """The lines `raws` (lines number+1..), then the stream's next lines, read as asked for."""
    rest = iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b"")
    for raw in itertools.chain(raws, rest):
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise InputError(
                f"{where}:{number}: line is longer than {MAX_LINE_BYTES:,} bytes;"
                " is this a CSV file?"
            )
        if 0 in raw:  # an int finds the byte much faster than b"\0" does
            raise InputError(f"{where}:{number}: contains a NUL byte; is this a binary file?")
        try:
            line = raw.decode()
        except UnicodeDecodeError as error:
            raise _not_utf8(where, raw, error, line=number) from None
        yield line


def _not_utf8(where: str, raw: bytes, error: UnicodeDecodeError, *, line: int) -> InputError:
    column = len(raw[: error.start].decode()) + 1  # in characters, as an editor counts
    return InputError(
        f"{where}:{line}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {column})"
    )


def _too_long(where: str, identifier: str, *, line: int) -> InputError:
    hint = "; is a quote left open?" if "\n" in identifier else ""
    return InputError(
        f"{where}:{line}: identifier is {len(identifier)} characters long,"
        f" more than {MAX_IDENTIFIER_LENGTH}{hint}"
    )


def _csv_problem(where: str, error: csv.Error, *, start: int, end: int) -> InputError:
    """A csv.Error as one line pointing at the row where it happened."""
    message = str(error)
    if message.startswith("new-line character seen in unquoted field"):
        message = "carriage return inside an unquoted field; save the file with LF or CRLF endings"
    elif message == "unexpected end of data":
        message = "the file ends inside a quoted field"
    elif message.startswith("field larger than field limit"):
        message = f"a field is longer than {MAX_FIELD_CHARS:,} characters"
    if end > start:
        message += f" (in the row on lines {start}-{end}; is a quote left open?)"
    return InputError(f"{where}:{start}: {message}")


def _shown_path(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else repr(text)


def _shown_columns(cells: list[str]) -> str:
    """Header names for an error message: one line, each name and the list clipped."""
    shown = []
    for cell in cells[:_SHOWN_COLUMNS]:
        if not cell or not cell.isprintable() or "," in cell or len(cell) > _SHOWN_CHARS:
            cell = repr(cell[:_SHOWN_CHARS])
        shown.append(cell)
    if len(cells) > _SHOWN_COLUMNS:
        shown.append(f"... {len(cells) - _SHOWN_COLUMNS} more")
    return ", ".join(shown)
