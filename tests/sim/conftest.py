"""Fixtures for the simulator's tests: small configs that run in milliseconds."""
from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def demo_report_path() -> Path:
    return DATA / "demo_report.json"
