"""A local identifAI stand-in: heatmaps, classifications, Laravel's rate limits, faults, outages.

`batchmap fake-server` runs it; tests and benchmarks also start one in-process:

    server = FakeServer(FakeConfig(limits=((5, 1.0),), pending_rate=0.1))
    port = await server.start()
    await server.begin_outage("503")  # or "refuse", "reset"; FakeConfig.outage_at schedules one
    await server.end_outage()
    server.stats.as_json()  # the body of GET /_fake/stats
    await server.close()

Modules: heatmaps (PNGs, expected_status), classifications, limits (Laravel's limiter, pure),
http (the wire), listener (the accept loop), config, server. tests/hostile.py's misbehaving
servers use http and listener too.
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
