"""shopfloor: an open manufacturing platform.

Connects machines, robots and AGVs through open industrial standards, maps everything onto
one open data model (an ISA-95 asset hierarchy with typed signals), keeps it in a historian
and computes manufacturing KPIs.

:class:`Client` and :class:`AsyncClient` (the SDK, :mod:`shopfloor.sdk`) read the platform's
API into data frames; they are imported on first use, so ``import shopfloor`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ApiError", "AsyncClient", "Client", "__version__"]

if TYPE_CHECKING:
    from shopfloor.sdk import ApiError, AsyncClient, Client

_SDK = frozenset({"ApiError", "AsyncClient", "Client"})


def __getattr__(name: str) -> Any:
    if name in _SDK:
        from shopfloor import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'shopfloor' has no attribute {name!r}")
