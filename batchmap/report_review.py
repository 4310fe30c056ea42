"""The HTML report's photo review: each heatmap laid over its own photo, a card a row.

Rows arrive once, in load order; at most MAX_REVIEW cards are kept (each references two
files, the photo and the heatmap, relative to the page: nothing is embedded or copied).
Photos are looked for (a stat) only until the cap is reached, so a million-row report
costs no million stats. The controls (opacity, side by side, sort, filters, keys) are
batchmap/assets/review.js; the look is review.css.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from batchmap import originals as photos
from batchmap.html_parts import asset, confidence_text, image_src
from batchmap.models import JobState

MAX_REVIEW = 500
OVERLAYS = "batchmap export overlays --out overlays/"
KEYS = "keys: j / → next, k / ← previous, o overlay on/off, s side by side, + / - opacity"


class Review:
    """Collects the review cards of a report, bounded; `section()` renders them."""

    def __init__(self, where: photos.Originals | None, report_dir: Path) -> None:
        self.where = where
        self.report_dir = report_dir
        self.cards: list[str] = []
        self.verdicts: Counter[str] = Counter()
        self.done = 0  # done rows (each may have a photo)
        self.missing = 0  # ... whose photo was looked for and not found
        self.examples: list[str] = []

    def add(self, row: dict[str, Any]) -> None:
        """Account for one row; keep its card while under the cap."""
        if self.where is None or row["state"] != JobState.DONE or not row.get("path"):
            return
        self.done += 1
        if len(self.cards) >= MAX_REVIEW:
            return
        identifier = str(row["identifier"])
        photo = self.where.path(identifier, row.get("user_columns"))
        if photo is None or not photos.readable(photo):
            self.missing += 1
            if len(self.examples) < photos.MAX_EXAMPLES:
                self.examples.append(str(photo) if photo is not None else identifier)
            return
        verdict = str(row.get("verdict") or "") or "none"
        self.verdicts[verdict] += 1
        self.cards.append(self._card(row, photo, verdict, order=len(self.cards)))

    def _card(self, row: dict[str, Any], photo: Path, verdict: str, *, order: int) -> str:
        identifier = str(row["identifier"])
        kept = row.get("user_columns") or {}
        name = (
            (kept.get(self.where.column) if self.where and self.where.column else None)
            or next(iter(kept.values()), None)
            or str(row.get("image_name") or "")
            or photo.name
        )
        confidence = row.get("confidence")
        number = confidence if isinstance(confidence, int | float) else None
        shown = "" if verdict == "none" else f"{verdict} {confidence_text(confidence)}".strip()
        photo_src = escape(image_src(str(photo), self.report_dir))
        heat_src = escape(image_src(str(row["path"]), self.report_dir))
        label = escape(name)
        return (
            f'<figure class="rv-card" tabindex="0" data-order="{order}" '
            f'data-verdict="{escape(verdict)}" '
            f'data-confidence="{"" if number is None else f"{number:g}"}">'
            f'<div class="rv-stage"><a href="{photo_src}"><img class="rv-photo" loading="lazy" '
            f'src="{photo_src}" alt="{label}"></a>'
            f'<img class="rv-heat" loading="lazy" src="{heat_src}" alt="heatmap of {label}">'
            f"</div><figcaption>"
            f'<span class="rv-name">{label}</span>'
            + (
                f'<span class="rv-verdict v-{escape(verdict)}">{escape(shown)}</span>'
                if shown
                else ""
            )
            + f'<span class="rv-id mono">{escape(identifier)}</span></figcaption></figure>\n'
        )

    def section(self) -> str:
        """The review section; empty when the job knows no photos."""
        if self.where is None:
            return ""
        parts = [
            f'<section id="review">\n<style>{asset("review.css")}</style>\n',
            '<h2>Photos with their heatmaps</h2>\n<div class="panel">\n',
            f'<p class="note">{self._sentence()}</p>\n',
        ]
        if not self.cards:
            parts.append('<p class="empty">no photo to show in this report</p>\n</div>\n')
            return "".join(parts) + "</section>\n"
        parts.append(self._tools())
        parts.append('<div class="rv-grid" id="rv-grid">\n')
        parts.extend(self.cards)
        parts.append("</div>\n</div>\n")
        parts.append(f"<script>{asset('review.js')}</script>\n</section>\n")
        return "".join(parts)

    def _sentence(self) -> str:
        """What the section shows and where the rest is (the page stays small at any size)."""
        where = escape(str(self.where.directory)) if self.where else ""
        text = (
            f"{len(self.cards):,} photos from <code>{where}</code> with their heatmaps over "
            "them (referenced, not copied)"
        )
        if self.done > len(self.cards) + self.missing:
            text += (
                f"; the first {len(self.cards):,} of {self.done:,} done rows are shown. Every "
                f"composite: <code>{OVERLAYS}</code>; every row: "
                "<code>batchmap report --format csv</code>"
            )
        if self.missing:
            listed = ", ".join(escape(example) for example in self.examples)
            more = ", …" if self.missing > len(self.examples) else ""
            text += (
                f". {self.missing:,} photos missing or unreadable: {listed}{more} "
                f"(<code>{OVERLAYS}</code> lists them all)"
            )
        return text + "."

    def _tools(self) -> str:
        buttons = "".join(
            f'<button type="button" data-rv-verdict="{escape(key)}" aria-pressed="false">'
            f"{escape('no verdict' if key == 'none' else key)} ({n:,})</button>"
            for key, n in self.verdicts.most_common()
        )
        return (
            '<div class="tools rv-tools">'
            '<label>heatmap opacity <input type="range" id="rv-alpha" min="0" max="100" '
            'value="50" aria-label="heatmap opacity"></label>'
            '<button type="button" id="rv-overlay" aria-pressed="true">overlay (o)</button>'
            '<button type="button" id="rv-side" aria-pressed="false">side by side (s)</button>'
            '<label>sort <select id="rv-sort" aria-label="sort photos">'
            '<option value="order">load order</option>'
            '<option value="conf-desc">confidence, highest first</option>'
            '<option value="conf-asc">confidence, lowest first</option>'
            '<option value="verdict">verdict</option></select></label>'
            '<label>confidence at least <input type="range" id="rv-min" min="0" max="100" '
            'value="0" aria-label="lowest confidence shown"> <span id="rv-min-text">0%</span>'
            "</label>"
            '<div class="verdicts" role="group" aria-label="photos by verdict">'
            '<button type="button" data-rv-verdict="" aria-pressed="true">all</button>'
            f"{buttons}</div>"
            '<span class="shown" id="rv-shown"></span>'
            f'<p class="rv-keys">{escape(KEYS)}</p></div>\n'
        )
