"""Where the offline benchmark data lives: one answer for every evaluator and builder."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """$PHI_DATA_DIR, else `<repo>/../shared/data` (the layouts each folder's SOURCE.md describes)."""
    return Path(os.environ.get("PHI_DATA_DIR", REPO.parent / "shared" / "data"))
