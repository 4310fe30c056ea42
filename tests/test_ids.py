"""IdSource: identifiers streamed out of a CSV, and a one-line error for every bad input."""

from __future__ import annotations

import csv
import io
import random
import re
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchmap import ids
from batchmap.errors import InputError
from batchmap.ids import MAX_IDENTIFIER_LENGTH, IdSource


def write(tmp_path: Path, data: bytes | str, *, name: str = "ids.csv") -> Path:
    """A CSV file holding exactly `data` (str is encoded as UTF-8, newlines untouched)."""
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def read(path: Path, *, column: str | None = None) -> list[str]:
    return list(IdSource(path, column=column))


def error_of(path: Path, *, column: str | None = None) -> str:
    """The message of the InputError that reading `path` raises; it must be one short line."""
    with pytest.raises(InputError) as caught:
        read(path, column=column)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert len(message) < 300 + len(str(path))
    assert message.startswith(f"{path}:")
    return message


# --- finding the identifiers ---------------------------------------------------------------


def test_without_a_header_name_the_first_column_is_read_from_the_first_row(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "abc,1\ndef,2\n")
    assert read(path) == ["abc", "def"]


@pytest.mark.parametrize(
    "name", ["identifier", "identifiers", "id", "image_id", "image_identifier", " Image_ID "]
)
def test_a_header_naming_the_identifier_column_is_recognised(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"label,{name},size\nx,abc,1\ny,def,2\n")
    assert read(path) == ["abc", "def"]


def test_a_specific_header_name_wins_over_a_bare_id(tmp_path: Path) -> None:
    path = write(tmp_path, "id,image_id\n1,abc\n2,def\n")
    assert read(path) == ["abc", "def"]


def test_column_option_takes_the_first_row_as_header(tmp_path: Path) -> None:
    path = write(tmp_path, "name,hash\nabc,h1\ndef,h2\n")
    assert read(path, column="hash") == ["h1", "h2"]
    assert read(path, column=" hash ") == ["h1", "h2"]


def test_column_option_matches_case_insensitively_when_nothing_matches_exactly(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "Name, Hash \nabc,h1\n")
    assert read(path, column="HASH") == ["h1"]


def test_an_exact_column_match_wins_over_a_case_insensitive_one(tmp_path: Path) -> None:
    path = write(tmp_path, "ID,id\nupper,lower\n")
    assert read(path, column="id") == ["lower"]
    assert read(path, column="Id") == ["upper"]


def test_identifiers_are_trimmed_and_blank_rows_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "identifier,other\n  abc \t,1\n\n   \n,2\ndef\n\u00a0ghi\u00a0,3\n")
    source = IdSource(path)
    assert list(source) == ["abc", "def", "ghi"]
    assert (source.rows, source.blank) == (6, 3)


def test_rows_shorter_than_the_column_count_as_blank(tmp_path: Path) -> None:
    path = write(tmp_path, "name,identifier\nx,abc\ny\nz,def\n")
    source = IdSource(path)
    assert list(source) == ["abc", "def"]
    assert (source.rows, source.blank) == (3, 1)


def test_duplicates_are_kept_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "b\na\nb\n")
    assert read(path) == ["b", "a", "b"]


def test_blank_lines_before_a_header_are_not_data_rows(tmp_path: Path) -> None:
    source = IdSource(write(tmp_path, "\n \nidentifier\nabc\n"))
    assert list(source) == ["abc"]
    assert (source.rows, source.blank) == (1, 0)


def test_blank_lines_before_headerless_data_are_counted(tmp_path: Path) -> None:
    source = IdSource(write(tmp_path, "\n\nabc\n"))
    assert list(source) == ["abc"]
    assert (source.rows, source.blank) == (3, 2)


