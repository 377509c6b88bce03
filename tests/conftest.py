"""Shared fixtures: the real data folder, found in one place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: ../shared/data beside the repository (override with ARCTIC_RTS_SHARED_DATA).
SHARED_DATA = Path(
    os.environ.get(
        "ARCTIC_RTS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder ``../shared/data``; tests that need it skip when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set ARCTIC_RTS_SHARED_DATA)")
    return SHARED_DATA
