"""IdSource reads what a file holds, not only what its header says: delimiter, header and
column found by content, and a warning for values that look unlike the rest (never a refusal).
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchmap.ids import MAX_EXAMPLES, IdSource


def hexid(n: int, *, length: int = 64) -> str:
    """A deterministic identifier shaped like identifAI's (64 or 24 lowercase hex)."""
    return hashlib.sha256(str(n).encode()).hexdigest()[:length]


HEX = [hexid(n) for n in range(300)]


def write(tmp_path: Path, text: str, *, name: str = "ids.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def lines(*rows: str) -> str:
    return "".join(f"{row}\n" for row in rows)


def loaded(path: Path, *, column: str | None = None) -> tuple[IdSource, list[str]]:
    """An IdSource read to the end (so its counts, notes and warnings are complete) and
    what it yielded."""
    source = IdSource(path, column=column)
    return source, list(source)


def read(path: Path, *, column: str | None = None) -> list[str]:
    return list(IdSource(path, column=column))


def one_line_each(messages: list[str], path: Path) -> None:
    for message in messages:
        assert message.startswith(f"{path}")
        assert "\n" not in message and "\r" not in message
        assert len(message) < 400 + len(str(path))


# --- the header, by content ---------------------------------------------------------------


@pytest.mark.parametrize("header", ["sha", "ids", "Image ID", "hash", "SHA-256", "image hash"])
def test_a_header_unlike_the_identifiers_below_is_not_loaded(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, lines(header, *HEX[:3]))
    source, identifiers = loaded(path)
    assert identifiers == HEX[:3]
    assert (source.rows, source.blank) == (3, 0)
    assert source.notes == [
        f"{path}:1: took {header!r} as the header: it looks unlike the identifiers below it"
    ]
    one_line_each(source.notes, path)


def test_a_header_over_short_v2_tickets_is_not_loaded(tmp_path: Path) -> None:
    tickets = [hexid(n, length=24) for n in range(5)]
    assert read(write(tmp_path, lines("ticket", *tickets))) == tickets


def test_a_word_over_coded_values_is_a_header(tmp_path: Path) -> None:
    codes = ["a1b2c3d4", "e5f6a7b8", "c9d0e1f2"]
    assert read(write(tmp_path, lines("cafe", *codes))) == codes


def test_a_header_after_blank_lines_is_found_by_content(tmp_path: Path) -> None:
    source, identifiers = loaded(write(tmp_path, lines("", "  ", "sha", HEX[0], "", HEX[1])))
    assert identifiers == HEX[:2]
    assert (source.rows, source.blank) == (3, 1)


@pytest.mark.parametrize(
    "first",
    [
        HEX[0].upper(),  # another case, same alphabet
        HEX[0][:40],  # a truncated identifier: loaded and warned about, not dropped
        "1234567",  # digits over longer digits
        "abc123",  # letters and digits of the same alphabet
    ],
)
def test_a_first_value_of_the_same_alphabet_is_an_identifier(tmp_path: Path, first: str) -> None:
    below = ["12345678", "23456789"] if first.isdigit() else HEX[1:4]
    assert read(write(tmp_path, lines(first, *below))) == [first, *below]


def test_a_file_of_varied_text_has_no_header_guessed(tmp_path: Path) -> None:
    values = ["hello world", "x-1", "Ünïcode", "a b c"]
    source, identifiers = loaded(write(tmp_path, lines(*values)))
    assert identifiers == values
    assert source.notes == []


def test_a_single_row_is_never_a_header(tmp_path: Path) -> None:
    assert read(write(tmp_path, lines("sha"))) == ["sha"]


# --- the column, by content ---------------------------------------------------------------


def test_the_column_whose_values_look_like_identifiers_is_read(tmp_path: Path) -> None:
    rows = [f"img_{n}.jpg,{HEX[n]},{n * 100}" for n in range(4)]
    path = write(tmp_path, lines("name,hash,size", *rows))
    source, identifiers = loaded(path)
    assert identifiers == HEX[:4]
    assert f"{path}: reading column 2 ('hash'): its values look like identifiers" in source.notes
    assert source.warnings == []


def test_a_headerless_file_is_read_from_its_identifier_column(tmp_path: Path) -> None:
    path = write(tmp_path, lines(*(f"{n},{HEX[n]}" for n in range(3))))
    source, identifiers = loaded(path)
    assert identifiers == HEX[:3]
    assert source.notes == [f"{path}: reading column 2: its values look like identifiers"]


def test_two_identifier_like_columns_read_the_first_and_say_so(tmp_path: Path) -> None:
    path = write(tmp_path, lines("ident,sha", *(f"{HEX[n]},{HEX[n + 100]}" for n in range(3))))
    source, identifiers = loaded(path)
    assert identifiers == HEX[:3]
    assert source.notes[0] == (
        f"{path}: columns 1 ('ident'), 2 ('sha') all look like identifiers;"
        " reading column 1 (use --column to choose)"
    )


def test_a_known_header_name_still_wins_and_a_likelier_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, lines("id,image_hash", *(f"{n},{HEX[n]}" for n in range(3))))
    source, identifiers = loaded(path)
    assert identifiers == ["0", "1", "2"]
    assert source.warnings == [
        f"{path}: no identifier looks like identifAI's (64 lowercase hex characters) but column"
        " 2 ('image_hash') does; if requests answer 404, check --column"
    ]