def test_counts_are_updated_while_iterating_a_batch_of_rows_at_a_time(tmp_path: Path) -> None:
    batch = ids._BATCH
    source = IdSource(write(tmp_path, "id\na\n\n" + "b\n" * (batch + 10)))
    identifiers = iter(source)
    assert next(identifiers) == "a"
    assert (source.rows, source.blank) == (batch, 1)  # the first batch's rows, counted whole
    assert sum(1 for _ in identifiers) == batch + 10
    assert (source.rows, source.blank) == (batch + 12, 1)


def test_a_utf8_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    assert read(write(tmp_path, "\ufeffidentifier\nabc\n")) == ["abc"]
    assert read(write(tmp_path, "\ufeffabc\ndef\n")) == ["abc", "def"]


def test_crlf_and_lf_and_a_missing_last_newline_all_work(tmp_path: Path) -> None:
    path = write(tmp_path, "id\r\nabc\r\ndef\nghi")
    assert read(path) == ["abc", "def", "ghi"]


def test_quoted_fields_keep_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    path = write(tmp_path, 'id,x\n"a,b",1\n"say ""hi""",2\n"two\r\nlines","3\n4"\nlast,5\n')
    assert read(path) == ["a,b", 'say "hi"', "two\r\nlines", "last"]


def test_unicode_line_separators_stay_inside_an_identifier(tmp_path: Path) -> None:
    path = write(tmp_path, "a\u2028b\nc\x85d\x0ce\n")
    assert read(path) == ["a\u2028b", "c\x85d\x0ce"]


def test_long_lines_in_other_columns_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "id,notes\nabc," + "x" * 200_000 + "\n")
    assert read(path) == ["abc"]


def test_an_identifier_of_the_maximum_length_is_accepted(tmp_path: Path) -> None:
    identifier = "x" * MAX_IDENTIFIER_LENGTH
    assert read(write(tmp_path, f"id\n{identifier}\n")) == [identifier]


def test_iterating_twice_reads_the_file_again(tmp_path: Path) -> None:
    source = IdSource(write(tmp_path, "id\na\n\n"))
    assert list(source) == list(source) == ["a"]
    assert (source.rows, source.blank) == (2, 1)


# --- bad input: one line naming the file (and the line) -------------------------------------


def test_a_missing_file_fails_on_the_first_next(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    identifiers = iter(IdSource(path))
    with pytest.raises(InputError) as caught:
        next(identifiers)
    assert str(caught.value) == f"{path}: no such file"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"{tmp_path}: is a directory, not a CSV file"


def test_an_unopenable_path_is_one_line(tmp_path: Path) -> None:
    inside_a_file = write(tmp_path, "abc\n") / "child.csv"
    assert error_of(inside_a_file) == f"{inside_a_file}: cannot read (Not a directory)"


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n\r\n", b"  \n\t\n", b"\xef\xbb\xbf", b",,\n"])
def test_an_empty_file_is_refused(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)
    assert error_of(path) == f"{path}: empty file, no identifiers"


@pytest.mark.parametrize(
    ("data", "column"),
    [("identifier\n", None), ("identifier\r\n\r\n  \n", None), ("a,b\n", "b"), ("id", None)],
)
def test_a_header_without_identifiers_is_refused(
    tmp_path: Path, data: str, column: str | None
) -> None:
    path = write(tmp_path, data)
    assert error_of(path, column=column) == f"{path}: no identifiers (header only)"


def test_a_column_empty_in_every_row_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name,id\nx,\ny, \n")
    assert error_of(path) == f"{path}: no identifiers (column 'id' is empty in every row)"
    headerless = write(tmp_path, ",x\n,y\n", name="headerless.csv")
    assert error_of(headerless) == f"{headerless}: no identifiers (column 1 is empty in every row)"


def test_a_wrong_column_lists_the_columns_on_the_header_line(tmp_path: Path) -> None:
    path = write(tmp_path, "\n\n a ,b,c\n1,2,3\n")
    assert error_of(path, column="hash") == (
        f"{path}:3: no column 'hash' in the header (columns: a, b, c)"
    )


def test_a_wrong_column_message_clips_a_huge_header(tmp_path: Path) -> None:
    names = [f"col{n}" for n in range(100)] + ["x" * 5000, "line\nbreak"]
    buffer = io.StringIO()
    csv.writer(buffer).writerow(names)
    path = write(tmp_path, buffer.getvalue())
    message = error_of(path, column="hash")
    assert message.startswith(f"{path}:1: no column 'hash' in the header (columns: col0, col1,")
    assert message.endswith("col19, ... 82 more)")


def test_a_non_utf8_byte_names_its_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, b"id\nabc\nd\xe9f\n")
    assert error_of(path) == f"{path}:3: not valid UTF-8 (byte 0xe9 at column 2)"


