"""Reading a CSV file line by line: each physical line decoded and bounded, each csv row
numbered with the line it starts on, every failure one line naming the file and that line."""

from __future__ import annotations

import csv
import functools
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from batchmap.errors import InputError

if TYPE_CHECKING:
    from _csv import Reader as CsvReader  # the type of csv.reader(...), typeshed only

# identifAI's identifiers are 64 characters; anything past this is not one (a quote left
# open swallows lines), and stored rows stay small.
MAX_IDENTIFIER_LENGTH = 1024
# One bound for a physical line and for a CSV field: large enough for any sane CSV,
# small enough that a binary file or an unclosed quote cannot fill memory.
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_FIELD_CHARS = 16 * 1024 * 1024
# The file is read, checked and decoded this many bytes at a time: whole-chunk operations in
# C instead of a loop per line, and a small part of the flat memory a load needs.
CHUNK_BYTES = 64 * 1024
# Examples in messages are clipped to this many characters: one line stays readable.
EXAMPLE_CHARS = 32

# Byte order marks: UTF-8's (Excel writes one) is dropped, UTF-16's names the problem.
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def shown_path(path: Path) -> str:
    """The file as messages name it: as given, or quoted if it holds unprintable characters."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def open_csv(path: Path, where: str) -> BinaryIO:
    """Open the file for reading bytes, turning OS errors into one-line InputErrors."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{where}: is a directory, not a CSV file") from None
    except PermissionError:
        raise InputError(f"{where}: permission denied") from None
    except OSError as error:
        raise InputError(f"{where}: cannot read ({error.strerror or error})") from None


def decoded_lines(stream: BinaryIO, where: str) -> Iterator[str]:
    """Each physical line as UTF-8 text (a UTF-8 BOM dropped), naming the line of a NUL, a
    bad byte or a line over MAX_LINE_BYTES. Raises csv's field bound to MAX_FIELD_CHARS for
    the readers of these lines.

    The file is read CHUNK_BYTES at a time, cut after its last newline; a chunk without a
    NUL, a bad byte or an overlong line (nearly all) is decoded and split whole, in C; any
    other goes line by line, so an error is raised after the lines before it, naming its own.
    Memory stays flat: one chunk and one line (at most MAX_LINE_BYTES) are ever held.
    """
    if csv.field_size_limit() < MAX_FIELD_CHARS:  # process-wide; only ever raised
        csv.field_size_limit(MAX_FIELD_CHARS)
    return itertools.chain.from_iterable(_chunks(stream, where))


def _chunks(stream: BinaryIO, where: str) -> Iterator[Iterable[str]]:
    """The lines of decoded_lines, a list per chunk (a generator where one needs naming)."""
    first = stream.read(max(CHUNK_BYTES, len(_UTF8_BOM)))
    if first.startswith(_UTF16_BOMS):
        raise InputError(
            f"{where}:1: not valid UTF-8 (it starts with a UTF-16 byte order mark;"
            " save it as UTF-8)"
        )
    reads = iter(functools.partial(stream.read, CHUNK_BYTES), b"")
    done = 0  # lines before the current chunk
    carry = b""  # the start of a line the last chunk cut
    for raw in itertools.chain([first.removeprefix(_UTF8_BOM)], reads):
        data = carry + raw
        del raw
        cut = data.rfind(b"\n") + 1  # after the last whole line
        if not cut and len(data) <= MAX_LINE_BYTES:  # a line longer than a chunk: read on
            carry = data
            continue
        body, carry = (data, b"") if not cut else (data[:cut], data[cut:])
        del data
        yield _lines(body, done, where)
        done += body.count(b"\n") + (not cut)
    if carry:  # the last line, without a newline
        yield _lines(carry, done, where)


def _lines(body: bytes, done: int, where: str) -> Iterable[str]:
    """A chunk's lines, each with its newline: split in C when none needs naming (a NUL, a
    bad byte, too long), else one at a time, raising at the first that does."""
    if 0 in body or len(body) > MAX_LINE_BYTES:  # an int finds the byte faster than b"\0"
        return (_line(raw, number, where) for number, raw in _numbered(body, done + 1))
    try:
        lines = body.decode().replace("\n", "\n\0").split("\0")  # no NUL is in the text
    except UnicodeDecodeError:
        return (_line(raw, number, where) for number, raw in _numbered(body, done + 1))
    if not lines[-1]:  # after the last newline
        lines.pop()
    return lines


def _numbered(body: bytes, first: int) -> Iterator[tuple[int, bytes]]:
    """The chunk's lines (each with its newline) and their numbers, one at a time."""
    start = 0
    while start < len(body):
        end = body.find(b"\n", start) + 1 or len(body)
        yield first, body[start:end]
        first, start = first + 1, end


def _line(raw: bytes, number: int, where: str) -> str:
    """One line as text, or the error that names it: too long, a NUL, not UTF-8."""
    if len(raw) > MAX_LINE_BYTES:
        raise InputError(
            f"{where}:{number}: line is longer than {MAX_LINE_BYTES:,} bytes; is this a CSV file?"
        )
    if 0 in raw:
        raise InputError(f"{where}:{number}: contains a NUL byte; is this a binary file?")
    try:
        return raw.decode()
    except UnicodeDecodeError as error:
        column = len(raw[: error.start].decode()) + 1  # in characters, as an editor counts
        raise InputError(
            f"{where}:{number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {column})"
        ) from None


def reader(lines: Iterable[str], delimiter: str) -> CsvReader:
    """A strict csv reader over decoded lines (which raised its field bound)."""
    return csv.reader(lines, delimiter=delimiter, strict=True)


def rows_ahead(
    lines: Iterable[str], delimiter: str, where: str, *, until: int
) -> tuple[list[tuple[list[str], int]], InputError | None]:
    """The rows that start in the first `until` lines, each with the line it starts on, and
    the error that ended them early, if any (kept: the rows before it are read first)."""
    rows = reader(lines, delimiter)
    found: list[tuple[list[str], int]] = []
    last = 0
    try:
        while last < until:
            found.append((next(rows), last + 1))
            last = rows.line_num
    except StopIteration:
        pass
    except InputError as error:
        return found, error
    except csv.Error as error:
        return found, csv_problem(where, error, start=last + 1, end=rows.line_num)
    return found, None


def csv_problem(where: str, error: csv.Error, *, start: int, end: int) -> InputError:
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


def too_long(where: str, identifier: str, *, line: int) -> InputError:
    """The error for an identifier over MAX_IDENTIFIER_LENGTH: measured, never echoed."""
    hint = "; is a quote left open?" if "\n" in identifier else ""
    return InputError(
        f"{where}:{line}: identifier is {len(identifier)} characters long,"
        f" more than {MAX_IDENTIFIER_LENGTH}{hint}"
    )


def example(value: str) -> str:
    """A value as shown in a message: quoted, escaped, clipped (escapes count too)."""
    shown = value[:EXAMPLE_CHARS]
    while len(repr(shown)) > EXAMPLE_CHARS + 2:
        shown = shown[:-1]
    return repr(shown) + ("..." if len(shown) < len(value) else "")
