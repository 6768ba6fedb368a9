"""Load generators and benchmark runners (``shopfloor bench …``).

Shared JSON/rich reporting lives in :mod:`shopfloor.bench._report`.
"""