def test_the_column_of_a_bad_byte_counts_characters(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffé€x".encode() + b"\xff\n")
    assert error_of(path) == f"{path}:1: not valid UTF-8 (byte 0xff at column 4)"


def test_identifiers_before_a_bad_line_are_yielded_first(tmp_path: Path) -> None:
    path = write(tmp_path, b"abc\ndef\n\x80\n")
    identifiers = iter(IdSource(path))
    assert [next(identifiers), next(identifiers)] == ["abc", "def"]
    with pytest.raises(InputError, match=r":3: not valid UTF-8 \(byte 0x80 at column 1\)$"):
        next(identifiers)


def test_a_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    path = write(tmp_path, "identifier\nabc\n".encode("utf-16"))
    assert error_of(path) == (
        f"{path}:1: not valid UTF-8 (it starts with a UTF-16 byte order mark; save it as UTF-8)"
    )


def test_a_nul_byte_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"id\nabc\r\nd\x00f\r\n")
    assert error_of(path) == f"{path}:3: contains a NUL byte; is this a binary file?"


def test_a_nul_byte_inside_a_quoted_field_names_its_physical_line(tmp_path: Path) -> None:
    path = write(tmp_path, b'id\n"abc\ndef\x00"\n')
    assert error_of(path) == f"{path}:3: contains a NUL byte; is this a binary file?"


