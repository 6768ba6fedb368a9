"""shopfloor: an open manufacturing platform.

Connects machines, robots and AGVs through open industrial standards, maps everything onto
one open data model (an ISA-95 asset hierarchy with typed signals), keeps it in a historian
and computes manufacturing KPIs.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
