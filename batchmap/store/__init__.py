"""The job database: every read and write of it (but `estimate`'s read-only counts).

One SQLite file in WAL mode, one row per unique identifier, plus the run history (`runs`,
`timeline`). Every change is one short transaction, so a crash at any instant leaves a
consistent table; rows a killed process left `running` go back to `pending` on the next start
(see `recover`). A file is recognised as batchmap's before anything is written to it
(`identity`): any other file is refused without changing a byte. SQLite failures leave this
package as one-line `StorageError`s that name the file (`sqlite_errors`).

`Store` is put together from its parts: `base` (the connection and its transactions),
`jobs` (load, claim, record), `queries` (what reports and `status` read) and `history`
(runs, timeline, settings); `schema` says what the tables are.
"""

from __future__ import annotations

from batchmap.store.base import now_iso
from batchmap.store.history import RunHistory
from batchmap.store.identity import Inspection, Kind, check_database, classify
from batchmap.store.jobs import LOAD_BATCH, JobTable
from batchmap.store.queries import Queries
from batchmap.store.schema import (
    APPLICATION_ID,
    KEPT_JOB_COLUMNS,
    NEW_JOB_COLUMNS,
    REPORT_COLUMNS,
    RUN_COLUMNS,
    SCHEMA_V1,
    SCHEMA_VERSION,
    V1_COLUMNS,
    V2_COLUMNS,
)
from batchmap.store.sqlite_errors import BUSY_TIMEOUT, damaged_error, recovery_hint

__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT",
    "KEPT_JOB_COLUMNS",
    "LOAD_BATCH",
    "NEW_JOB_COLUMNS",
    "REPORT_COLUMNS",
    "RUN_COLUMNS",
    "SCHEMA_V1",
    "SCHEMA_VERSION",
    "V1_COLUMNS",
    "V2_COLUMNS",
    "Inspection",
    "Kind",
    "Store",
    "check_database",
    "classify",
    "damaged_error",
    "now_iso",
    "recovery_hint",
]


class Store(JobTable, Queries, RunHistory):
    """The job table and run history of one database file; also a context manager."""
