"""The job database's schema: its versions, its columns, and the steps that create it.

A new database and a released (v1) one take the same steps, so both end with the same columns
in the same order. sqlite-utils makes what it can say (`add_column`, `create`, `upsert`); the
released v1 text and the partial index stay SQL, since sqlite-utils can say neither.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import sqlite_utils

from batchmap.models import TIMELINE_COUNTERS, MinuteStats

# The released schema (version 1), kept verbatim: new databases start from it and are brought
# forward by the same steps as old ones, so both end with the same columns in the same order.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    identifier  TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL DEFAULT 'pending',
    http_status INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    path        TEXT,
    bytes       INTEGER,
    sha256      TEXT,
    error       TEXT,
    retryable   INTEGER,
    created_at  TEXT NOT NULL,
    updated_at  TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

SCHEMA_VERSION = 2
# "bmap": written to the file header (offset 68), so even a file whose schema can no longer be
# read still says it is a job database, and `file(1)`-style tools can tell.
APPLICATION_ID = 0x626D6170

V1_COLUMNS = (
    "identifier", "state", "http_status", "attempts", "path", "bytes", "sha256", "error",
    "retryable", "created_at", "updated_at", "finished_at",
)  # fmt: skip
NEW_JOB_COLUMNS = (
    ("has_heatmap", "INTEGER"),  # 0/1, NULL when the classifications endpoint did not say
    ("verdict", "TEXT"),  # the main verdict's classification: "artificial", "human", ...
    ("confidence", "REAL"),
    ("image_hash", "TEXT"),  # the classified image file's SHA-256 (`hash`)
    ("image_name", "TEXT"),  # `name`
    ("classification", "TEXT"),  # the whole object the endpoint returned, as JSON
    ("asked_at", "TEXT"),  # when the classifications endpoint was asked; NULL: never
)
V2_COLUMNS = V1_COLUMNS + tuple(name for name, _ in NEW_JOB_COLUMNS)
# Added to v2 in place (no version bump: an older batchmap reads such a file unchanged).
# A v2 file without them is brought forward at its next writable open.
KEPT_JOB_COLUMNS = (
    ("user_columns", "TEXT"),  # the CSV row's other columns, a JSON object (ids.MAX_COLUMNS_BYTES)
)

# Pending rows never asked about, in rowid order, without walking past those already asked.
# SQL: sqlite-utils' create_index cannot make a partial index.
UNASKED_INDEX = "CREATE INDEX IF NOT EXISTS jobs_unasked ON jobs (state) WHERE asked_at IS NULL"

REPORT_COLUMNS = (
    *V1_COLUMNS, "has_heatmap", "verdict", "confidence", "image_hash", "image_name",
    "user_columns",  # decoded by `Store.rows` to a dict (None when the CSV had no other column)
)  # fmt: skip

RUN_COLUMNS = ("run_id", "started_at", "ended_at", "exit_code", "version", "pid", "options")


def bring_forward(db: sqlite_utils.Database) -> None:
    """Create every table, or add what an older database lacks, inside the caller's transaction.

    Each step does nothing where its part exists already, so this is also the whole upgrade.
    """
    for statement in _statements(SCHEMA_V1):
        db.execute(statement)
    jobs = db.table("jobs")
    present = set(jobs.columns_dict)
    for name, sql_type in (*NEW_JOB_COLUMNS, *KEPT_JOB_COLUMNS):
        if name not in present:
            jobs.add_column(name, sql_type)
    db.table("runs").create(
        {"run_id": int, "started_at": str, "ended_at": str, "exit_code": int, "version": str,
         "pid": int, "options": str},
        pk="run_id",
        not_null={"started_at"},
        if_not_exists=True,
    )  # fmt: skip
    db.execute(UNASKED_INDEX)
    _create_timeline(db)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    put_meta(db, "schema_version", SCHEMA_VERSION)


def put_meta(db: sqlite_utils.Database, key: str, value: Any) -> None:
    """Save a small JSON value under `key` in `meta`, replacing any before it."""
    db.table("meta").upsert({"key": key, "value": json.dumps(value)}, pk="key")


def _create_timeline(db: sqlite_utils.Database) -> None:
    """The timeline table, one column per field of MinuteStats (its one definition)."""
    types: dict[str, type] = {"run_id": int}
    for f in fields(MinuteStats):
        types[f.name] = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
    defaults: dict[str, Any] = {name: 0 for name in TIMELINE_COUNTERS}
    defaults |= {"pause_reasons": "{}", "limits": "[]"}  # JSON: {reason: seconds}, [[L, W]]
    db.table("timeline").create(
        types,
        pk=("run_id", "minute"),
        not_null={name for name in types if name != "pacer_rate"},
        defaults=defaults,
        if_not_exists=True,
    )


def _statements(script: str) -> Iterator[str]:
    # executescript would COMMIT first; these run one by one inside our own transaction.
    for statement in re.sub(r"--[^\n]*", "", script).split(";"):
        if statement.strip():
            yield statement
