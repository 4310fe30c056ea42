"""The README's Guarantees table names only tests that exist, so a rename cannot orphan a claim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cited_tests() -> list[tuple[str, str]]:
    """(file, test) for every test the Guarantees table names; a bare name is in the last file."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    cited: list[tuple[str, str]] = []
    for row in table.splitlines():
        current = None
        for token in re.findall(r"`([^`]+)`", row):
            path, _, name = token.partition("::")
            if path.startswith("tests/"):
                current = path
                if name:
                    cited.append((path, name))
            elif token.startswith("test_") and current is not None:
                cited.append((current, token))
    return cited


def test_every_test_the_readme_cites_exists() -> None:
    cited = cited_tests()
    assert len(cited) > 40
    missing = [
        f"{path}::{name}"
        for path, name in cited
        if f"def {name}(" not in (ROOT / path).read_text(encoding="utf-8")
    ]
    assert missing == []
