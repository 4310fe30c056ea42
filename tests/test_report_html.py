"""The HTML report: a self-contained page, escaped, linked relative to the report, capped."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from batchmap import report_html
from batchmap.report_html import image_src, write_html

STAMP = "2024-05-01T12:00:00.000Z"
EVIL = "<script>alert(1)</script>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


# -- helpers ----------------------------------------------------------------------------------


def png_bytes() -> bytes:
    """A valid 1x1 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(b"\x00\x80")),
            chunk(b"IEND", b""),
        )
    )


def row(identifier: str, state: str = "done", **changes: Any) -> dict[str, Any]:
    """A job-table row as `Store.rows` yields it."""
    done = state == "done"
    base: dict[str, Any] = {
        "identifier": identifier,
        "state": state,
        "http_status": 200 if done else None,
        "attempts": 1,
        "path": None,
        "bytes": None,
        "sha256": None,
        "error": None,
        "retryable": None,
        "created_at": STAMP,
        "updated_at": STAMP,
        "finished_at": STAMP,
    }
    base.update(changes)
    return base


def done_row(out: Path, identifier: str, name: str | None = None) -> dict[str, Any]:
    """A `done` row whose PNG really exists under `out`."""
    path = out / "ab" / (name or f"{identifier}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = png_bytes()
    path.write_bytes(data)
    return row(identifier, path=str(path), bytes=len(data), sha256="0" * 64)


def facts_for(rows: list[dict[str, Any]], *, database: str = "/data/jobs.db") -> dict[str, Any]:
    """What `status_facts` would say about exactly these rows."""
    counts = Counter(str(r["state"]) for r in rows)
    return {
        "database": database,
        "total": len(rows),
        "counts": {s: counts[s] for s in ("pending", "running", "done", "no_heatmap", "failed")},
        "http_status": {"200": counts["done"]},
        "top_errors": [],
        "last_activity": STAMP,
        "pause": None,
        "learned_limits": [{"limit": 60, "window_seconds": 60.0}],
        "out": "/data/heatmaps",
    }


def render(rows: list[dict[str, Any]], report_dir: Path, **kwargs: Any) -> tuple[str, int]:
    """The page for `rows` (streamed from an iterator) and write_html's return value."""
    handle = io.StringIO()
    facts = kwargs.pop("facts", None) or facts_for(rows)
    count = write_html(iter(rows), handle, facts=facts, report_dir=report_dir)
    return handle.getvalue(), count


@dataclass
class Element:
    """A parsed HTML element: enough of a DOM to query the report's structure."""

    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str, *, cls: str | None = None) -> list[Element]:
        return [e for e in self.walk() if e.tag == tag and (cls is None or cls in e.classes)]

    def by_id(self, ident: str) -> Element:
        (found,) = [e for e in self.walk() if e.attrs.get("id") == ident]
        return found


