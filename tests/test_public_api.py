"""The public surface: every package says what it exports, and documents it."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = [
    "shopfloor",
    "shopfloor.model",
    "shopfloor.edge",
    "shopfloor.historian",
    "shopfloor.connectors",
    "shopfloor.sim",
    "shopfloor.analytics",
    "shopfloor.bus",
    "shopfloor.sdk",
    "shopfloor.api",
    "shopfloor.export",
    "shopfloor.aas",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_explicit_and_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no docstring"
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    for attr in exported:
        obj = getattr(module, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("name", PACKAGES[1:])
def test_private_modules_stay_private(name: str) -> None:
    """Names a package exports come from its own modules, never from a third party."""
    module = importlib.import_module(name)
    for attr in module.__all__:
        obj = getattr(module, attr)
        origin = getattr(obj, "__module__", None)
        if origin is not None and (inspect.isclass(obj) or inspect.isfunction(obj)):
            assert origin.startswith("shopfloor."), f"{name}.{attr} comes from {origin}"


def test_sdk_is_exported_lazily() -> None:
    """``shopfloor.Client`` is the SDK's, and importing shopfloor alone does not load it."""
    import subprocess
    import sys

    import shopfloor
    from shopfloor import sdk

    assert shopfloor.Client is sdk.Client
    assert shopfloor.AsyncClient is sdk.AsyncClient
    assert shopfloor.ApiError is sdk.ApiError
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = shopfloor.Nope  # type: ignore[attr-defined]
    probe = "import sys, shopfloor; print('shopfloor.sdk' in sys.modules, 'httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
