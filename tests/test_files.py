"""Identifier -> file name safety, and atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchmap.files import (
    PARTIAL_DIR,
    Layout,
    file_name,
    heatmap_path,
    looks_like_heatmap,
    publish,
    remove_partials,
    stage,
)

identifiers = st.text(min_size=1, max_size=1024).filter(lambda s: "\x00" not in s)


@given(identifiers, st.sampled_from(list(Layout)))
def test_a_path_never_leaves_out(identifier: str, layout: Layout) -> None:
    out = Path("/data/out")
    path = heatmap_path(out, identifier, layout=layout)
    assert os.path.normpath(path).startswith(str(out) + os.sep)
    assert path.parent in (out, out / path.parent.name)
    assert path.name not in (".", "..") and "/" not in path.name and "\\" not in path.name


@given(identifiers)
def test_a_name_is_deterministic_and_fits_file_system_limits(identifier: str) -> None:
    name = file_name(identifier)
    assert name == file_name(identifier)
    assert len(name.encode()) <= 255
    assert name.endswith(".png") and not name.startswith(".")


@given(identifiers, identifiers)
def test_distinct_identifiers_get_distinct_names_even_ignoring_case(a: str, b: str) -> None:
    if a != b:
        assert file_name(a).lower() != file_name(b).lower()


def test_hex_identifiers_keep_their_own_name() -> None:
    ident = hashlib.sha256(b"x").hexdigest()
    assert file_name(ident) == ident + ".png"
    assert heatmap_path(Path("o"), ident, layout=Layout.FLAT) == Path("o") / (ident + ".png")


@pytest.mark.parametrize("identifier", ["..", ".", "ABC", "con", "a/b", "../../etc/passwd", "é"])
def test_awkward_identifiers_are_hashed(identifier: str) -> None:
    assert "~" in file_name(identifier)


def test_a_staged_file_appears_under_its_name_only_when_published(tmp_path: Path) -> None:
    path = heatmap_path(tmp_path, "abc", layout=Layout.SHARDED)
    saved = stage(path, b"payload", out=tmp_path)
    assert not path.exists()  # a crash now leaves only a partial file, cleaned on restart
    assert saved.bytes == 7 and saved.sha256 == hashlib.sha256(b"payload").hexdigest()
    publish([path], out=tmp_path)
    assert path.read_bytes() == b"payload"
    assert saved.path == str(path)
    assert list((tmp_path / PARTIAL_DIR).iterdir()) == []


def test_remove_partials_cleans_what_a_crash_left(tmp_path: Path) -> None:
    (tmp_path / PARTIAL_DIR).mkdir()
    (tmp_path / PARTIAL_DIR / "x.png.123").write_bytes(b"half")
    assert remove_partials(tmp_path) == 1
    assert not (tmp_path / PARTIAL_DIR).exists()
    assert remove_partials(tmp_path) == 0


@given(identifiers, st.sampled_from(list(Layout)))
def test_every_heatmap_path_looks_like_a_heatmap_of_its_layout(
    identifier: str, layout: Layout
) -> None:
    out = Path("/data/out")
    relative = heatmap_path(out, identifier, layout=layout).relative_to(out)
    assert looks_like_heatmap(relative, layout=layout)
    other = Layout.FLAT if layout is Layout.SHARDED else Layout.SHARDED
    assert not looks_like_heatmap(relative, layout=other)


@pytest.mark.parametrize(
    "relative",
    [
        "README.txt",
        "notes.png",
        "00/abc.png",  # our name, but not the shard sha256("abc") gives
        "ff/abc~" + "0" * 32 + ".png",  # hashed name whose digest disagrees with its shard
        "ba/x/abc.png",
        ".partial/abc.png.123",
        "ba/ABC.png",
        "ba/.hidden~" + "b" * 32 + ".png",
        "jobs.db",
    ],
)
def test_files_of_other_shapes_are_not_heatmaps(relative: str) -> None:
    assert not looks_like_heatmap(PurePath(relative), layout=Layout.SHARDED)
