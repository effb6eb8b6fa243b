"""The playground's page in a real browser: headless Chromium (Debian's package) driven by
Playwright, against the real server on 127.0.0.1.

One walk through the page as a student would take it: draw a card on the retina, teach the
machine on it and ask it, move a slider, play and watch the pot panel and the curves move,
download the machine, run the XOR race; a second tab has its own machine; no error in the
browser's console. The screenshot it takes is checked not to be blank; with
``MARK1_PLAYGROUND_SCREENSHOT=path`` it is also kept there (``make screenshot`` writes the
README's ``docs/img/playground.png``).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require

CHROMIUM = os.environ.get("CHROMIUM", "chromium")
"""The browser: Debian's ``chromium`` (Playwright's own download is not used)."""

TIMEOUT_MS = 60_000
"""Longest wait for the page to show something (a loaded CI machine is slow)."""


def _browser_or_skip() -> str:
    require(CHROMIUM)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("needs playwright (the dev extra): CI must run this test")
        pytest.skip("needs playwright (the dev extra), which is not installed")
    pytest.importorskip("starlette")
    return str(shutil.which(CHROMIUM))


@pytest.fixture(scope="module")
def browser() -> Iterator:
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.playground_helpers import live_server

    with live_server(workers=1) as address:  # machines in a worker process, as served
        yield address


class Page:
    """A browser tab on the playground, recording what its console says."""

    def __init__(self, context, address: str) -> None:
        self.page = context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console_errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(
            m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.goto(f"http://{address}/")
        self.wait("M1.connected && M1.frame !== null")

    def wait(self, condition: str) -> None:
        """Until the page's state (``M1``) makes ``condition`` true."""
        self.page.wait_for_function(f"() => {condition}", timeout=TIMEOUT_MS)

    def state(self, expression: str):
        return self.page.evaluate(f"() => {expression}")

    def frame(self) -> dict:
        return self.state("M1.frame")

    def canvas(self, name: str) -> str:
        """What canvas ``#name`` shows now (a data URL of its pixels)."""
        return self.state(f"document.getElementById({name!r}).toDataURL()")

    def pixels(self, name: str) -> np.ndarray:
        png = base64.b64decode(self.canvas(name).split(",", 1)[1])
        return _png(png)

    def click(self, element: str) -> None:
        self.page.click(f"#{element}")


