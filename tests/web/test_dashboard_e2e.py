"""The web dashboard end to end: a real platform (``shopfloor demo``: the simulated factory
over OPC UA, Modbus and VDA 5050, the runtime, the historian, the API and the dashboard) in a
subprocess, driven by headless Debian chromium through Playwright.

Screenshots land in ``test-artifacts/screenshots/`` (gitignored).
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "acme-munich.yaml"
SHOTS = ROOT / "test-artifacts" / "screenshots"

LINE = "acme/munich/body-shop/line-1"
PRESS = f"{LINE}/cell-1/press-7"
ALARM = f"{PRESS}/oil_temperature_watch"
# A rule that fires on the first temperature sample, so that there is an alarm to acknowledge.
ALARM_RULE = """  rules:
    - id: oil_temperature_watch
      asset: acme/munich/body-shop/line-1/cell-1/press-7
      severity: critical
      description: fires on the first sample (end-to-end test of acknowledgement)
      threshold: {signal: temperature, above: -1000}
"""

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install "
        "chromium, or SHOPFLOOR_TEST_SERVICES=chromium bash scripts/services.sh)",
    ),
    pytest.mark.timeout(600),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from shopfloor.cli import main; main()", *args]


@dataclass
class Platform:
    """The running demo: where it listens and the tokens made for the test."""

    url: str
    operate_token: str
    read_token: str
    log: Path
    proc: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str, token: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{self.url}/api/v1/{path}", headers=headers, timeout=10)


def _token(db: str, scope: str, name: str) -> str:
    out = subprocess.run(
        _cli("token", "create", "--scope", scope, "--subtree", "acme", "--name", name, "--db", db),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("dashboard")
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.count("  rules:\n") == 1
    # No broker at this endpoint: the demo starts its own (no crosstalk with other tests).
    text = text.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1")
    factory = tmp / "factory.yaml"
    factory.write_text(text.replace("  rules:\n", ALARM_RULE, 1), encoding="utf-8")
    db = f"duckdb:{tmp / 'demo.duckdb'}"
    operate = _token(db, "operate", "e2e-operator")
    read = _token(db, "read", "e2e-viewer")
    port = _free_port()
    log = tmp / "demo.log"
    env = {**os.environ, "BROWSER": "true", "COLUMNS": "200"}  # never open a browser window
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _cli(
                "demo",
                "--factory",
                str(factory),
                "--db",
                db,
                "--api-port",
                str(port),
                "--no-live",
                "--duration",
                "560",
                "--port-offset",
                str(random.randint(20_000, 30_000)),
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )
    platform = Platform(f"http://127.0.0.1:{port}", operate, read, log, proc)
    try:
        deadline = time.monotonic() + 180  # generous: the test machine may be busy
        ready: dict[str, object] = {}
        while not ready.get("runtime"):
            assert proc.poll() is None, f"the demo stopped:\n{platform.output()}"
            assert time.monotonic() < deadline, (
                f"the demo did not get ready ({ready}):\n{platform.output()}"
            )
            time.sleep(0.5)
            try:
                ready = httpx.get(f"{platform.url}/api/v1/ready", timeout=10).json()
            except (httpx.HTTPError, ValueError) as exc:
                ready = {"error": repr(exc)}
        yield platform
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@dataclass
class Console:
    """What the page reported: console errors and uncaught exceptions."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"{msg.text} at {msg.location}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / name))


