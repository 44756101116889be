"""The as-you-type example page in headless Chromium: type, see the ghost suggestion, Tab."""

from __future__ import annotations

import importlib.util
import math
import re
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.ci_tools import chromedriver, missing_tool
from tests.servers import REPO, free_port

pytestmark = pytest.mark.slow
try:
    from selenium import webdriver
except ImportError:
    missing_tool("pip install selenium (modelport[dev])")


@pytest.fixture(scope="module")
def page_url(tiny_server: str) -> Iterator[str]:
    spec = importlib.util.spec_from_file_location(
        "autocomplete_web", REPO / "examples" / "autocomplete_web" / "serve.py"
    )
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    port = free_port()
    server = example.make_server(port, tiny_server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}/"
    server.shutdown()


def test_type_see_the_suggestion_and_accept_it_with_tab(page_url: str, tiny_server: str) -> None:
    driver = chromedriver()
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.get(page_url)
        textarea = browser.find_element(By.ID, "text")
        textarea.send_keys("The weather today")
        ghost = WebDriverWait(browser, 30).until(
            lambda b: (
                b.find_element(By.ID, "suggestion").text.strip()
                and b.find_element(By.ID, "suggestion").get_attribute("textContent")
            )
        )
        assert browser.find_element(By.ID, "suggestion").value_of_css_property(
            "color"
        ) != textarea.value_of_css_property("color")  # grey ghost text, not typed text
        assert browser.find_element(By.ID, "savings").text == "17 characters in 17 keystrokes: 0 saved (0%)"
        textarea.send_keys(Keys.TAB)
        assert textarea.get_attribute("value") == "The weather today" + ghost
        # The counter: Tab wrote the suggestion's characters for one keystroke.
        written, saved = 17 + len(ghost), len(ghost) - 1
        percent = math.floor(100 * saved / written + 0.5)  # JavaScript's Math.round
        assert browser.find_element(By.ID, "savings").text == (
            f"{written} characters in 18 keystrokes: {saved} saved ({percent}%)"
        )
        assert browser.find_element(By.ID, "status").text.startswith("tiny-gpt2")
        # The page reports the same counts to the server (every 10 s; now, as when it is hidden),
        # which adds them up per user and model on /metrics.
        before = _savings_metrics(tiny_server)
        browser.execute_script("report()")
        expected = [17, 1, len(ghost)]  # typed by hand, suggestions taken, characters they wrote
        WebDriverWait(browser, 30).until(
            lambda _: [a - b for a, b in zip(_savings_metrics(tiny_server), before)] == expected
        )
    finally:
        browser.quit()


def _savings_metrics(url: str) -> list[float]:
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    found = []
    for name in ("typed_chars", "accepted", "accepted_chars"):
        match = re.search(rf'^modelport_suggest_{name}_total\{{[^}}]*user=""[^}}]*\}} (\S+)$', metrics, re.M)
        found.append(float(match.group(1)) if match else 0.0)
    return found
