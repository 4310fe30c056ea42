"""What every section shares: results kept for the summary and --json, printing, test data."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCALE_IDS = 1_000_000
DUPLICATE_EVERY = 100  # one duplicate line per this many identifiers: ~1 %
BLANK_LINES = 5
INFO = "info"  # the `op` of a figure shown beside a target but not checked against one


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Target:
    """One figure checked against the issue's target (or, with op INFO, only shown)."""

    section: str
    figure: str
    value: float | None
    op: str  # ">=" or "<=" or "==" or INFO
    goal: float | None
    shown: str  # the value as printed
    goal_shown: str

    @property
    def verdict(self) -> str:
        """PASS, MISS, n/a when the figure could not be measured, or info."""
        if self.op == INFO:
            return INFO
        if self.value is None or self.goal is None:
            return "n/a"
        passed = {
            ">=": self.value >= self.goal,
            "<=": self.value <= self.goal,
            "==": self.value == self.goal,
        }[self.op]
        return "PASS" if passed else "MISS"


@dataclass
class Report:
    """Everything printed, also kept as data for --json."""

    targets: list[Target] = field(default_factory=list)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def figure(self, section: str, name: str, value: Any) -> None:
        """Keep one raw figure for the JSON output."""
        self.figures.setdefault(section, {})[name] = value

    def check(
        self,
        section: str,
        figure: str,
        value: float | None,
        op: str,
        goal: float,
        fmt: Callable[[float], str],
    ) -> str:
        """Record a target and return its printed tail: 'target >= 0.98  PASS'."""
        shown = "n/a" if value is None else fmt(value)
        target = Target(section, figure, value, op, goal, shown, fmt(goal))
        self.targets.append(target)
        return f"target {op} {target.goal_shown:<7} {target.verdict}"

    def info(
        self, section: str, figure: str, value: float | None, fmt: Callable[[float], str]
    ) -> None:
        """Put a figure in the summary without a target (a whole-run figure beside a steady one)."""
        shown = "n/a" if value is None else fmt(value)
        self.targets.append(Target(section, figure, value, INFO, None, shown, ""))


def say(text: str = "") -> None:
    """Print one line at once, so progress shows while a long section runs."""
    print(text, flush=True)


def line(label: str, value: str, tail: str = "") -> None:
    """One figure line: label, value, and optionally the target verdict."""
    say(f"  {label:<30} {value:<36} {tail}".rstrip())


def ratio(value: float) -> str:
    """A ratio with three decimals."""
    return f"{value:.3f}"


def percent(value: float) -> str:
    """A share as a percentage."""
    return f"{100 * value:.2f}%"


def seconds(value: float) -> str:
    """A duration in seconds."""
    return f"{value:.2f} s"


def megabytes(value: float | None) -> str:
    """A size in MB."""
    return "n/a" if value is None else f"{value:.0f} MB"


def count(value: float) -> str:
    """A whole number."""
    return f"{value:.0f}"


# --------------------------------------------------------------------------- test data


def hex_id(section: str, i: int) -> str:
    """The i-th benchmark identifier of a section: 64 hex digits."""
    return hashlib.sha256(f"bench-{section}-{i}".encode()).hexdigest()


def write_ids_csv(path: Path, section: str, n: int) -> list[str]:
    """A CSV with header `identifier` and n identifiers; returns them."""
    ids = [hex_id(section, i) for i in range(n)]
    path.write_text("identifier\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return ids


def write_scale_csv(path: Path) -> int:
    """SCALE_IDS unique identifiers, ~1 % duplicate lines and a few blank lines; line count."""
    blanks = {SCALE_IDS * (k + 1) // (BLANK_LINES + 1) for k in range(BLANK_LINES)}
    lines = 1
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("identifier\n")
        chunk: list[str] = []
        for i in range(SCALE_IDS):
            chunk.append(hex_id("scale", i))
            if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
                chunk.append(hex_id("scale", i - DUPLICATE_EVERY // 2))
            if i in blanks:
                chunk.append("")
            if len(chunk) >= 50_000:
                handle.write("\n".join(chunk) + "\n")
                lines += len(chunk)
                chunk = []
        handle.write("\n".join(chunk) + "\n")
        lines += len(chunk)
    return lines


class SharedData:
    """Files more than one section uses, made once per bench run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._scale_csv: Path | None = None

    def scale_csv(self) -> Path:
        """The 1M-identifier CSV (generated on first use)."""
        if self._scale_csv is None:
            path = self.root / "ids-1m.csv"
            started = time.perf_counter()
            lines = write_scale_csv(path)
            size = path.stat().st_size / 1e6
            took = time.perf_counter() - started
            say(
                f"  (generated {path.name}: {lines:,} lines, {SCALE_IDS:,} unique ids, "
                f"{size:.0f} MB, in {took:.1f} s)"
            )
            self._scale_csv = path
        return self._scale_csv
