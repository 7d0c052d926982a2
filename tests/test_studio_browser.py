"""The studio in a real browser (headless Chromium, driven through chromedriver): what an
artist does in it, from opening the printed URL to a draft on (a fake) TikTok."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from fake_tiktok import FakeTikTok
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from test_render_pipeline import write_board
from test_studio import BOARD

from pipeline.studio import Studio

# Where the README's screenshot comes from: FEVERDREAM_STUDIO_SCREENSHOT=docs/studio.png.
SCREENSHOT = os.environ.get("FEVERDREAM_STUDIO_SCREENSHOT")


@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, (
        "the studio's browser tests need Debian's chromium and chromium-driver: "
        "`make setup` installs them (apt-get install chromium chromium-driver)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1300",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def wait(driver, seconds: float, condition, message: str):
    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: condition(d), message)


def test_an_artist_edits_previews_and_posts_a_draft(
    tmp_path: Path, tiny_model_dir, browser, logged_in_tiktok: FakeTikTok
):
    folder = tmp_path / "boards"
    folder.mkdir()
    write_board(folder, BOARD).rename(folder / "dread.yaml")
    studio = Studio.start(folder, outputs=tmp_path / "outputs", models="tiny", device="cpu")
    try:
        driver = browser
        driver.get(studio.url)
        # The token became a cookie: the page's address no longer shows it.
        assert "token" not in driver.current_url
        wait(driver, 20, lambda d: d.find_elements(By.CSS_SELECTOR, "#boards button"), "no boards")
        driver.find_element(By.CSS_SELECTOR, "#boards button[data-board='dread.yaml']").click()
        wait(driver, 30, lambda d: d.find_elements(By.CSS_SELECTOR, "#plot polyline"), "no plot")
        assert "Logged in" in driver.find_element(By.ID, "tiktok-state").text
        before = plot_points(driver)

        # An error, typed: shown at its line (the gutter and the note beside it).
        editor = driver.find_element(By.ID, "text")
        editor.click()
        select_all(driver, editor)
        editor.send_keys(BOARD.replace("zoom: 1.03", "zoom: [1.02"))
        wait(driver, 20, lambda d: visible(d, "error-at-line"), "no error shown")
        note = driver.find_element(By.ID, "error-at-line")
        bad_line = 1 + BOARD.splitlines().index("    zoom: 1.03")
        wrong = driver.find_element(By.CSS_SELECTOR, "#gutter .bad").text
        assert wrong in (str(bad_line), str(bad_line + 1)), (wrong, note.text)
        assert note.text.startswith(f"line {wrong}:") and "YAML" in note.text

        # Fixed, with another motion: the error goes and the plot follows the text.
        select_all(driver, editor)
        editor.send_keys(BOARD.replace("zoom: 1.03", "zoom: 1.03\n    rotate: 2"))
        wait(driver, 20, lambda d: not visible(d, "error-at-line"), "the error stayed")
        wait(driver, 20, lambda d: plot_points(d) != before, "the plot did not change")
        assert "unsaved" in driver.find_element(By.ID, "save-state").text
        driver.find_element(By.ID, "save").click()
        wait(driver, 20, lambda d: d.find_element(By.ID, "save-state").text == "saved", "not saved")
        assert "rotate: 2" in (folder / "dread.yaml").read_text()
        # A click on the plot shows that frame's values.
        plot = driver.find_element(By.ID, "plot")
        webdriver.ActionChains(driver).move_to_element_with_offset(
            plot, plot.size["width"] // 4, 0
        ).click().perform()
        values = driver.find_element(By.ID, "frame-values").text
        assert values.startswith("frame ") and "rotate 2.000°" in values

        # A preview: frames appear as they are made, then a video the browser can play.
        driver.find_element(By.ID, "preview-button").click()
        wait(
            driver,
            120,
            lambda d: visible(d, "newest") and natural_width(d, "newest") > 0,
            "no frame",
        )
        wait(
            driver,
            240,
            lambda d: d.find_element(By.ID, "video").get_attribute("data-can-play") == "yes",
            "the video never became playable",
        )
        assert "TikTok would accept it" in driver.find_element(By.ID, "check").text
        assert visible(driver, "contact") and natural_width(driver, "contact") > 0
        if SCREENSHOT:
            driver.save_screenshot(SCREENSHOT)

        # Posted as a draft to the (fake) TikTok, the status followed to its end.
        driver.find_element(By.ID, "post-button").click()
        wait(
            driver,
            60,
            lambda d: (
                d.find_element(By.ID, "post-log").get_attribute("data-state") in ("done", "failed")
            ),
            "the post never finished",
        )
        log = driver.find_element(By.ID, "post-log").text
        assert driver.find_element(By.ID, "post-log").get_attribute("data-state") == "done", log
        assert "status: SEND_TO_USER_INBOX" in log
        (task,) = logged_in_tiktok.tasks.values()
        video = tmp_path / "outputs" / "dread" / "preview" / "dread.mp4"
        assert task.kind == "inbox" and task.sha256.hexdigest() == sha256(video)
    finally:
        studio.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def visible(driver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def natural_width(driver, element_id: str) -> int:
    return driver.execute_script(
        "return arguments[0].naturalWidth", driver.find_element(By.ID, element_id)
    )


def plot_points(driver) -> list[str]:
    """What the plot draws: its lines and their scales."""
    labels = [text.text for text in driver.find_elements(By.CSS_SELECTOR, "#plot text")]
    return labels + [
        line.get_attribute("points")
        for line in driver.find_elements(By.CSS_SELECTOR, "#plot polyline")
    ]


def select_all(driver, editor) -> None:
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