class TreeBuilder(HTMLParser):
    """Builds Elements; text is added to every open element, as textContent would read it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element.parts.append(data)


def parse(page: str) -> Element:
    """The element tree of `page`; every element must be closed properly."""
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root


def failure_cells(doc: Element) -> list[list[str]]:
    return [[td.text for td in tr.find_all("td")] for tr in doc.by_id("failed-rows").find_all("tr")]


# -- tests ------------------------------------------------------------------------------------


def test_thumbnail_src_is_relative_to_the_report_and_url_quoted(tmp_path: Path) -> None:
    out, report_dir = tmp_path / "heatmaps", tmp_path / "reports"
    report_dir.mkdir()
    rows = [done_row(out, "plain"), done_row(out, "odd name", name="odd name #1 100%~x.png")]

    doc = parse(render(rows, report_dir)[0])

    images = doc.find_all("img")
    assert [img.attrs["src"] for img in images] == [
        "../heatmaps/ab/plain.png",
        "../heatmaps/ab/odd%20name%20%231%20100%25~x.png",
    ]
    for img, r in zip(images, rows, strict=True):
        assert img.attrs["loading"] == "lazy"
        assert (report_dir / unquote(img.attrs["src"])).resolve() == Path(r["path"]).resolve()
    tiles = doc.find_all("figure", cls="tile")
    assert [tile.find_all("figcaption")[0].text for tile in tiles] == ["plain", "odd name"]
    assert [tile.attrs["title"] for tile in tiles] == ["plain", "odd name"]


def test_image_src_falls_back_to_a_file_uri_without_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_relpath(path: str, start: Any = None) -> str:
        raise ValueError("path is on mount 'D:', start on mount 'C:'")

    monkeypatch.setattr(os.path, "relpath", no_relpath)
    path = tmp_path / "a b.png"

    assert image_src(str(path), tmp_path / "reports") == path.as_uri()
    assert image_src(str(path), tmp_path / "reports").startswith("file://")


def test_identifiers_and_errors_are_escaped_not_markup(tmp_path: Path) -> None:
    rows = [
        done_row(tmp_path, EVIL, name="evil.png"),
        row(EVIL, "failed", http_status=404, error='<img src=x onerror="alert(2)"> & more'),
    ]

    page, _ = render(rows, tmp_path, facts=facts_for(rows, database="/x/<jobs> &.db"))
    doc = parse(page)

    assert EVIL not in page and "<img src=x" not in page and "<jobs>" not in page
    assert all("alert" not in script.text for script in doc.find_all("script"))
    assert len(doc.find_all("img")) == 1  # the thumbnail; the error's <img> stayed text
    (tile,) = doc.find_all("figure", cls="tile")
    assert tile.attrs["title"] == EVIL
    assert tile.find_all("figcaption")[0].text == EVIL
    assert failure_cells(doc) == [[EVIL, "404", "1", "", '<img src=x onerror="alert(2)"> & more']]
    assert "<jobs> &.db" in doc.find_all("h1")[0].text


def test_failures_table_lists_every_failed_row_with_its_error(tmp_path: Path) -> None:
    rows = [
        row("gone-1", "failed", http_status=404, error="404 Not Found: unknown image", retryable=0),
        row("ok", "no_heatmap", http_status=204),
        row("flaky", "failed", http_status=503, attempts=5, error="503 after 5", retryable=1),
        row("waiting", "pending", attempts=0),
    ]
    facts = facts_for(rows)
    facts["top_errors"] = [{"error": "404 Not Found: unknown image", "count": 1}]

    doc = parse(render(rows, tmp_path, facts=facts)[0])

    assert failure_cells(doc) == [
        ["gone-1", "404", "1", "no", "404 Not Found: unknown image"],
        ["flaky", "503", "5", "yes", "503 after 5"],
    ]
    (box,) = [i for i in doc.find_all("input") if i.attrs.get("data-filter") == "failed-rows"]
    assert box.attrs["type"] == "search"
    assert "404 Not Found: unknown image" in doc.by_id("failures").find_all("ul")[0].text


def test_thumbnail_grid_is_capped_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_html, "MAX_THUMBNAILS", 3)
    rows = [done_row(tmp_path, f"id-{i}") for i in range(5)] + [row("bad", "failed", error="x")]

    page, count = render(rows, tmp_path)
    doc = parse(page)

    assert count == 6
    assert [img.attrs["alt"] for img in doc.find_all("img")] == ["id-0", "id-1", "id-2"]
    assert "showing the first 3 of 5 heatmaps" in doc.by_id("heatmaps").text


def test_uncapped_grid_has_no_cap_message(tmp_path: Path) -> None:
    page, _ = render([done_row(tmp_path, f"id-{i}") for i in range(3)], tmp_path)

    assert len(parse(page).find_all("img")) == 3
    assert "showing the first" not in page


def test_failures_table_is_capped_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_html, "MAX_FAILURES", 2)
    rows = [row(f"f-{i}", "failed", http_status=404, error=f"e{i}") for i in range(4)]

    doc = parse(render(rows, tmp_path)[0])

    assert [cells[0] for cells in failure_cells(doc)] == ["f-0", "f-1"]
    assert "showing the first 2 of 4 failed rows" in doc.by_id("failures").text


def test_page_is_self_contained(tmp_path: Path) -> None:
    rows = [done_row(tmp_path, "a"), row("b", "failed", error="boom"), row("c", "no_heatmap")]

    page, _ = render(rows, tmp_path)
    doc = parse(page)

    assert "http://" not in page and "https://" not in page
    assert not doc.find_all("link")
    for element in doc.walk():
        for name in ("src", "href"):
            value = element.attrs.get(name, "")
            assert not value.startswith(("//", "http:", "https:")), (element.tag, value)
    assert all(not s.attrs.get("src") for s in doc.find_all("script"))
    styles = "".join(style.text for style in doc.find_all("style"))
    assert "@import" not in styles and "url(" not in styles


def test_counts_per_state_are_shown(tmp_path: Path) -> None:
    rows = (
        [done_row(tmp_path, f"d-{i}") for i in range(3)]
        + [row(f"n-{i}", "no_heatmap", http_status=204) for i in range(2)]
        + [row("f", "failed", http_status=404, error="404")]
        + [row(f"p-{i}", "pending") for i in range(4)]
    )

    page, count = render(rows, tmp_path)
    doc = parse(page)

    assert count == 10
    shown = {
        next(c for c in card.classes if c.startswith("state-")): card.find_all("div", cls="n")[
            0
        ].text
        for card in doc.find_all("div", cls="card")
    }
    assert shown == {
        "state-done": "3",
        "state-no_heatmap": "2",
        "state-failed": "1",
        "state-pending": "4",
        "state-running": "0",
    }
    assert "2 identifiers have no heatmap" in doc.by_id("no-heatmap").text
    assert "jobs.db" in doc.find_all("title")[0].text


def test_filtered_report_says_how_many_rows_it_lists(tmp_path: Path) -> None:
    everything = [done_row(tmp_path, "a"), row("b", "failed", error="x"), row("c", "pending")]
    only_failed = [r for r in everything if r["state"] == "failed"]

    page, count = render(only_failed, tmp_path, facts=facts_for(everything))

    assert count == 1
    assert "lists 1 of the 3 rows" in parse(page).text
    assert "no heatmaps in this report" in page


def test_empty_stream_still_renders_a_page(tmp_path: Path) -> None:
    page, count = render([], tmp_path)

    assert count == 0
    assert parse(page).find_all("h1")


def test_memory_stays_bounded_however_many_rows_stream_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_html, "MAX_THUMBNAILS", 10)
    monkeypatch.setattr(report_html, "MAX_FAILURES", 10)
    path = str(tmp_path / "x.png")

    def rows(n: int) -> Iterator[dict[str, Any]]:
        for i in range(n):
            if i % 2:
                yield row(f"id-{i:08d}", path=path)
            else:
                yield row(f"id-{i:08d}", "failed", http_status=503, error="x" * 200)

    def peak(n: int) -> int:
        tracemalloc.start()
        try:
            write_html(rows(n), io.StringIO(), facts=facts_for([]), report_dir=tmp_path)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(2_000), peak(40_000)
    assert large < small + 256 * 1024, (small, large)
