"""The reference factory file validates and resolves as documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import shopfloor.model as model
from shopfloor.errors import ConfigError
from shopfloor.model import STANDARD_STATES, UNITS, Factory, FactoryFileError, load_factory

PRESS_7 = "acme/munich/body-shop/line-1/cell-1/press-7"


@pytest.fixture(scope="module")
def factory() -> Factory:
    return load_factory(Path(__file__).resolve().parents[2] / "examples" / "acme-munich.yaml")


def test_public_surface() -> None:
    assert sorted(model.__all__) == sorted(
        [
            "STANDARD_STATES",
            "UNITS",
            "AnomalyParams",
            "AnomalyRule",
            "AssetNode",
            "Binding",
            "Connection",
            "Factory",
            "FactoryDocument",
            "FactoryFileError",
            "ModelIssue",
            "ResolvedSignal",
            "Site",
            "factory_json_schema",
            "load_factory",
            "parse_factory",
            "render_tree",
            "select_anomaly_signals",
        ]
    )
    assert issubclass(FactoryFileError, ConfigError)
    assert STANDARD_STATES == (
        "running", "idle", "starved", "blocked", "planned_stop", "unplanned_stop", "setup",
        "offline",
    )  # fmt: skip


def test_units_table() -> None:
    assert len(UNITS) >= 120
    for code in ("CEL", "KWH", "BAR", "C62", "MTR", "MMT", "RPM", "SEC", "P1", "KWT", "AMP",
                 "VLT", "HTZ", "NEW", "KGM", "MTS", "DD", "C81", "H87", "C94"):  # fmt: skip
        assert code in UNITS
    assert UNITS["CEL"] == ("degree Celsius", "°C")


def test_counts(factory: Factory) -> None:
    assets = factory.assets()
    levels = [a.level for a in assets]
    assert levels.count("enterprise") == 1
    assert levels.count("site") == 1
    assert levels.count("area") == 2
    assert levels.count("line") == 4
    assert levels.count("cell") == 5
    assert levels.count("equipment") == 25
    assert len(factory.equipment()) == 25
    types = [a.type for a in factory.equipment()]
    assert types.count("agv") == 5
    assert types.count("press") == 5
    assert types.count("welding-robot") == 8
    assert types.count("conveyor") == 4
    assert types.count("power-meter") == 2
    assert types.count("legacy-press") == 1
    # press 10 signals, robot 9, conveyor 3, agv 10, power meter 10, legacy press 7
    assert len(factory.signals()) == 5 * 10 + 8 * 9 + 4 * 3 + 5 * 10 + 2 * 10 + 7
    # every signal is bound but the derived ones (oee of the machines)
    assert len(factory.bindings()) == len(factory.signals()) - 14
    assert set(factory.connections) == {
        "line-1-opc", "line-2-opc", "line-3-opc", "agv-fleet", "plant-modbus",
    }  # fmt: skip


def test_tree_order_and_paths(factory: Factory) -> None:
    paths = [a.path for a in factory.assets()]
    assert paths[:6] == [
        "acme",
        "acme/munich",
        "acme/munich/body-shop",
        "acme/munich/body-shop/line-1",
        "acme/munich/body-shop/line-1/cell-1",
        PRESS_7,
    ]
    press = factory.asset(PRESS_7)
    assert (press.id, press.name, press.level, press.type) == (
        "press-7",
        "Press 7",
        "equipment",
        "press",
    )
    assert press.parent == "acme/munich/body-shop/line-1/cell-1"
    conveyor = factory.asset("acme/munich/body-shop/line-1/conveyor-1")
    assert conveyor.parent == "acme/munich/body-shop/line-1"
    assert factory.asset("acme").parent is None
    with pytest.raises(KeyError):
        factory.asset("acme/nowhere")


def test_signal_paths_and_inheritance(factory: Factory) -> None:
    temp = factory.signal(f"{PRESS_7}/temperature")
    assert (temp.name, temp.asset_path, temp.unit, temp.kind, temp.data_type) == (
        "temperature", PRESS_7, "CEL", "measurement", "float",
    )  # fmt: skip
    assert (temp.low, temp.high) == (10.0, 70.0)
    names = [s.name for s in factory.signals() if s.asset_path == PRESS_7]
    # inherited from machine first, then the press's own
    assert names[:5] == ["state", "good_count", "reject_count", "energy", "oee"]
    assert "temperature" in names
    oee = factory.signal(f"{PRESS_7}/oee")
    assert oee.derived
    assert oee.binding is None
    assert factory.signal(f"{PRESS_7}/stroke_rate").unit == "C94"
    for sig in factory.signals():
        assert sig.path == f"{sig.asset_path}/{sig.name}"
        assert sig.derived == (sig.binding is None)
    with pytest.raises(KeyError):
        factory.signal(f"{PRESS_7}/nope")


def test_opcua_addresses_follow_the_convention(factory: Factory) -> None:
    for sig in factory.signals():
        if sig.binding is None:
            continue
        if sig.binding.connection.endswith("-opc"):
            assert sig.binding.address == f"ns=2;s={sig.path}"
        elif sig.binding.connection == "plant-modbus":
            assert re.fullmatch(
                r"unit=\d;(ir|hr)=\d+;type=\w+(;[a-z]+=[\w.]+)*", sig.binding.address
            )
        else:
            assert sig.binding.connection == "agv-fleet"
            assert re.fullmatch(r"AGV-\d{3}/[A-Za-z.]+", sig.binding.address)


def test_bindings_lookup(factory: Factory) -> None:
    bindings = factory.bindings()
    sig = bindings[("line-1-opc", f"ns=2;s={PRESS_7}/temperature")]
    assert sig.path == f"{PRESS_7}/temperature"
    energy = bindings[("line-1-opc", f"ns=2;s={PRESS_7}/energy")]
    assert energy.binding is not None
    assert energy.binding.scale == 0.001
    assert dict(energy.binding.options) == {"publishing_interval_ms": 1000}
    agv = bindings[("agv-fleet", "AGV-001/batteryState.batteryCharge")]
    assert agv.path == "acme/munich/assembly/intralogistics/agv-001/battery_charge"
    assert agv.unit == "P1"


def test_attributes_merge(factory: Factory) -> None:
    assert factory.attributes(PRESS_7) == {
        "manufacturer": "Schuler",
        "ideal_cycle_time_s": 3.5,  # the instance's override
        "max_force_kn": 8000,
    }
    press_8 = "acme/munich/body-shop/line-1/cell-1/press-8"
    assert factory.attributes(press_8)["ideal_cycle_time_s"] == 4.0
    with pytest.raises(KeyError):
        factory.attributes("acme/munich")


def test_state_maps(factory: Factory) -> None:
    press = factory.state_map(PRESS_7)
    assert press["0"] == "offline"
    assert press["2"] == "running"
    assert press["8"] == "setup"  # the press's own code on top of machine's
    assert set(press.values()) <= set(STANDARD_STATES)
    agv = factory.state_map("acme/munich/assembly/intralogistics/agv-003")
    assert agv["running"] == "running"  # the VDA 5050 connector derives the standard state
    conveyor = factory.state_map("acme/munich/body-shop/line-1/conveyor-1")
    assert conveyor["3"] == "blocked"


def test_site_and_calendar(factory: Factory) -> None:
    site = factory.site_of(PRESS_7)
    assert site.id == "munich"
    assert site.timezone == "Europe/Berlin"
    assert [s.name for s in site.calendar.shifts] == ["early", "late", "night"]
    night = site.calendar.shifts[2]
    assert (night.start, night.end, night.days) == (
        "22:00",
        "06:00",
        ["mon", "tue", "wed", "thu", "fri"],
    )
    assert len(site.calendar.breaks) == 3
    (down,) = site.calendar.planned_downtime
    assert down.start.utcoffset() is not None
    assert down.assets == ["acme/munich/body-shop/line-1"]
    with pytest.raises(KeyError):
        factory.site_of("acme")


def test_parse_factory_accepts_a_mapping(factory: Factory) -> None:
    again = model.parse_factory(factory.document.model_dump(mode="json"), "dumped")
    assert again.source == "dumped"
    assert len(again.signals()) == len(factory.signals())
    assert again.bindings().keys() == factory.bindings().keys()