def _png() -> bytes:
    """A valid 1x1 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_a_png_is_refused_on_its_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, _png(), name="heatmap.png")
    assert error_of(path) == f"{path}:1: not valid UTF-8 (byte 0x89 at column 1)"


def test_random_bytes_are_refused_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, random.Random(7).randbytes(100_000), name="noise.bin")
    assert error_of(path).startswith(f"{path}:1: ")


def test_an_identifier_too_long_names_its_line(tmp_path: Path) -> None:
    n = MAX_IDENTIFIER_LENGTH + 1
    path = write(tmp_path, "id\nok\n" + "x" * n + "\n")
    assert error_of(path) == (
        f"{path}:3: identifier is {n} characters long, more than {MAX_IDENTIFIER_LENGTH}"
    )


def test_a_very_long_identifier_is_measured_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "id\n" + "y" * 3_000_000 + "\n")
    assert error_of(path) == (
        f"{path}:2: identifier is 3000000 characters long, more than {MAX_IDENTIFIER_LENGTH}"
    )


def test_an_unclosed_quote_points_at_where_the_row_starts(tmp_path: Path) -> None:
    path = write(tmp_path, 'id\nabc\n"def\nghi\njkl\n')
    assert error_of(path) == (
        f"{path}:3: the file ends inside a quoted field"
        " (in the row on lines 3-5; is a quote left open?)"
    )


def test_an_unclosed_quote_swallowing_a_long_identifier_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, 'id\n"abc\n' + "0123456789abcdef\n" * 100 + '",x\n')
    assert error_of(path) == (
        f"{path}:2: identifier is 1703 characters long, more than {MAX_IDENTIFIER_LENGTH};"
        " is a quote left open?"
    )


def test_text_after_a_closing_quote_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'id\n"abc"def\n')
    assert error_of(path) == f"{path}:2: ',' expected after '\"'"


def test_a_bare_carriage_return_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "id\rabc\rdef\r")
    assert error_of(path) == (
        f"{path}:1: carriage return inside an unquoted field; save the file with LF or CRLF endings"
    )


def test_a_line_over_the_limit_is_refused_without_reading_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ids.read, "MAX_LINE_BYTES", 1000)
    path = write(tmp_path, "id\nabc\n" + "z" * 5000)
    assert error_of(path) == f"{path}:3: line is longer than 1,000 bytes; is this a CSV file?"


def test_a_field_over_the_limit_names_the_row_it_started_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ids.read, "MAX_FIELD_CHARS", 100)
    previous = csv.field_size_limit(100)
    try:
        path = write(tmp_path, 'id\n"abc\n' + "0123456789\n" * 20)
        message = error_of(path)
    finally:
        csv.field_size_limit(previous)
    assert message.startswith(f"{path}:2: a field is longer than 100 characters (in the row on")
    assert message.endswith("is a quote left open?)")


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    def peak(lines: int) -> int:
        path = write(tmp_path, "".join(f"{n:064x}\n" for n in range(lines)), name=f"{lines}.csv")
        tracemalloc.start()
        try:
            for _ in IdSource(path):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(40_000) < peak(10_000) + 64 * 1024  # past one batch of rows and one chunk


# --- properties --------------------------------------------------------------------------

identifier_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=40,
).filter(lambda text: text.strip() != "")


def _csv_bytes(rows: list[list[str]], *, crlf: bool, bom: bool) -> bytes:
    """Rows as csv.writer writes them; under LF, quote everything if a lone \\r needs it."""
    buffer = io.StringIO(newline="")
    # Python 3.11's writer leaves a lone "\r" unquoted when the line terminator is "\n".
    needs_quotes = not crlf and any("\r" in cell for row in rows for cell in row)
    writer = csv.writer(
        buffer,
        lineterminator="\r\n" if crlf else "\n",
        quoting=csv.QUOTE_ALL if needs_quotes else csv.QUOTE_MINIMAL,
    )
    writer.writerows(rows)
    return ("\ufeff" if bom else "").encode() + buffer.getvalue().encode()


def _from_bytes(tmp_path: Path, data: bytes, *, column: str | None = None) -> IdSource:
    return IdSource(write(tmp_path, data), column=column)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(identifiers=st.lists(identifier_text, min_size=1), crlf=st.booleans(), bom=st.booleans())
def test_identifiers_round_trip_through_csv_writer(
    tmp_path: Path, identifiers: list[str], crlf: bool, bom: bool
) -> None:
    data = _csv_bytes([["identifier"]] + [[i] for i in identifiers], crlf=crlf, bom=bom)
    source = _from_bytes(tmp_path, data)
    assert list(source) == [i.strip() for i in identifiers]
    assert (source.rows, source.blank) == (len(identifiers), 0)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cells=st.lists(st.one_of(identifier_text, st.sampled_from(["", " ", "\t"])), min_size=1),
    others=st.lists(
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=5),
        min_size=1,
        max_size=3,
    ),
    crlf=st.booleans(),
)
def test_the_named_column_is_read_and_blanks_counted(
    tmp_path: Path, cells: list[str], others: list[str], crlf: bool
) -> None:
    filler = [others[n % len(others)] for n in range(len(cells))]
    rows = [["before", "Hash", "after"]] + [[o, c, o] for o, c in zip(filler, cells, strict=True)]
    expected = [c.strip() for c in cells if c.strip()]
    source = _from_bytes(tmp_path, _csv_bytes(rows, crlf=crlf, bom=False), column="hash")
    if expected:
        assert list(source) == expected
        assert (source.rows, source.blank) == (len(cells), len(cells) - len(expected))
    else:
        with pytest.raises(InputError):
            list(source)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300))
def test_any_bytes_give_identifiers_or_a_one_line_input_error(tmp_path: Path, data: bytes) -> None:
    try:
        found = list(_from_bytes(tmp_path, data))
    except InputError as error:
        assert "\n" not in str(error) and "\r" not in str(error)
        assert str(error).startswith(str(tmp_path))
        return
    assert found and all(identifier == identifier.strip() != "" for identifier in found)


# --- past the look-ahead: every row is read as csv reads it, and errors still name the line ---

_GOOD = "".join(f"{n:064x}\n" for n in range(300))  # 300 lines: past the look-ahead


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"d\xe9f\n", "302: not valid UTF-8 (byte 0xe9 at column 2)"),
        (b"d\x00f\n", "302: contains a NUL byte; is this a binary file?"),
        (b"abc\rdef\n", "302: carriage return inside an unquoted field; save the file with"),
        (b'"abc\n', "302: the file ends inside a quoted field (in the row on lines 302-303;"),
        (b"y" * 2000 + b"\n", f"302: identifier is 2000 characters long, more than {1024}"),
    ],
)
def test_bad_input_far_into_the_file_names_its_line(
    tmp_path: Path, bad: bytes, message: str
) -> None:
    path = write(tmp_path, b"id\n" + _GOOD.encode() + bad + b"ok\n")
    identifiers = iter(IdSource(path))
    assert sum(1 for _, _ in zip(range(300), identifiers, strict=False)) == 300
    with pytest.raises(InputError) as caught:
        next(identifiers)
    assert str(caught.value).startswith(f"{path}:{message}")


def test_a_long_line_far_into_the_file_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ids.read, "MAX_LINE_BYTES", 1000)
    path = write(tmp_path, "id\n" + _GOOD + "z" * 5000 + "\n")
    assert error_of(path) == f"{path}:302: line is longer than 1,000 bytes; is this a CSV file?"


def _rows_as_csv_reads_them(data: bytes, *, index: int) -> tuple[list[str], int, int]:
    """The reference: identifiers, rows and blank rows by the csv module alone."""
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    cells = [row[index].strip() if index < len(row) else "" for row in rows]
    return [cell for cell in cells if cell], len(cells), cells.count("")


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.one_of(
            st.lists(st.text('ab, \t"\n\u2028é', max_size=4), min_size=0, max_size=3),
            st.lists(st.text("ab,\r", max_size=3), min_size=0, max_size=2),
            st.lists(identifier_text, min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=60,
    ),
    crlf=st.booleans(),
    index=st.sampled_from([0, 1]),
)
def test_rows_past_the_look_ahead_read_as_csv_does(
    tmp_path: Path, rows: list[list[str]], crlf: bool, index: int
) -> None:
    header = ["identifier", "other"] if index == 0 else ["other", "identifier"]
    data = _csv_bytes([header, *rows], crlf=crlf, bom=False)
    expected, count, blank = _rows_as_csv_reads_them(data, index=index)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ids, "LOOKAHEAD_ROWS", 2)
        source = _from_bytes(tmp_path, data)
        if not expected:
            with pytest.raises(InputError):
                list(source)
            return
        assert list(source) == expected
    assert (source.rows, source.blank) == (count, blank)


def test_a_quoted_row_across_the_end_of_the_look_ahead_is_read_once_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ids, "LOOKAHEAD_ROWS", 2)
    source = IdSource(write(tmp_path, 'id,note\na,x\nb,"one\ntwo\nthree"\nc,y\n'))
    items = list(source.with_columns())
    assert items == [
        ("a", '{"note":"x"}'),
        ("b", '{"note":"one\\ntwo\\nthree"}'),
        ("c", '{"note":"y"}'),
    ]
    assert (source.rows, source.blank) == (3, 0)
    broken = write(tmp_path, 'id,note\na,x\nb,"one\ntwo\n', name="broken.csv")
    assert error_of(broken) == (
        f"{broken}:3: the file ends inside a quoted field"
        " (in the row on lines 3-4; is a quote left open?)"
    )


# --- chunks and batches: whole-chunk and whole-batch work names the same lines ---------------


def _lines_one_by_one(data: bytes, *, limit: int) -> tuple[list[str], str | None]:
    """The reference: each line read with readline and checked on its own, as batchmap read
    files before chunks: the lines before the first bad one, and its message."""
    lines: list[str] = []
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return lines, "f:1: not valid UTF-8 (it starts with a UTF-16 byte order mark"
    stream = io.BytesIO(data.removeprefix(b"\xef\xbb\xbf"))
    for number, raw in enumerate(iter(lambda: stream.readline(limit + 1), b""), 1):
        if len(raw) > limit:
            return lines, f"f:{number}: line is longer than {limit:,} bytes"
        if 0 in raw:
            return lines, f"f:{number}: contains a NUL byte"
        try:
            lines.append(raw.decode())
        except UnicodeDecodeError as error:
            return lines, f"f:{number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column"
    return lines, None


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(
            [b"a", b"bc", b"\n", b"\r\n", b"\r", b"\x00", b"\xc3\xa9", b"\xe9", b"\xef\xbb\xbf"]
        ),
        max_size=40,
    ),
    start=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe"]),
    chunk=st.integers(1, 9),
    limit=st.integers(1, 12),
)
def test_lines_read_in_chunks_are_the_lines_read_one_by_one(
    pieces: list[bytes], start: bytes, chunk: int, limit: int
) -> None:
    data = start + b"".join(pieces)
    expected, message = _lines_one_by_one(data, limit=limit)
    got: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ids.read, "CHUNK_BYTES", chunk)
        patch.setattr(ids.read, "MAX_LINE_BYTES", limit)
        try:
            got.extend(ids.read.decoded_lines(io.BytesIO(data), "f"))
        except InputError as error:
            assert message is not None and str(error).startswith(message)
        else:
            assert message is None
    assert got == expected


def _starts_row_by_row(data: bytes) -> list[int]:
    """The reference: the line each data row starts on, from csv's own line count."""
    rows = csv.reader(io.StringIO(data.decode(), newline=""))
    starts: list[int] = []
    last = 0
    for _ in rows:
        starts.append(last + 1)
        last = rows.line_num
    return starts[1:]  # after the header


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from(["abc", "x.png", "  ", "a\nb", "id"]), st.text("n\n", max_size=3)
            ),
            st.tuples(st.just("z" * 30), st.just("")),
        ),
        min_size=1,
        max_size=40,
    ),
    crlf=st.booleans(),
    batch=st.integers(1, 5),
)
def test_warnings_and_errors_name_the_line_a_row_starts_on_across_batches(
    tmp_path: Path, rows: list[tuple[str, str]], crlf: bool, batch: int
) -> None:
    data = _csv_bytes([["identifier", "note"], *map(list, rows)], crlf=crlf, bom=False)
    starts = _starts_row_by_row(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ids, "_BATCH", batch)
        patch.setattr(ids, "MAX_IDENTIFIER_LENGTH", 20)  # "z" * 30 is too long
        source = _from_bytes(tmp_path, data)
        cells = [cell.strip() for cell, _ in rows]
        if "z" * 30 in cells:
            bad = starts[cells.index("z" * 30)]
            with pytest.raises(InputError, match=rf":{bad}: identifier is 30 characters long"):
                list(source.with_columns())
            return
        if not any(cells):
            return  # refused: no identifiers
        list(source.with_columns())
    paths = [starts[n] for n, cell in enumerate(cells) if cell == "x.png"]
    warning = next((w for w in source.warnings if "like a path" in w), None)
    if not paths:
        assert warning is None
        return
    assert warning is not None
    shown = [int(line) for line in re.findall(r"(\d+) 'x\.png'", warning)]
    assert shown == paths[:5]
