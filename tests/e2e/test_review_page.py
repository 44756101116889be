"""The review page in headless Chromium (Debian's), against a real plate reader with real
pending items: correct one with the keyboard, mark one "not a plate", and check the store."""

from __future__ import annotations

import httpx
import pytest

from tests.ci_tools import chromedriver, missing_tool
from tests.reviews import recorded_reviews
from tests.scenes import plate_on_street

pytestmark = pytest.mark.slow
try:
    from selenium import webdriver
except ImportError:
    missing_tool("pip install selenium (modelport[dev])")


def test_correct_a_reading_with_the_keyboard(plate_server: str) -> None:
    driver = chromedriver()
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    # Two unsure readings from one camera: the queue this page works through.
    for at in ((300, 700), (200, 600)):  # two photos: the same one again would be skipped
        hard = plate_on_street(plate_asset="plate_krw301", at=at)
        httpx.post(
            f"{plate_server}/v1/plate-reader",
            files={"upload": hard.jpeg},
            data={"camera_id": "page-test"},
            timeout=30,
        ).raise_for_status()
    pending = recorded_reviews(plate_server, count=2, status="pending", camera_id="page-test")
    ours = [i["id"] for i in pending if i["camera_id"] == "page-test"]
    assert len(ours) == 2
    read_as = {i["id"]: i["plate"] for i in pending}

    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=412,915",
    ):  # a phone's screen
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.get(f"{plate_server}/review")
        wait = WebDriverWait(browser, 30)
        field = wait.until(
            lambda b: b.find_element(By.ID, "plate").get_attribute("value") and b.find_element(By.ID, "plate")
        )
        assert "left" in browser.find_element(By.ID, "left").text
        wait.until(
            lambda b: b.execute_script(
                "const i = document.getElementById('crop'); return i.complete && i.naturalWidth > 0"
            )
        )
        # Work through the queue until our items come up: oldest first, earlier tests' items too.
        decided: dict[str, str] = {}
        while len(decided) < 2:
            item_id = browser.execute_script("return current && current.id")
            assert item_id, "the queue ended before our items came up"
            if item_id not in ours:
                browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE, "s")  # skip others'
            elif not decided:
                field.send_keys(Keys.CONTROL, "a")
                field.send_keys("KRW301", Keys.ENTER)  # the right text, typed, Enter
                # The same text as read confirms the reading; another corrects it (PP-OCRv4 read
                # this plate right but unsure, PP-OCRv6 reads KRN301, flagged). Confirming over
                # HTTP whatever was read: test_review_queue.py.
                decided[item_id] = "confirmed" if read_as[item_id] == "KRW301" else "corrected"
            else:
                field.send_keys(Keys.ESCAPE)
                browser.find_element(By.TAG_NAME, "body").send_keys("x")  # not a plate
                decided[item_id] = "not_a_plate"
            wait.until(lambda b, before=item_id: b.execute_script("return !current || current.id") != before)
    finally:
        browser.quit()
    for item_id, decision in decided.items():
        item = httpx.get(f"{plate_server}/v1/reviews/{item_id}").json()
        assert item["status"] == "done" and item["decision"] == decision
        if decision != "not_a_plate":
            assert item["corrected_plate"] == "KRW301"
