"""Fixtures of the export tests."""

from __future__ import annotations

from _export_helpers import week

__all__ = ["week"]
