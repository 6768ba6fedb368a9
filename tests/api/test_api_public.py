"""The public surface of ``shopfloor.api``: explicit, documented, from its own modules."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import shopfloor.api


def test_all_is_explicit_documented_and_ours() -> None:
    api = shopfloor.api
    assert api.__doc__
    assert len(set(api.__all__)) == len(api.__all__)
    for name in api.__all__:
        obj = getattr(api, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"shopfloor.api.{name} has no docstring"
            assert obj.__module__.startswith("shopfloor.api."), (name, obj.__module__)


def test_modules_are_private_and_say_what_they_export() -> None:
    for info in pkgutil.iter_modules(shopfloor.api.__path__):
        assert info.name.startswith("_"), f"shopfloor.api.{info.name} should be private"
        module = importlib.import_module(f"shopfloor.api.{info.name}")
        assert module.__doc__, info.name
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert inspect.getdoc(obj), f"{info.name}.{name} has no docstring"
