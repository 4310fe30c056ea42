"""`python -m tools.bench` or `python tools/bench`: run the chosen sections."""

import sys
from pathlib import Path

if not __package__:  # `python tools/bench`: the repository root is not on sys.path yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.bench.main import main

sys.exit(main())
