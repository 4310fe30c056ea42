"""batchmap: download identifAI AI-heatmaps in bulk, paced, resumable and crash-safe.

The Python API (the CLI is a thin layer on it):

    import batchmap
    job = batchmap.Job("jobs.db")
    job.load("ids.csv")
    result = job.run(api_key="...", out="heatmaps")

Names are imported on first use, so `import batchmap` stays cheap for `status` and `report`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchmap.version import __version__

# name -> module that defines it
_EXPORTS = {
    "Api": "batchmap.config",
    "Output": "batchmap.config",
    "Pace": "batchmap.config",
    "ApiUnusableError": "batchmap.errors",
    "AuthError": "batchmap.errors",
    "BatchmapError": "batchmap.errors",
    "InputError": "batchmap.errors",
    "LockedError": "batchmap.errors",
    "StorageError": "batchmap.errors",
    "Layout": "batchmap.files",
    "Job": "batchmap.job",
    "JobState": "batchmap.models",
    "LoadStats": "batchmap.models",
    "Stop": "batchmap.context",
    "Progress": "batchmap.session",
    "RunResult": "batchmap.session",
}

__all__ = [
    "Api",
    "ApiUnusableError",
    "AuthError",
    "BatchmapError",
    "InputError",
    "Job",
    "JobState",
    "Layout",
    "LoadStats",
    "LockedError",
    "Output",
    "Pace",
    "Progress",
    "RunResult",
    "Stop",
    "StorageError",
    "__version__",
]

if TYPE_CHECKING:
    from batchmap.config import Api, Output, Pace
    from batchmap.context import Stop
    from batchmap.errors import (
        ApiUnusableError,
        AuthError,
        BatchmapError,
        InputError,
        LockedError,
        StorageError,
    )
    from batchmap.files import Layout
    from batchmap.job import Job
    from batchmap.models import JobState, LoadStats
    from batchmap.session import Progress, RunResult


def __dir__() -> list[str]:
    """The public names too, though they are imported on first use (tab completion)."""
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'batchmap' has no attribute {name!r}")
