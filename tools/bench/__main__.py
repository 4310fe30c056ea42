"""`python -m tools.bench` or `python tools/bench`: run the chosen sections."""

import sys
from pathlib import Path

if not __package__:
    # `python tools/bench` put tools/bench itself first on sys.path, where its modules would
    # shadow any same-named one: the repository root takes its place.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from tools.bench.main import main

sys.exit(main())
