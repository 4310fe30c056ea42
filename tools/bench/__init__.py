"""`make bench`: how close batchmap gets to its targets, measured against local baselines.

Sections (all but chaos by default, or name them): pacing leaky leaky-retry-after throughput
resume scale; `make chaos` runs the hostile-server cases (chaos).

Every section starts its own `batchmap fake-server` subprocess (so it runs on the other core)
with a key of its own, runs the real CLI as a subprocess in a temp dir, and prints a titled
block of figures with the command it ran. Figures are ratios measured in the same run, because
the machine is shared. A final table lists every target as PASS or MISS (and whole-run figures
as info beside the steady ones); the exit code is 0 even on a MISS (this reports, it does not
test) and 1 only if a section could not run.

    python -m tools.bench [SECTION ...] [--json PATH]     (or: python tools/bench ...)

Modules: common (results, printing, test data), processes (children, RSS, the fake server),
pacing, throughput, resume, scale, chaos (one per section), main (the command line).
"""