# --- the delimiter ------------------------------------------------------------------------


@pytest.mark.parametrize(("delimiter", "name"), [("\t", "tab"), (";", "semicolon"), ("|", "pipe")])
def test_other_delimiters_are_sniffed(tmp_path: Path, delimiter: str, name: str) -> None:
    rows = [delimiter.join([f"label {n}", HEX[n], "1,5"]) for n in range(3)]
    path = write(tmp_path, lines(delimiter.join(["label", "Image ID", "ratio"]), *rows))
    source, identifiers = loaded(path)
    assert identifiers == HEX[:3]
    assert f"{path}: read as {name}-separated" in source.notes
    assert source.warnings == []


def test_a_tsv_with_a_known_header_name(tmp_path: Path) -> None:
    path = write(tmp_path, lines("name\tidentifier", "a, b\tabc", "c\tdef"))
    assert read(path) == ["abc", "def"]


def test_a_tsv_and_the_column_option(tmp_path: Path) -> None:
    path = write(tmp_path, lines("name\thash", "a\tabc", "b\tdef"))
    assert read(path, column="HASH") == ["abc", "def"]


def test_a_wrong_column_lists_the_columns_of_a_tsv(tmp_path: Path) -> None:
    path = write(tmp_path, lines("name\thash\tsize", "a\tabc\t1"))
    with pytest.raises(
        Exception, match=r":1: no column 'x' in the header \(columns: name, hash, size\)$"
    ):
        read(path, column="x")


def test_a_csv_whose_notes_hold_tabs_and_semicolons_stays_comma_separated(tmp_path: Path) -> None:
    rows = [f'{HEX[n]},"a\tb; c"' for n in range(5)] + [f"{HEX[9]},plain"]
    source, identifiers = loaded(write(tmp_path, lines("identifier,notes", *rows)))
    assert identifiers == [*HEX[:5], HEX[9]]
    assert source.notes == []


def test_a_few_identifiers_holding_a_semicolon_do_not_make_a_delimiter(tmp_path: Path) -> None:
    values = [*HEX[:8], "a;b", "c;d"]
    assert read(write(tmp_path, lines(*values))) == values


# --- warnings: counted, with a few examples and their lines --------------------------------


