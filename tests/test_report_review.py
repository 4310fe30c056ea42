"""The HTML report's photo review (issue 20): each heatmap over its own photo."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchmap import report_review
from batchmap.fakeserver import heatmap_png
from batchmap.originals import Originals
from batchmap.report_html import write_html
from tests.photos import make_photo, sharp_ids
from tests.test_report_html import chromium, facts_for, needs_chromium, parse, row

VERDICTS = ["artificial", "human", "artificial", "human", "artificial", "human"]


def photo_rows(root: Path, count: int = 6) -> list[dict[str, Any]]:
    """Done rows with real heatmaps under root/heatmaps and photos under root/photos."""
    rows = []
    for n, identifier in enumerate(sharp_ids("review", count)):
        heat = root / "heatmaps" / identifier[:2] / f"{identifier}.png"
        heat.parent.mkdir(parents=True, exist_ok=True)
        heat.write_bytes(heatmap_png(identifier))
        name = f"Photo {n:03}.jpg"
        size = [(900, 600), (600, 800), (800, 800)][n % 3]
        make_photo(root / "photos" / name, identifier, size)
        rows.append(
            row(
                identifier,
                path=str(heat),
                verdict=VERDICTS[n % len(VERDICTS)],
                confidence=round(0.55 + 0.07 * n, 2),
                user_columns={"Name": name},
            )
        )
    return rows


def page_for(rows: list[dict[str, Any]], root: Path, **kwargs: Any) -> str:
    handle = io.StringIO()
    where = Originals(root / "photos", "Name")
    write_html(
        iter(rows), handle, facts=facts_for(rows), report_dir=root, originals=where, **kwargs
    )
    return handle.getvalue()


def test_the_page_opens_with_each_photo_under_its_heatmap(tmp_path: Path) -> None:
    rows = photo_rows(tmp_path, 3)
    rows.append(row("gone", "failed", http_status=404, error="404", user_columns={"Name": "x"}))

    doc = parse(page_for(rows, tmp_path))

    main = doc.find_all("main")[0]
    assert main.children[0].attrs["id"] == "review"  # the first thing under the header
    cards = doc.by_id("rv-grid").find_all("figure")
    assert len(cards) == 3
    for card, source in zip(cards, rows, strict=False):
        photo, heat = card.find_all("img")
        name = source["user_columns"]["Name"]
        assert photo.attrs["src"] == "photos/" + name.replace(" ", "%20")  # linked, relative
        assert (
            heat.attrs["src"] == f"heatmaps/{source['identifier'][:2]}/{source['identifier']}.png"
        )
        assert card.attrs["data-verdict"] == source["verdict"]
        assert float(card.attrs["data-confidence"]) == source["confidence"]
        caption = card.find_all("figcaption")[0].text
        assert name in caption and source["verdict"] in caption and "%" in caption
    assert "data:" not in page_for(rows, tmp_path)  # nothing embedded


def test_a_million_rows_page_stays_capped_and_says_how_to_see_the_rest(tmp_path: Path) -> None:
    few = photo_rows(tmp_path, 2)
    many = (dict(few[i % 2], identifier=f"copy-{i}") for i in range(report_review.MAX_REVIEW + 50))

    page = page_for(list(many), tmp_path)

    doc = parse(page)
    assert len(doc.by_id("rv-grid").find_all("figure")) == report_review.MAX_REVIEW
    note = doc.by_id("review").find_all("p")[0].text
    assert f"the first {report_review.MAX_REVIEW:,} of {report_review.MAX_REVIEW + 50:,}" in note
    assert "batchmap export overlays --out overlays/" in note


def test_missing_photos_are_counted_and_named_not_fatal(tmp_path: Path) -> None:
    rows = photo_rows(tmp_path, 3)
    (tmp_path / "photos" / "Photo 001.jpg").unlink()

    doc = parse(page_for(rows, tmp_path))

    assert len(doc.by_id("rv-grid").find_all("figure")) == 2
    note = doc.by_id("review").find_all("p")[0].text
    assert "1 photos missing or unreadable" in note and "Photo 001.jpg" in note


def test_without_photos_the_page_has_no_review(tmp_path: Path) -> None:
    rows = photo_rows(tmp_path, 1)
    handle = io.StringIO()
    write_html(iter(rows), handle, facts=facts_for(rows), report_dir=tmp_path)
    assert 'id="review"' not in handle.getvalue()


# -- in a real browser -------------------------------------------------------------------------

PROBE = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var grid = document.getElementById("rv-grid"), section = document.getElementById("review");
  var first = grid.children[0], photo = first.querySelector(".rv-photo"),
      heat = first.querySelector(".rv-heat");
  var a = photo.getBoundingClientRect(), b = heat.getBoundingClientRect();
  var out = {photo: [a.left, a.top, a.width, a.height], heat: [b.left, b.top, b.width, b.height],
             opacity: getComputedStyle(heat).opacity};
  function key(k) { document.dispatchEvent(new KeyboardEvent("keydown", {key: k, bubbles: true})); }
  key("j"); key("j"); out.focused = document.activeElement.dataset.order;
  key("k"); out.back = document.activeElement.dataset.order;
  key("+"); out.stronger = getComputedStyle(heat).opacity;
  key("o"); out.hidden = getComputedStyle(heat).display;
  key("o"); key("s"); out.side = section.classList.contains("rv-side");
  var c = heat.getBoundingClientRect(); out.sideBySide = c.left >= a.left + a.width / 2;
  key("s");
  var sort = document.getElementById("rv-sort"); sort.value = "conf-desc";
  sort.dispatchEvent(new Event("change"));
  out.descending = Array.prototype.map.call(grid.children, function (x) {
    return x.dataset.order; });
  document.querySelector('button[data-rv-verdict="human"]').click();
  out.humans = grid.querySelectorAll("figure:not([hidden])").length;
  document.body.dataset.probe = JSON.stringify(out);
}, 50); });
</script></body>"""


