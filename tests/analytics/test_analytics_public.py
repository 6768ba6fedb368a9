"""The analytics package's public surface is explicit and documented."""

from __future__ import annotations

import inspect

import shopfloor.analytics as analytics


def test_all_is_explicit_and_documented() -> None:
    assert analytics.__doc__
    assert len(set(analytics.__all__)) == len(analytics.__all__)
    for name in analytics.__all__:
        obj = getattr(analytics, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
            assert obj.__module__.startswith("shopfloor.analytics"), name


def test_kpi_definitions_are_frozen_and_named() -> None:
    names = [k.name for k in (*analytics.OEE_KPIS, *analytics.ISO22400_KPIS)]
    assert len(set(names)) == len(names)
    assert {"availability", "performance", "quality", "oee", "mtbf_s", "nee"} <= set(names)
    assert [loss.name for loss in analytics.LOSSES][:6] == [
        "breakdowns",
        "setup",
        "small_stops",
        "speed_loss",
        "startup_rejects",
        "production_rejects",
    ]
