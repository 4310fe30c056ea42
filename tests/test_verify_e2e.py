"""`batchmap verify` end to end: changed, missing and stray files; repair refetches only them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from batchmap.files import Layout, heatmap_path
from tests.conftest import (
    FakeServer,
    Workspace,
    make_ids,
)


def test_verify_finds_what_changed_and_repair_refetches_only_that(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("verify", ok=12)
    assert workspace.run(workspace.csv(ids), shared_fake).code == 0
    clean = workspace.cli("verify", "--db", workspace.db)
    assert clean.code == 0 and "12 done rows checked: 12 ok" in clean.stdout, clean.output

    rows = workspace.rows()
    changed, missing = Path(rows[ids[0]]["path"]), Path(rows[ids[1]]["path"])
    changed.write_bytes(changed.read_bytes()[:-3] + b"xyz")
    missing.unlink()
    stray = heatmap_path(workspace.out, "f" * 64, layout=Layout.SHARDED)  # no row has it
    stray.parent.mkdir(exist_ok=True)
    shutil.copy(Path(rows[ids[2]]["path"]), stray)
    (workspace.out / "notes.txt").write_text("mine")  # not batchmap's: never touched

    found = workspace.cli("verify", "--db", workspace.db)
    assert found.code == 1, found.output
    assert "1 missing, 1 changed; 1 stray file" in found.stdout, found.stdout
    assert str(missing) in found.stdout and str(stray) in found.stdout

    before = shared_fake.per_identifier()
    repaired = workspace.cli("verify", "--db", workspace.db, "--repair")
    assert "2 rows back to pending" in repaired.stdout, repaired.output
    assert repaired.code == 0  # it repaired everything it found; the stray is only listed
    assert {workspace.rows()[i]["state"] for i in ids[:2]} == {"pending"}
    assert workspace.resume(shared_fake).code == 0
    after = shared_fake.per_identifier()
    assert {i: after[i] - before[i] for i in ids} == {i: int(i in ids[:2]) for i in ids}
    stray.unlink()  # the user's call, never batchmap's
    assert (workspace.out / "notes.txt").read_text() == "mine"
    assert workspace.cli("verify", "--db", workspace.db).code == 0


def test_the_readme_repair_chain_repairs_and_resumes(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("chain", ok=6)
    assert workspace.run(workspace.csv(ids), shared_fake).code == 0
    Path(workspace.rows()[ids[0]]["path"]).unlink()
    chain = "batchmap verify --repair && batchmap resume"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert chain in readme
    env = {
        **workspace.env,
        "BATCHMAP_DB": str(workspace.db),
        "IDENTIFAI_BASE_URL": shared_fake.url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-c", chain], cwd=workspace.root, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert {row["state"] for row in workspace.rows().values()} == {"done"}
    assert workspace.cli("verify", "--db", workspace.db).code == 0