def test_a_header_repeated_inside_the_file_is_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, lines("identifier", *HEX[:3], "identifier", *HEX[3:5], "Identifier"))
    source, identifiers = loaded(path)
    assert len(identifiers) == 7
    assert source.warnings == [
        f"{path}: 2 of 7 identifiers look like a header (repeated inside the file?):"
        " lines 5 'identifier', 8 'Identifier'; loaded as given"
    ]


def test_paths_urls_and_file_names_are_warned_about(tmp_path: Path) -> None:
    odd = ["images/cat.jpg", "https://example.com/x", "C:\\pics\\y", "photo.PNG"]
    path = write(tmp_path, lines("identifier", *HEX[:20], *odd))
    source, identifiers = loaded(path)
    assert identifiers == [*HEX[:20], *odd]
    assert source.warnings == [
        f"{path}: 4 of 24 identifiers look like a path, URL or file name (wrong column?):"
        r" lines 22 'images/cat.jpg', 23 'https://example.com/x', 24 'C:\\pics\\y',"
        " 25 'photo.PNG'; loaded as given"
    ]


def test_whole_lines_of_another_format_are_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, lines("identifier", *HEX[:20], f"{HEX[20]}\t12\tcat"))
    source, identifiers = loaded(path)
    assert identifiers[-1] == f"{HEX[20]}\t12\tcat"
    assert source.warnings == [
        f"{path}: 1 of 21 identifiers contains ',', ';', '|' or a tab (lines of another"
        f" format?): line 22 '{HEX[20][:32]}'...; loaded as given"
    ]


def test_values_of_another_length_or_alphabet_are_warned_about(tmp_path: Path) -> None:
    odd = ["abc", HEX[50].upper(), "héllo"]
    path = write(tmp_path, lines(*HEX[:3], odd[0], *HEX[3:30], *odd[1:]))
    source, identifiers = loaded(path)
    assert identifiers == [*HEX[:3], odd[0], *HEX[3:30], *odd[1:]]
    assert source.warnings == [
        f"{path}: 3 of 33 identifiers differ from the others' 64 (or 24) lowercase hex"
        f" characters: lines 4 'abc', 32 '{odd[1][:32]}'..., 33 'héllo'; loaded as given"
    ]


def test_other_shapes_than_identifais_are_learnt_from_the_file(tmp_path: Path) -> None:
    numbers = [str(10_000_000 + n) for n in range(40)]
    path = write(tmp_path, lines("image_id", *numbers, "12345", "x1234567"))
    source, _identifiers = loaded(path)
    assert source.warnings == [
        f"{path}: 2 of 42 identifiers differ from the others' 8 digits:"
        " lines 42 '12345', 43 'x1234567'; loaded as given"
    ]


def test_warnings_count_everything_but_show_a_few_examples(tmp_path: Path) -> None:
    odd = [f"img_{n}.jpg" for n in range(1000)]
    path = write(tmp_path, lines("identifier", *HEX[:200], *odd))
    source, _identifiers = loaded(path)
    assert len(source.warnings) == 1
    warning = source.warnings[0]
    assert warning.startswith(f"{path}: 1,000 of 1,200 identifiers look like a path")
    assert warning.count(".jpg'") == MAX_EXAMPLES
    assert "lines 202 'img_0.jpg', 203 'img_1.jpg'," in warning
    assert warning.endswith("206 'img_4.jpg', ...; loaded as given")
    one_line_each(source.warnings, path)


@pytest.mark.parametrize(
    "values",
    [
        HEX[:50],
        [hexid(n, length=24 if n % 3 else 64) for n in range(50)],  # v1 and v2 mixed
        ["hello world", "x-1", "Ünïcode", "a b c"],  # no shape shared: nothing to compare
    ],
)
def test_a_clean_file_has_no_warning(tmp_path: Path, values: list[str]) -> None:
    source, identifiers = loaded(write(tmp_path, lines("identifier", *values)))
    assert identifiers == values
    assert source.warnings == []


