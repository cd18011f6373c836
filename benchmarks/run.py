#!/usr/bin/env python3
"""rlmx vs rlms 0.1.3, measured in the same run, against the targets of issues 5 and 6.

The code lives in ``benchmarks/bench/`` (``cli.py`` has the full description; run
``python benchmarks/run.py --help``). This file only keeps the command's path.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
