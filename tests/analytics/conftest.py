"""Fixtures of the analytics tests."""

from __future__ import annotations

from _analytics_helpers import simulated_day

__all__ = ["simulated_day"]