def test_operator_walkthrough(platform: Platform, browser: Browser) -> None:
    console = Console()
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="dark")
    page = ctx.new_page()
    console.watch(page)
    expect.set_options(timeout=60_000)
    live_path = httpx.get(f"{platform.url}/dashboard.json", timeout=10).json()["live"]
    try:
        # -- sign in with the login field
        page.goto(platform.url + "/")
        expect(page.locator("#login")).to_be_visible()
        _shot(page, "01-login.png")
        page.fill("#token-input", platform.operate_token)
        page.click("#login-submit")
        expect(page.locator("#who")).to_contain_text("e2e-operator")
        expect(page.locator("#who .scope")).to_have_text("operate")
        # the stream: the WebSocket when the server has one, REST polling otherwise
        pill = page.locator("#live-pill")
        expect(pill).to_have_attribute("data-mode", "live" if live_path else "polling")

        # -- the ISA-95 tree down to a line: its OEE and losses
        tree = page.locator("#tree")
        expect(tree.locator(".tree-row[data-level=enterprise]")).to_have_count(1)
        tree.locator(f'.tree-row[data-path="{LINE}"]').click()
        expect(page.locator(".asset-view h1")).to_have_text("Press line 1")
        assert page.url.endswith(f"#/asset/{LINE}")
        oee = page.locator("#oee-value")
        expect(oee).to_have_text(re.compile(r"^\d[\d,.]* %$"))
        for kpi in ("availability", "performance", "quality"):
            expect(page.locator(f'.factor[data-kpi="{kpi}"] .factor-value')).to_have_text(
                re.compile(r"^[\d,.]+ %$")
            )
        expect(page.locator("#loss-panel .loss")).to_have_count(7)
        # line equipment states come live through the tree
        expect(page.locator(".equipment-card:not(.state-none)").first).to_be_visible()
        _shot(page, "02-line-oee.png")

        # -- downtime Pareto after recording the window's downtime (operate scope)
        page.click("#record-downtime")
        expect(page.locator("#pareto-panel svg.pareto")).to_be_visible()
        page.locator("#pareto-panel").scroll_into_view_if_needed()
        _shot(page, "03-downtime-pareto.png")

        # -- down to an equipment: live values change
        tree.locator(f'.tree-row[data-path="{LINE}"] .caret').click()
        tree.locator(f'.tree-row[data-path="{LINE}/cell-1"] .caret').click()
        tree.locator(f'.tree-row[data-path="{PRESS}"]').click()
        expect(page.locator(".asset-view h1")).to_have_text("Press 7")
        expect(page.locator("#asset-state")).not_to_have_class(re.compile("state-none"))
        value = page.locator(f'.tile[data-signal="{PRESS}/temperature"] .tile-value')
        expect(value).to_have_text(re.compile(r"\d"))
        expect(page.locator(f'.tile[data-signal="{PRESS}/temperature"] .tile-unit')).to_have_text(
            "°C"
        )
        first = value.inner_text()
        expect(value).not_to_have_text(first, timeout=45_000)

        # -- trends: downsampled history, the bucket follows the zoom window
        chart = page.locator(f'.chart[data-signal="{PRESS}/temperature"]')
        expect(chart).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"))
        bucket = int(chart.get_attribute("data-bucket") or "0")
        assert bucket > 0, "an hour of history is shown in buckets"
        _shot(page, "04-equipment-live.png")
        canvas = chart.locator("canvas")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
        for _ in range(8):
            page.mouse.wheel(0, -300)
            page.wait_for_timeout(80)
        expect(chart).not_to_have_attribute("data-bucket", str(bucket))
        zoomed = int(chart.get_attribute("data-bucket") or "0")
        assert zoomed < bucket, (bucket, zoomed)
        expect(chart).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"))
        expect(page.locator(".live-btn")).not_to_have_class(re.compile(r"\bon\b"))
        page.locator("#trends").scroll_into_view_if_needed()
        _shot(page, "05-trend-zoomed.png")

        # -- alarms: acknowledge with a comment
        page.click('.tab[data-view="alarms"]')
        row = page.locator(f'tr.alarm-row[data-alarm="{ALARM}"]')
        expect(row).to_have_attribute("data-state", "unack_active")
        expect(page.locator("#alarm-count")).to_be_visible()
        row.locator(".ack-btn").click()
        expect(page.locator("#ack-dialog")).to_be_visible()
        page.fill("#ack-comment", "checked on site (end-to-end test)")
        page.click("#ack-confirm")
        expect(row).to_have_attribute("data-state", "ack_active")
        expect(row).to_contain_text("e2e-operator")
        _shot(page, "06-alarm-acknowledged.png")
        alarms = platform.get("alarms", platform.operate_token).json()["items"]
        mine = next(a for a in alarms if a["alarm_id"] == ALARM)
        assert mine["acked"] is True
        assert mine["ack_comment"] == "checked on site (end-to-end test)"
        assert "e2e-operator" in (mine["acked_by"] or "")

        # -- the AGV map: five vehicles, positions move
        page.click('.tab[data-view="map"]')
        vehicles = page.locator("svg.hall g.agv[data-x]")
        expect(vehicles).to_have_count(5)
        before = [(v.get_attribute("data-x"), v.get_attribute("data-y")) for v in vehicles.all()]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = [(v.get_attribute("data-x"), v.get_attribute("data-y")) for v in vehicles.all()]
            if now != before:
                break
            page.wait_for_timeout(250)
        assert now != before, "no AGV moved in 30 s"
        expect(page.locator(".fleet-row")).to_have_count(5)
        page.wait_for_timeout(600)  # let the vehicles glide to their positions
        _shot(page, "07-agv-map.png")

        # -- the light theme
        page.click("#theme-toggle")
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
        page.click('.tab[data-view="asset"]')
        tree.locator(f'.tree-row[data-path="{LINE}"]').click()
        expect(page.locator("#oee-value")).to_have_text(re.compile(r"%$"))
        _shot(page, "08-line-light.png")
    finally:
        ctx.close()
    assert console.errors == [], "\n".join(console.errors)


def test_read_token_from_a_link(platform: Platform, browser: Browser) -> None:
    console = Console()
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    page = ctx.new_page()
    console.watch(page)
    expect.set_options(timeout=60_000)
    try:
        # the link `shopfloor demo` prints: the token leaves the address at once; the page
        # told to poll the REST API instead of the live stream
        page.goto(f"{platform.url}/?live=off#token={platform.read_token}")
        expect(page.locator("#who .scope")).to_have_text("read")
        assert "token=" not in page.url
        expect(page.locator("#live-pill")).to_have_attribute("data-mode", "polling")
        page.goto(f"{platform.url}/?live=off#/asset/{PRESS}")
        value = page.locator(f'.tile[data-signal="{PRESS}/temperature"] .tile-value')
        expect(value).to_have_text(re.compile(r"\d"))
        first = value.inner_text()
        expect(value).not_to_have_text(first, timeout=45_000)
        page.goto(f"{platform.url}/?live=off#/asset/{LINE}")
        expect(page.locator("#oee-value")).to_have_text(re.compile(r"%$"))
        # writing needs the operate scope: the page says so instead of failing
        record = page.locator("#record-downtime")
        expect(record).to_be_disabled()
        page.click('.tab[data-view="alarms"]')
        rows = page.locator("tr.alarm-row")
        expect(rows.first).to_be_visible()
        for button in page.locator(".ack-btn").all():
            expect(button).to_be_disabled()
        # signing out forgets the token
        page.click("#sign-out")
        expect(page.locator("#login")).to_be_visible()
        page.reload()
        expect(page.locator("#login")).to_be_visible()
    finally:
        ctx.close()
    assert console.errors == [], "\n".join(console.errors)
