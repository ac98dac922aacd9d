"""benchmarks/ is a folder of the repository, not an installed package: put the repository
root on sys.path so these tests import it the way `python -m benchmarks` does from the root."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
