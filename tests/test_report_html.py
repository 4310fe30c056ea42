"""The HTML report: a self-contained page, escaped, linked relative to the report, capped."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from batchmap import report_html
from batchmap.html_parts import image_src
from batchmap.models import Written
from batchmap.report_html import write_html
from batchmap.timeline import History, iso

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


def render(rows: list[dict[str, Any]], report_dir: Path, **kwargs: Any) -> tuple[str, Written]:
    """The page for `rows` (streamed from an iterator) and write_html's return value."""
    handle = io.StringIO()
    facts = kwargs.pop("facts", None) or facts_for(rows)
    written = write_html(iter(rows), handle, facts=facts, report_dir=report_dir, **kwargs)
    return handle.getvalue(), written


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

    assert (count.rows, count.rendered, count.thumbnails, count.failures) == (6, 4, 3, 1)
    assert [img.attrs["alt"] for img in doc.find_all("img")] == ["id-0", "id-1", "id-2"]
    assert (
        "showing the first 3 of 5 heatmaps; see batchmap report --format csv"
        in doc.by_id("heatmaps").text
    )
    (shows,) = doc.find_all("p", cls="shows")
    assert "accounts for all 6 rows" in shows.text
    assert "3 of 5 heatmaps" in shows.text and "all 1 failed rows" in shows.text
    assert "Every row: batchmap report --format csv." in shows.text


def test_uncapped_grid_has_no_cap_message(tmp_path: Path) -> None:
    page, _ = render([done_row(tmp_path, f"id-{i}") for i in range(3)], tmp_path)

    assert len(parse(page).find_all("img")) == 3
    assert "showing the first" not in page
    assert "Every row:" not in page


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

    assert count.rows == 10
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

    assert count.rows == 1
    assert "accounts for 1 of the job's 3 rows (filtered by state)" in parse(page).text
    assert "no heatmaps in this report" in page


def test_empty_stream_still_renders_a_page(tmp_path: Path) -> None:
    page, count = render([], tmp_path)

    assert count == Written(0, 0)
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


# -- the run's story, verdicts, failure groups ------------------------------------------------

NOW = 1_795_000_020.0  # 2026-11-18T11:07:00Z
EVIL_REASON = "<b>server said</b> & wait"


def story(now: float = NOW) -> History:
    """Two runs over the last three hours: a stop between them, an outage, a long pause."""
    start = now - 3 * 3600  # run 2 is going: its last minute ends now
    runs = [
        {"run_id": 1, "started_at": iso(start), "ended_at": iso(start + 3600), "exit_code": 130},
        {"run_id": 2, "started_at": iso(start + 5400), "ended_at": None, "exit_code": None},
    ]
    minutes: list[dict[str, Any]] = []
    for m in [*range(60), *range(90, 180)]:
        outage, paused = 120 <= m < 130, 150 <= m < 155
        minutes.append(
            {
                "run_id": 1 if m < 60 else 2,
                "minute": iso(start + m * 60),
                "requests": 0 if outage else 60,
                "ok": 0 if outage else 58,
                "rate_limited": 0 if outage else 2,
                "server_error": 5 if outage else 0,
                "finished": 0 if outage or paused else 58,
                "paused_seconds": 50.0 if paused else 0.0,
                "outage_seconds": 60.0 if outage else 0.0,
                "pause_reasons": {EVIL_REASON: 50.0}
                if paused
                else {"outage: 5xx": 60.0}
                if outage
                else {},
                "limits": [[60, 60.0]],
            }
        )
    return History(runs=runs, minutes=minutes, verdicts={})