def screenshot(page: Path, shot: Path, *, window: str, dark: bool, profile: Path) -> None:
    chromium(
        f"--window-size={window}", f"--blink-settings=preferredColorScheme={0 if dark else 1}",
        "--virtual-time-budget=3000", f"--screenshot={shot}", page.as_uri(),
        profile=profile,
    )  # fmt: skip


@needs_chromium
def test_the_overlay_lies_on_its_photo_and_the_keys_work_in_chromium(tmp_path: Path) -> None:
    rows = photo_rows(tmp_path, 6)
    page = tmp_path / "report.html"
    page.write_text(page_for(rows, tmp_path).replace("</body>", PROBE))

    dom = chromium(
        "--virtual-time-budget=5000", "--dump-dom", page.as_uri(), profile=tmp_path / "p"
    ).stdout

    marker = 'data-probe="'
    start = dom.index(marker) + len(marker)
    probe = json.loads(dom[start : dom.index('"', start)].replace("&quot;", '"'))
    assert probe["photo"] == probe["heat"]  # the heatmap covers exactly its photo
    assert probe["photo"][2] >= 300  # a size a person can judge, not a 64 px thumbnail
    assert float(probe["opacity"]) == pytest.approx(0.5)
    assert float(probe["stronger"]) == pytest.approx(0.6)
    assert (probe["focused"], probe["back"]) == ("1", "0")
    assert probe["hidden"] == "none" and probe["side"] and probe["sideBySide"]
    assert probe["descending"] == ["5", "4", "3", "2", "1", "0"]
    assert probe["humans"] == 3


@needs_chromium
@pytest.mark.parametrize(
    ("name", "window", "dark"),
    [("wide", "1280,1000", False), ("phone", "420,900", False), ("dark", "1280,1000", True)],
)
def test_the_review_page_renders_at_two_sizes_and_in_dark(
    tmp_path: Path, name: str, window: str, dark: bool
) -> None:
    rows = photo_rows(tmp_path, 6)
    page = tmp_path / "report.html"
    # The review alone in the window: headless Chromium does not scroll to a #fragment.
    alone = "<body><style>header { display: none; }</style>"
    page.write_text(page_for(rows, tmp_path).replace("<body>", alone))
    shot = tmp_path / f"review-{name}.png"

    screenshot(page, shot, window=window, dark=dark, profile=tmp_path / "profile")

    with Image.open(shot) as picture:
        corner = picture.convert("RGB").getpixel((2, 2))
        assert isinstance(corner, tuple)
        assert (sum(corner) < 150) if dark else (sum(corner) > 600), corner
    kept = Path("/tmp/batchmap-review-shots")
    if kept.is_dir():  # for a person to look at: mkdir it before the run
        shutil.copy(shot, kept / shot.name)
