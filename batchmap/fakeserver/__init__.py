"""A local identifAI stand-in: heatmaps, classifications, Laravel's rate limits, faults, outages.

`batchmap fake-server` runs it; tests and benchmarks also start a `FakeServer` in-process.
"""

from batchmap.fakeserver.classifications import CLASSIFICATIONS_PATHS, classification_of
from batchmap.fakeserver.config import FakeConfig, OutageKind
from batchmap.fakeserver.heatmaps import SIZE, expected_status, heatmap_png
from batchmap.fakeserver.server import (
    HEATMAP_PREFIXES,
    RESET_PATH,
    STATS_PATH,
    FakeServer,
    FakeStats,
    serve,
)

__all__ = [
    "CLASSIFICATIONS_PATHS",
    "HEATMAP_PREFIXES",
    "RESET_PATH",
    "SIZE",
    "STATS_PATH",
    "FakeConfig",
    "FakeServer",
    "FakeStats",
    "OutageKind",
    "classification_of",
    "expected_status",
    "heatmap_png",
    "serve",
]
