"""Shared helpers of the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def examples() -> Path:
    """The repository's examples directory."""
    return EXAMPLES
