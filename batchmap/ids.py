"""Stream image identifiers out of a CSV file, line by line, so memory stays flat at any size.

The file is read as bytes and decoded one physical line at a time: a bad byte or a NUL
is then reported with its exact line, and no line or field can grow without bound.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from batchmap.errors import InputError

MAX_IDENTIFIER_LENGTH = 1024
# One bound for a physical line and for a CSV field: large enough for any sane CSV,
# small enough that a binary file or an unclosed quote cannot fill memory.
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_FIELD_CHARS = 16 * 1024 * 1024

# Header cells that name the identifier column when --column is not given, most
# specific first: "image_id,id" picks image_id, not a row number.
HEADER_NAMES = ("image_identifier", "image_id", "identifier", "identifiers", "id")

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_READ_BUFFER = 1024 * 1024
_SHOWN_COLUMNS = 20
_SHOWN_CHARS = 40


class IdSource:
    """Identifiers from one CSV file, streamed; counts what it skipped."""

    def __init__(self, path: Path, *, column: str | None = None) -> None:
        self.path = path
        self.column = column
        self.rows = 0  # data rows seen (after the header), updated while iterating
        self.blank = 0  # rows skipped because blank or with an empty identifier cell
        self._where = _shown_path(path)

    def __iter__(self) -> Iterator[str]:
        """Yield trimmed, non-empty identifiers in file order; duplicates are the store's job."""
        self.rows = self.blank = 0
        return self._identifiers()

    def _identifiers(self) -> Iterator[str]:
        """The body of __iter__: header and column first, then one identifier per row."""
        where = self._where
        if csv.field_size_limit() < MAX_FIELD_CHARS:  # process-wide; only ever raised
            csv.field_size_limit(MAX_FIELD_CHARS)
        with self._open() as stream:
            reader = csv.reader(_decoded_lines(stream, where), strict=True)
            last = 0  # physical line on which the previous row ended
            other_cells = False  # did a row without identifier hold anything else?
            try:
                first: list[str] | None = None
                leading_blanks = 0
                for row in reader:
                    if any(cell.strip() for cell in row):
                        first = row
                        break
                    leading_blanks += 1
                    last = reader.line_num
                if first is None:
                    raise InputError(f"{where}: empty file, no identifiers")
                index, name = self._pick_column(first, line=last + 1)
                rows: Iterator[list[str]] = reader
                if name is None:  # no header: the first filled row is already data
                    self.rows = self.blank = leading_blanks
                    rows = itertools.chain([first], reader)
                else:
                    last = reader.line_num
                for row in rows:
                    self.rows += 1
                    try:
                        identifier = row[index].strip()
                    except IndexError:
                        identifier = ""
                    if identifier:
                        if len(identifier) > MAX_IDENTIFIER_LENGTH:
                            raise _too_long(where, identifier, line=last + 1)
                        yield identifier
                    else:
                        self.blank += 1
                        other_cells = other_cells or any(cell.strip() for cell in row)
                    last = reader.line_num
            except csv.Error as error:
                raise _csv_problem(where, error, start=last + 1, end=reader.line_num) from None
        if self.rows == self.blank:
            raise self._nothing_found(name, only_blank_rows=not other_cells)

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

    def _pick_column(self, row: list[str], *, line: int) -> tuple[int, str | None]:
        """Index of the identifier column and its header name (None: the file has no header)."""
        cells = [cell.strip() for cell in row]
        if self.column is None:
            lowered = [cell.lower() for cell in cells]
            for name in HEADER_NAMES:
                if name in lowered:
                    index = lowered.index(name)
                    return index, cells[index]
            return 0, None
        wanted = self.column.strip()
        if wanted in cells:
            return cells.index(wanted), wanted
        folded = [cell.casefold() for cell in cells]
        if wanted.casefold() in folded:
            index = folded.index(wanted.casefold())
            return index, cells[index]
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


def _decoded_lines(stream: BinaryIO, where: str) -> Iterator[str]:
    """Decode each physical line as UTF-8, naming the line of any NUL or bad byte."""
    readline = stream.readline
    raw = readline(MAX_LINE_BYTES + 1)
    if raw.startswith(_UTF16_BOMS):
        raise InputError(
            f"{where}:1: not valid UTF-8 (it starts with a UTF-16 byte order mark;"
            " save it as UTF-8)"
        )
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    number = 1
    while raw:
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
        raw = readline(MAX_LINE_BYTES + 1)
        number += 1


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
