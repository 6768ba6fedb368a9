"""shopfloor.aas says what it exports, documents it, and keeps the SDK's types private."""

from __future__ import annotations

import inspect

import shopfloor.aas as aas


def test_all_is_explicit_documented_and_ours() -> None:
    assert aas.__doc__
    assert len(set(aas.__all__)) == len(aas.__all__)
    for name in aas.__all__:
        obj = getattr(aas, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"shopfloor.aas.{name} has no docstring"
            assert obj.__module__.startswith("shopfloor."), f"{name} comes from {obj.__module__}"
    from shopfloor.errors import ShopfloorError

    assert issubclass(aas.AasError, ShopfloorError)
