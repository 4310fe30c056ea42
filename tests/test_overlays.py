"""`batchmap export overlays` and the originals behind it (issue 20), through the real CLI."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from batchmap.overlays import blend
from tests.conftest import FakeServer, Workspace, cli_env, make_ids
from tests.photos import disc, hot_centroid, make_photo, sharp_ids

SIZES = [(300, 200), (160, 240), (256, 256)]


def photo_job(
    workspace: Workspace, server: FakeServer, ids: list[str], *extra: str
) -> dict[str, str]:
    """Photos (one a size) and an `Identifier;Name` CSV, then `run ids.csv --images photos/`."""
    names = {}
    for n, identifier in enumerate(ids):
        names[identifier] = f"Photo {n:03}.jpg"
        make_photo(workspace.root / "photos" / names[identifier], identifier, SIZES[n % 3])
    lines = ["Identifier;Name", *(f"{i};{name}" for i, name in names.items())]
    (workspace.root / "ids.csv").write_text("\n".join(lines) + "\n")
    ran = workspace.run(workspace.root / "ids.csv", server, "--images", "photos", *extra)
    assert ran.code in (0, 1), ran.output
    return names


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_each_composite_puts_the_heat_over_the_photos_marked_region(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = sharp_ids("over", 3)
    names = photo_job(workspace, shared_fake, ids)
    before = digests(workspace.root / "photos")

    done = workspace.cli("export", "overlays", "--db", workspace.db, "--out", "overlays")

    assert done.code == 0, done.output
    assert "wrote 3 composites" in done.stdout
    for n, identifier in enumerate(ids):
        composite = workspace.root / "overlays" / f"{identifier}.jpg"
        with Image.open(composite) as picture:
            assert picture.size == SIZES[n % 3]  # the 64 px heatmap was stretched to the photo
        x, y, hot = hot_centroid(composite)
        cx, cy, radius = disc(identifier, SIZES[n % 3])
        assert hot > 20, names[identifier]
        assert math.dist((x, y), (cx, cy)) < radius, (names[identifier], (x, y), (cx, cy))
    assert digests(workspace.root / "photos") == before  # originals read, never changed
    assert sorted(p.name for p in (workspace.root / "photos").iterdir()) == sorted(before)


def test_export_is_resumable_idempotent_and_makes_contact_sheets(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("resume-ov", ok=5)
    names = photo_job(workspace, shared_fake, ids)
    args = ("export", "overlays", "--db", workspace.db, "--out", "overlays", "--sheet", "2")

    first = workspace.cli(*args)
    made = digests(workspace.root / "overlays")
    again = workspace.cli(*args)
    (workspace.root / "overlays" / f"{ids[0]}.jpg").unlink()  # as if killed before this one
    resumed = workspace.cli(*args)

    assert first.code == again.code == resumed.code == 0, first.output + again.output
    assert "wrote 5 composites" in first.stdout and "3 contact sheets" in first.stdout
    assert "wrote 0 composites" in again.stdout and "5 already there" in again.stdout
    assert "wrote 1 composites" in resumed.stdout and "4 already there" in resumed.stdout
    assert digests(workspace.root / "overlays") == made
    assert not list((workspace.root / "overlays").glob(".*partial"))
    with Image.open(workspace.root / "overlays" / "sheet-0001.jpg") as sheet:
        assert sheet.width >= 2 * 300
    assert len(names) == 5


def test_missing_and_unreadable_photos_are_counted_and_listed_never_fatal(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("missing-ov", ok=4)
    names = photo_job(workspace, shared_fake, ids)
    (workspace.root / "photos" / names[ids[1]]).unlink()
    (workspace.root / "photos" / names[ids[2]]).write_bytes(b"not a picture at all")

    done = workspace.cli("export", "overlays", "--db", workspace.db, "--out", "overlays")

    assert done.code == 0, done.output
    assert "wrote 2 composites" in done.stdout
    assert "1 photos missing, 1 unreadable" in done.stdout
    listed = (workspace.root / "overlays" / "missing-originals.csv").read_text()
    assert ids[1] in listed and ids[2] in listed and names[ids[1]] in listed
    assert "unreadable" in listed


def test_loading_says_how_many_photos_were_found(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("count-ov", ok=3)
    (workspace.root / "photos").mkdir()
    make_photo(workspace.root / "photos" / "a.png", ids[0])
    lines = ["Identifier;Name", f"{ids[0]};a.png", f"{ids[1]};b.png", f"{ids[2]};"]
    (workspace.root / "ids.csv").write_text("\n".join(lines) + "\n")

    loaded = workspace.cli("load", "ids.csv", "--db", workspace.db, "--images", "photos")

    assert loaded.code == 0, loaded.output
    assert "originals: 1 of 3 found" in loaded.stderr
    assert "2 missing or unreadable" in loaded.stderr and "b.png" in loaded.stderr


def test_an_image_column_of_paths_needs_no_folder(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("path-ov", ok=2)
    for identifier in ids:
        make_photo(workspace.root / "pics" / "sub" / f"{identifier[:6]}.png", identifier)
    lines = ["id,caption,file", *(f"{i},hello,pics/sub/{i[:6]}.png" for i in ids)]
    (workspace.root / "ids.csv").write_text("\n".join(lines) + "\n")

    ran = workspace.run(workspace.root / "ids.csv", shared_fake, "--image-column", "file")
    done = workspace.cli(
        "export", "overlays", "--db", workspace.db, "--out", "o", "--format", "png"
    )

    assert ran.code == 0, ran.output
    assert done.code == 0 and "wrote 2 composites" in done.stdout, done.output
    assert sorted(p.name for p in (workspace.root / "o").iterdir()) == sorted(
        f"{i}.png" for i in ids
    )


def test_a_wrong_image_column_is_one_line_and_loads_nothing(workspace: Workspace) -> None:
    (workspace.root / "ids.csv").write_text("id,name\nx1,a.jpg\n")

    refused = workspace.cli("load", "ids.csv", "--db", workspace.db, "--image-column", "nope")
    no_folder = workspace.cli("load", "ids.csv", "--db", workspace.db, "--images", "nowhere")

    assert refused.code == 2 and no_folder.code == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "--image-column 'nope': no such column (other columns: name)" in refused.stderr
    assert "--images nowhere: no such folder" in no_folder.stderr
    status = workspace.cli("status", "--db", workspace.db, "--json")
    assert json.loads(status.stdout)["total"] == 0


def test_export_without_photos_or_without_pillow_says_what_to_do(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("nopil", ok=1)
    workspace.run(workspace.csv(ids), shared_fake)
    no_photos = workspace.cli("export", "overlays", "--db", workspace.db, "--out", "o")
    blocked = (
        "import sys; sys.modules['PIL'] = None; sys.argv = ['batchmap', *sys.argv[1:]]; "
        "from batchmap.cli import main; main()"
    )
    no_pillow = subprocess.run(
        [sys.executable, "-c", blocked, "export", "overlays", "--db", str(workspace.db),
         "--out", "o"],
        cwd=workspace.root, env=cli_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert no_photos.code == 2 and "the job knows no photos" in no_photos.stderr
    assert "--images DIR" in no_photos.stderr
    assert no_pillow.returncode == 2, no_pillow.stderr
    assert no_pillow.stderr == (
        "batchmap: error: export overlays needs Pillow, an optional extra: "
        "pip install 'batchmap[images]' (or pip install Pillow)\n"
    )


def test_a_heatmap_of_another_size_is_stretched_over_the_whole_photo(tmp_path: Path) -> None:
    photo = tmp_path / "wide.png"
    Image.new("RGB", (400, 100), (0, 0, 0)).save(photo)
    heat = tmp_path / "heat.png"
    left_red = Image.new("RGB", (16, 16), (0, 0, 255))
    left_red.paste((255, 0, 0), (0, 0, 8, 16))  # the left half is hot
    left_red.save(heat)

    composite = blend(Image, photo, heat, max_side=2048, opacity=1.0)

    assert composite.size == (400, 100)
    assert composite.getpixel((50, 50)) == (255, 0, 0)
    assert composite.getpixel((350, 50)) == (0, 0, 255)


def test_a_large_photo_is_scaled_to_the_maximum_side(tmp_path: Path) -> None:
    photo = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 1500), (200, 10, 10)).save(photo)
    heat = tmp_path / "heat.png"
    Image.new("RGB", (64, 64), (0, 0, 255)).save(heat)

    composite = blend(Image, photo, heat, max_side=1024, opacity=0.5)

    assert max(composite.size) == 1024 and composite.size[1] in (511, 512)


# An 8,000 x 8,000 photo holds 256 MB when decoded whole (Pillow keeps RGB as 4 bytes a
# pixel). A JPEG is never decoded whole (draft: 1/2 scale here); a PNG cannot be decoded
# in parts, so it costs one full copy, then is reduced and freed.
MEMORY_LIMIT_MB = {".jpg": 300, ".png": 350}
# The peak is VmHWM, this process's own high-water mark: ru_maxrss would carry over the
# parent's (pytest's) resident size across fork and exec.
MEASURE = """
import json, sys
from pathlib import Path
from batchmap.overlays import export_overlays
report = export_overlays(Path(sys.argv[1]), Path(sys.argv[2]))
status = Path("/proc/self/status").read_text()
peak = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:")) / 1024
print(json.dumps({"written": report.written, "unreadable": report.unreadable, "peak_mb": peak}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_memory_stays_bounded_on_8000px_originals(tmp_path: Path, suffix: str) -> None:
    from contextlib import closing

    from batchmap.store import Store

    big = tmp_path / "photos" / f"big{suffix}"
    big.parent.mkdir()
    Image.new("RGB", (8000, 8000), (120, 130, 140)).save(big)
    heat = tmp_path / "heat.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(heat)
    db = tmp_path / "jobs.db"
    with closing(Store(db)) as store:
        store.load_ids(
            [("a1", json.dumps({"Name": big.name})), ("a2", json.dumps({"Name": big.name}))]
        )
        store.conn.execute("UPDATE jobs SET state = 'done', path = ?", (str(heat),))
        store.set_meta("originals", {"dir": str(big.parent), "column": "Name"})

    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(db), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env=cli_env(), check=True,
    )  # fmt: skip

    measured = json.loads(done.stdout)
    assert measured["written"] == 2 and measured["unreadable"] == 0, measured
    assert measured["peak_mb"] < MEMORY_LIMIT_MB[suffix], measured
    with Image.open(tmp_path / "out" / "a1.jpg") as composite:
        assert composite.size == (2048, 2048)


def test_composites_never_go_into_the_photos_folder(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("samefolder", ok=1)
    photo_job(workspace, shared_fake, ids)
    before = digests(workspace.root / "photos")

    refused = workspace.cli("export", "overlays", "--db", workspace.db, "--out", "photos")

    assert refused.code == 2 and "that is the photos' folder" in refused.stderr
    assert digests(workspace.root / "photos") == before


def test_a_picture_too_large_to_decode_is_refused_before_decoding(tmp_path: Path) -> None:
    photo = tmp_path / "huge.png"
    Image.new("1", (12_000, 6_000)).save(photo)  # 72 megapixels, 9 MB as a bitmap
    heat = tmp_path / "heat.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(heat)

    with pytest.raises(ValueError, match="12000 x 6000 pixels: more than batchmap decodes"):
        blend(Image, photo, heat, max_side=2048, opacity=0.5)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard is back for everyone else
