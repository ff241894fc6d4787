"""Shared set-up of the atheris harnesses: the project's Python package on the path (the tree this
file lies in, with the library that DGEMMA_LIBRARY names), and the one rule every harness checks:
bad input raises a dgemma.DgemmaError; any other exception escapes and atheris reports it."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# An editable install's import hook answers for `dgemma` before sys.path is searched: drop it.
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
sys.path.insert(0, str(ROOT / "python"))
