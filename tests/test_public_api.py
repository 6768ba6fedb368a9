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