def _png(data: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png")


def _levels(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(20, 20)


def draw_bar(page: Page, row: int) -> None:
    """Drag the mouse across the retina canvas along cell row ``row``."""
    box = page.page.locator("#light").bounding_box()
    assert box is not None
    y = box["y"] + (row + 0.5) * box["height"] / 20
    page.page.mouse.move(box["x"] + 0.1 * box["width"], y)
    page.page.mouse.down()
    for k in range(1, 17):
        page.page.mouse.move(box["x"] + (0.1 + 0.05 * k) * box["width"], y)
    page.page.mouse.up()


def test_a_student_draws_teaches_plays_and_races_in_a_real_browser(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 1500, "height": 1000},
                                  accept_downloads=True)
    tab = Page(context, server)
    assert tab.state("M1.welcome.tab") == tab.state("M1.tab")
    assert tab.frame()["wired"] is False

    # a slider: the page sends it, the machine (rewired) takes it
    tab.page.evaluate("""() => {
        const s = document.getElementById('slider-step');
        s.value = 0.04; s.dispatchEvent(new Event('change'));
    }""")
    tab.wait("Math.abs(M1.frame.settings.parameters.step - 0.04) < 1e-9")

    # draw a bar on the retina: the page paints it and the server's retina holds it
    dark = tab.pixels("light")
    draw_bar(tab, 10)
    tab.wait("M1.frame.card_index === null && atob(M1.frame.drawing).split('')"
             ".some((c) => c.charCodeAt(0) > 0)")
    cells = _levels(tab.frame()["drawing"])
    assert cells[10, 3:15].min() == 255 and cells[:8].max() == 0 and cells[13:].max() == 0
    drawn = tab.pixels("light")
    assert drawn[10 * 12 + 6, 8 * 12 + 6, :3].mean() > dark[10 * 12 + 6, 8 * 12 + 6, :3].mean()

    # teach it yourself: train on this card as the second class, then ask
    classes = tab.frame()["classes"]
    tab.page.select_option("#teach-label", "1")
    tab.click("teach")
    tab.wait("M1.explained !== null && M1.explained.kind === 'teach'")
    taught = tab.frame()
    assert taught["wired"] and taught["trial"] == 1 and taught["last"]["label"] == 1
    text = tab.page.inner_text("#teach-text")
    assert text == tab.state("M1.explained.text") and classes[1] in text
    if taught["last"]["mistake"]:
        assert "motor steps" in text and taught["motor_steps"] > 0
    tab.click("look")
    tab.wait("M1.explained.kind === 'look'")
    assert tab.page.inner_text("#teach-text").startswith("It answers ")
    assert tab.frame()["trial"] == 1  # asking teaches nothing

    # play: the pot panel turns, the mistakes curve grows, the clock runs
    pots_before, curve_before = tab.canvas("pots"), tab.canvas("curves")
    frame_before = tab.frame()
    tab.click("play")
    tab.wait("M1.frame.playing && M1.frame.trial >= 60 && M1.frame.tested_at !== null "
             "&& M1.frame.tested_at >= 0")
    tab.click("pause")
    tab.wait("!M1.frame.playing")
    played = tab.frame()
    assert played["mistakes"] > frame_before["mistakes"]
    assert played["machine_time_s"] > frame_before["machine_time_s"]
    assert played["pots"]["values"] != frame_before["pots"]["values"]
    assert tab.canvas("pots") != pots_before and tab.canvas("curves") != curve_before
    curve = tab.state("M1.curve")
    assert len(curve) >= 10 and curve[-1]["mistakes"] > curve[0]["mistakes"]
    assert [p["trial"] for p in curve] == sorted(p["trial"] for p in curve)
    assert "Last correction:" in tab.page.inner_text("#pots-text")
    assert "the 1960 machine would have needed" in tab.page.inner_text("#clock-text")

    # download this machine: the machine.npz the export commands take
    with tab.page.expect_download() as download:
        tab.click("dl-machine")
    saved = tmp_path / "machine.npz"
    download.value.save_as(saved)
    from mark1.machine import load_machine

    machine = load_machine(saved)
    assert machine["task"] == played["task"] and list(machine["classes"]) == classes
    assert machine["weights"].shape == (played["pots"]["shape"][0], played["last"]["n_a"])
    assert np.abs(machine["weights"][played["pots"]["trained"]]).max() > 0

    # the XOR race: three learners, each with a decision map and its mistakes per pass
    tab.click("xor-play")
    tab.wait("M1.xor !== null && M1.xor.passes >= 4")
    tab.click("xor-pause")
    race = tab.state("M1.xor")
    assert list(race["learners"]) == ["single layer", "Mark I", "MLP"]
    assert all(len(v["mistakes"]) >= 4 for v in race["learners"].values())
    panels = tab.page.locator("#xor > div")
    assert panels.count() == 3
    for k in range(3):
        assert panels.nth(k).locator("h3").inner_text() == list(race["learners"])[k]
        assert "mistakes per pass" in panels.nth(k).locator("p").inner_text()
    maps = [_png(base64.b64decode(tab.page.evaluate(
        "(k) => document.querySelectorAll('#xor canvas:not(.spark)')[k].toDataURL()", k)
        .split(",", 1)[1])) for k in range(3)]
    assert all(m[..., :3].std() > 0.01 for m in maps)  # painted, not blank

    # a second tab has its own machine, and does not disturb the first
    other = Page(context, server)
    assert other.state("M1.tab") != tab.state("M1.tab")
    assert other.frame()["wired"] is False and other.frame()["trial"] == 0
    other.click("step")
    other.wait("M1.frame.trial === 1")
    assert tab.frame()["trial"] == played["trial"]

    # the screenshot: a page with something on it
    shot = tab.page.screenshot(full_page=True)
    image = _png(shot)
    assert image.shape[0] >= 900 and image.shape[1] == 1500
    assert image[..., :3].std() > 0.05 and len(np.unique(image[::4, ::4, 0])) > 20
    keep = os.environ.get("MARK1_PLAYGROUND_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(shot)

    assert tab.console_errors == [] and other.console_errors == []
    assert tab.state("M1.errors") == [] and other.state("M1.errors") == []
    context.close()