def test_the_story_is_drawn_as_inline_svg_with_stalls_explained(tmp_path: Path) -> None:
    rows = [row("p", "pending")]

    page, _ = render(rows, tmp_path, history=story(), now=NOW)
    doc = parse(page)

    section = doc.by_id("story")
    progress, hourly, per_minute = section.find_all("svg")
    assert "rows finished so far over the whole job" in progress.attrs["aria-label"]
    assert progress.find_all("polyline", cls="cum") and progress.find_all("line", cls="total")
    # Three hours: 5-minute bars over the whole job, then the last run minute by minute.
    assert "per 5 minutes over the whole job" in hourly.attrs["aria-label"]
    assert "per minute in run 2" in per_minute.attrs["aria-label"]
    bars = per_minute.find_all("rect", cls="fin")
    assert len(bars) == 75  # 90 minutes of run 2 less 10 of outage and 5 paused
    assert "58 finished, 60 requests, 2 answered 429" in bars[0].find_all("title")[0].text
    (outage,) = per_minute.find_all("rect", cls="outage")
    assert "outage" in outage.text and "(10m)" in outage.text
    (pause,) = per_minute.find_all("rect", cls="pause")
    assert EVIL_REASON in pause.text  # as text: the <b> became no element
    assert not doc.find_all("b")
    (idle,) = hourly.find_all("rect", cls="idle")
    assert "not running" in idle.text and "run 1 was interrupted" in idle.text
    assert hourly.find_all("line", cls="ceil")  # the learned limit as a dashed line
    assert "3.3%280 of 8,400 requests" in section.text  # the share of 429s
    assert "estimated finish" in section.text and "1 row left" in section.text


def test_runs_are_listed_with_start_end_duration_and_exit_code(tmp_path: Path) -> None:
    doc = parse(render([row("p", "pending")], tmp_path, history=story(), now=NOW)[0])

    (body,) = doc.by_id("runs").find_all("tbody")
    newest, oldest = [[td.text for td in tr.find_all("td")] for tr in body.find_all("tr")]
    assert newest[0] == "2" and newest[2] == "\N{EN DASH}"
    assert "still running, or killed" in newest[5]
    assert oldest[0] == "1" and oldest[3] == "1h00m" and oldest[4] == "130"
    assert oldest[5] == "was interrupted"


def test_a_job_without_history_says_so(tmp_path: Path) -> None:
    doc = parse(render([row("p", "pending")], tmp_path)[0])

    assert "no run history" in doc.by_id("story").text
    assert not doc.find_all("svg")


def test_thumbnails_show_verdict_confidence_and_name_and_filter_by_verdict(tmp_path: Path) -> None:
    rows = [
        {
            **done_row(tmp_path, "a"),
            "verdict": "artificial",
            "confidence": 0.97,
            "image_name": EVIL,
        },
        {**done_row(tmp_path, "b"), "verdict": "human", "confidence": 88.0, "image_name": None},
        {**done_row(tmp_path, "c"), "verdict": "artificial", "confidence": None},
        done_row(tmp_path, "d"),
    ]

    page, _ = render(rows, tmp_path)
    doc = parse(page)

    tiles = doc.find_all("figure", cls="tile")
    assert [t.attrs["data-verdict"] for t in tiles] == ["artificial", "human", "artificial", "none"]
    captions = [[span.text for span in t.find_all("span")] for t in tiles]
    assert captions == [
        ["a", EVIL, "artificial 97%"],
        ["b", "human 88%"],
        ["c", "artificial"],
        ["d"],
    ]
    assert EVIL not in page
    buttons = [(b.attrs["data-verdict"], b.text) for b in doc.find_all("button")]
    assert buttons == [
        ("", "all (4)"),
        ("artificial", "artificial (2)"),
        ("human", "human (1)"),
        ("none", "no verdict (1)"),
    ]
    assert all(b.attrs["data-for"] == "tiles" for b in doc.find_all("button"))


def test_a_job_without_verdicts_has_no_verdict_buttons(tmp_path: Path) -> None:
    doc = parse(render([done_row(tmp_path, "a"), done_row(tmp_path, "b")], tmp_path)[0])

    assert not doc.find_all("button")


@pytest.mark.parametrize(
    ("failed", "group", "advice"),
    [
        (dict(http_status=404, error="HTTP 404: unknown", retryable=0), "not_found", "--column"),
        (dict(http_status=410, error="HTTP 410", retryable=0), "client_error", "server's message"),
        (dict(http_status=503, error="HTTP 503", retryable=1), "server", "--retry-failed"),
        (dict(error="timed out after 30s", retryable=1), "network", "--timeout"),
        (dict(http_status=200, error="200 but a truncated PNG", retryable=1), "bad_body", "resume"),
        (dict(error="body larger than 10 MB refused", retryable=1), "too_large", "resume"),
        (
            dict(http_status=302, error="redirect to another origin refused (https://x)"),
            "redirect",
            "--base-url",
        ),
    ],
)
def test_each_failure_group_says_what_it_means_and_what_to_do(
    tmp_path: Path, failed: dict[str, Any], group: str, advice: str
) -> None:
    doc = parse(render([row("x", "failed", **failed)], tmp_path)[0])

    (box,) = doc.by_id("failures").find_all("div", cls="group")
    assert box.attrs["data-group"] == group
    assert box.text.startswith("1 ")
    assert advice in box.text
    assert report_html.FAILURE_GROUPS[group].meaning in box.text