def test_warnings_start_empty_on_each_iteration(tmp_path: Path) -> None:
    source = IdSource(write(tmp_path, lines("identifier", *HEX[:20], "a/b")))
    assert source.warnings == source.notes == []
    list(source)
    list(source)
    assert len(source.warnings) == 1


def test_odd_values_do_not_grow_memory(tmp_path: Path) -> None:
    def peak(count: int) -> int:
        text = "".join(f"{HEX[n % 300]}\nodd/{n}\n" for n in range(count // 2))
        path = write(tmp_path, text, name=f"{count}.csv")
        tracemalloc.start()
        try:
            source = IdSource(path)
            for _ in source:
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(40_000) < peak(10_000) + 64 * 1024  # past one batch of rows and one chunk


# --- properties ----------------------------------------------------------------------------

hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
any_value = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=30
).filter(lambda text: text.strip() == text != "")


def _csv_text(rows: list[list[str]], *, delimiter: str) -> str:
    buffer = io.StringIO(newline="")
    # QUOTE_ALL when a lone "\r" needs it: Python 3.11's writer leaves it unquoted.
    lone_cr = any("\r" in cell for row in rows for cell in row)
    writer = csv.writer(
        buffer,
        delimiter=delimiter,
        lineterminator="\n",
        quoting=csv.QUOTE_ALL if lone_cr else csv.QUOTE_MINIMAL,
    )
    writer.writerows(rows)
    return buffer.getvalue()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    identifiers=st.lists(st.one_of(hex64, any_value), min_size=1, max_size=40),
    delimiter=st.sampled_from([",", "\t", ";", "|"]),
)
def test_every_identifier_of_a_well_formed_file_is_yielded_exactly_once(
    tmp_path: Path, identifiers: list[str], delimiter: str
) -> None:
    rows = [["name", "identifier", "size"]] + [
        [f"n{i}", v, str(i)] for i, v in enumerate(identifiers)
    ]
    path = write(tmp_path, _csv_text(rows, delimiter=delimiter))
    assert read(path) == identifiers


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=hex64,
    shaped=st.lists(hex64, min_size=1, max_size=30),
    odd=st.lists(st.tuples(st.integers(min_value=0), any_value), max_size=10),
)
def test_a_values_shape_never_makes_it_disappear(
    tmp_path: Path, first: str, shaped: list[str], odd: list[tuple[int, str]]
) -> None:
    values = [first, *shaped]
    for position, value in odd:
        values.insert(1 + position % len(values), value)
    path = write(tmp_path, _csv_text([[value] for value in values], delimiter=","))
    source = IdSource(path)
    assert list(source) == values
    one_line_each(source.warnings + source.notes, path)


@pytest.mark.parametrize(
    ("delimiter", "other"), [(";", "1,5"), ("\t", "a cat, a dog"), ("|", "x,y")]
)
def test_commas_inside_the_values_of_another_format_do_not_win(
    tmp_path: Path, delimiter: str, other: str
) -> None:
    rows = [delimiter.join([HEX[n], other]) for n in range(150)]  # past the look-ahead
    path = write(tmp_path, lines(*rows))
    source, identifiers = loaded(path)
    assert identifiers == HEX[:150]
    assert source.warnings == []


def test_csv_sniffer_finds_a_delimiter_neither_a_header_nor_the_values_settle(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, lines("name|size", "alpha|1", "beta|2", "gamma|3"))
    source, identifiers = loaded(path)
    assert identifiers == ["alpha", "beta", "gamma"]
    assert f"{path}: read as pipe-separated" in source.notes


def test_a_look_ahead_full_of_quotes_is_sniffed_quickly(tmp_path: Path) -> None:
    rows = [f'n{n},"{"x, " * 3000}"' for n in range(100)]  # csv.Sniffer takes seconds on all
    started = time.perf_counter()
    assert read(write(tmp_path, lines(*rows))) == [f"n{n}" for n in range(100)]
    assert time.perf_counter() - started < 1.0
