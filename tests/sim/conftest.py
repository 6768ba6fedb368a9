from __future__ import annotations

import socket
from pathlib import Path

import pytest

FACTORY = """
types:
  - id: press
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: good_count, data_type: int, unit: H87, kind: counter}
      - {name: reject_count, data_type: int, unit: H87, kind: counter}
      - {name: energy, data_type: float, unit: KWH, kind: counter}
      - {name: temperature, data_type: float, unit: CEL, kind: measurement,
         limits: {low: 10, high: 70}}
      - {name: press_force, data_type: float, unit: B47, kind: measurement}
      - {name: force_setpoint, data_type: float, unit: B47, kind: setpoint}
      - {name: oee, data_type: float, unit: P1, derived: true}
    attributes: {ideal_cycle_time_s: 5.0, mtbf_min: 600}
    states: {0: offline, 1: idle, 2: running, 3: starved, 4: blocked, 5: planned_stop,
             6: unplanned_stop, 7: setup}
  - id: agv
    signals:
      - {name: battery_charge, data_type: float, unit: P1}
connections:
  - {name: line-1-opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4841"}
  - {name: fleet, protocol: vda5050, endpoint: "mqtt://127.0.0.1:1883"}
enterprise:
  id: acme
  sites:
  - id: munich
    timezone: Europe/Berlin
    areas:
    - id: body-shop
      lines:
      - id: line-1
        cells:
        - id: cell-1
          equipment:
%(presses)s
        equipment:
        - id: agv-1
          type: agv
          connection: fleet
          bindings: {battery_charge: agv-1/batteryState.batteryCharge}
"""


def _press(i: int) -> str:
    base = f"acme/munich/body-shop/line-1/cell-1/press-{i}"
    names = ("state", "good_count", "reject_count", "temperature", "press_force")
    lines = [
        f"          - id: press-{i}",
        "            type: press",
        "            connection: line-1-opc",
        "            bindings:",
        *(f"              {n}: ns=2;s={base}/{n}" for n in names),
        "              energy: {address: ns=2;s=" + base + "/energy, scale: 0.001}",
        f"              force_setpoint: ns=2;s={base}/force_setpoint",
    ]
    return "\n".join(lines)


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "factory.yaml"
    presses = "\n".join(_press(i) for i in (1, 2, 3))
    path.write_text(FACTORY % {"presses": presses}, encoding="utf-8")
    return path


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
