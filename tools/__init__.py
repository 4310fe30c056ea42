"""Developer tools: the demo, the benchmarks, mutation checks; not shipped in the wheel."""
