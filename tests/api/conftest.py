"""Fixtures of the API tests."""

from __future__ import annotations

from _api_helpers import api_data

__all__ = ["api_data"]