def test_css_and_js_are_package_data_inlined_in_the_page(tmp_path: Path) -> None:
    assets = resources.files("batchmap").joinpath("assets")
    css = assets.joinpath("report.css").read_text(encoding="utf-8")
    js = assets.joinpath("report.js").read_text(encoding="utf-8")

    doc = parse(render([row("p", "pending")], tmp_path)[0])

    assert [s.text for s in doc.find_all("style")] == [css]
    assert [s.text for s in doc.find_all("script")] == [js]
    assert "prefers-color-scheme: dark" in css
    assert not hasattr(report_html, "_CSS")  # no second copy in Python strings


# -- in a real browser -------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


def first_pixel(png: bytes) -> tuple[int, int, int]:
    """The top-left pixel of an 8-bit RGB(A) PNG (enough of a decoder for a screenshot)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    _, _, depth, colour = struct.unpack(">IIBB", png[16:26])
    assert depth == 8 and colour in (2, 6)
    data, offset = b"", 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        if png[offset + 4 : offset + 8] == b"IDAT":
            data += png[offset + 8 : offset + 8 + length]
        offset += 12 + length
    raw = zlib.decompress(data)
    # Every filter predicts the first pixel of the first row from zeros: its bytes are as is.
    return raw[1], raw[2], raw[3]


def sample_page(tmp_path: Path) -> Path:
    rows = [
        {**done_row(tmp_path / "out", f"id-{i}"), "verdict": verdict, "confidence": 0.9}
        for i, verdict in enumerate(["artificial", "human", "artificial", "human", "human"])
    ] + [
        row("gone", "failed", http_status=404, error="HTTP 404: unknown", retryable=0),
        row("flaky", "failed", http_status=503, attempts=5, error="HTTP 503", retryable=1),
        row("later", "pending", attempts=0),
    ]
    page = tmp_path / "report.html"
    page.write_text(render(rows, tmp_path, history=story(), now=NOW)[0], encoding="utf-8")
    return page


@needs_chromium
@pytest.mark.parametrize(("scheme", "dark"), [("light", False), ("dark", True)])
def test_the_report_renders_in_chromium_in_both_colour_schemes(
    tmp_path: Path, scheme: str, dark: bool
) -> None:
    page = sample_page(tmp_path)
    shot = tmp_path / f"report-{scheme}.png"

    chromium(
        "--window-size=1200,1600",
        f"--blink-settings=preferredColorScheme={0 if dark else 1}",
        f"--screenshot={shot}",
        page.as_uri(),
        profile=tmp_path / "profile",
    )

    pixel = first_pixel(shot.read_bytes())
    assert (sum(pixel) < 150) if dark else (sum(pixel) > 600), pixel


@needs_chromium
def test_the_verdict_filter_hides_other_tiles_in_chromium(tmp_path: Path) -> None:
    page = sample_page(tmp_path)
    # Click "human" once the page's own script has wired the buttons, then note what shows.
    probe = (
        "<script>document.addEventListener('DOMContentLoaded', function () {"
        "setTimeout(function () {"
        "document.querySelector('button[data-verdict=\"human\"]').click();"
        "var shown = document.querySelectorAll('#tiles > figure:not([hidden])');"
        "document.body.dataset.visible = shown.length;"
        "document.body.dataset.label = document.getElementById('tiles-shown').textContent;"
        "}, 0); });</script>"
    )
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", probe + "</body>"))

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout

    assert 'data-visible="3"' in dom
    assert 'data-label="3 of 5 match"' in dom


def test_runs_without_a_timeline_still_make_a_page(tmp_path: Path) -> None:
    runs = [{"run_id": 1, "started_at": iso(NOW - 600), "ended_at": iso(NOW - 60), "exit_code": 0}]

    doc = parse(render([row("p", "pending")], tmp_path, history=History(runs, []), now=NOW)[0])

    assert not doc.find_all("svg")
    assert "no timeline yet" in doc.by_id("story").text
    assert "finished every row" in doc.by_id("runs").text
