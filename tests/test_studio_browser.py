"""The studio in a real browser (headless Chromium, driven through chromedriver): what an
artist does in it, from opening the printed URL to a draft on (a fake) TikTok."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest
from fake_tiktok import FakeTikTok
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_render_pipeline import write_board
from test_studio import BOARD

from pipeline.studio import Studio

# Where the README's screenshot comes from: FEVERDREAM_STUDIO_SCREENSHOT=docs/studio.png.
SCREENSHOT = os.environ.get("FEVERDREAM_STUDIO_SCREENSHOT")
# The library's test storyboard, titled as an artist would.
DREAD = BOARD.replace("title: pipeline test", "title: dread, slowly")


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
    tmp_path: Path, tiny_model_dir, browser, logged_in_tiktok: FakeTikTok, monkeypatch
):
    # A folder as an artist's (the README's screenshot shows it): ~/videos/storyboards.
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "videos" / "storyboards"
    folder.mkdir(parents=True)
    write_board(folder, DREAD).rename(folder / "dread.yaml")
    studio = Studio.start(folder, outputs=tmp_path / "outputs", models="tiny", device="cpu")
    try:
        driver = browser
        driver.get(studio.url)
        # The token became a cookie: the page's address no longer shows it.
        assert "token" not in driver.current_url
        wait(driver, 20, lambda d: d.find_elements(By.CSS_SELECTOR, "#boards button"), "no boards")
        assert text(driver, "folder") == "~/videos/storyboards"
        driver.find_element(By.CSS_SELECTOR, "#boards button[data-board='dread.yaml']").click()
        wait(driver, 30, lambda d: d.find_elements(By.CSS_SELECTOR, "#plot polyline"), "no plot")
        assert "Logged in" in driver.find_element(By.ID, "tiktok-state").text
        before = plot_points(driver)

        # An error, typed: shown at its line (the gutter and the note beside it).
        editor = driver.find_element(By.ID, "text")
        editor.click()
        select_all(driver, editor)
        editor.send_keys(DREAD.replace("zoom: 1.03", "zoom: [1.02"))
        wait(driver, 20, lambda d: visible(d, "error-at-line"), "no error shown")
        note = driver.find_element(By.ID, "error-at-line")
        bad_line = 1 + DREAD.splitlines().index("    zoom: 1.03")
        wrong = driver.find_element(By.CSS_SELECTOR, "#gutter .bad").text
        assert wrong in (str(bad_line), str(bad_line + 1)), (wrong, note.text)
        assert note.text.startswith(f"line {wrong}:") and "YAML" in note.text
        # The note sits on the bad line, after its text: every other line stays readable.
        line, words, box = rects(driver, "#bad-line", "#bad-line span", "#error-at-line")
        assert line["top"] - 0.5 <= box["top"] and box["bottom"] <= line["bottom"] + 0.5
        assert box["left"] >= words["right"], (words, box)
        # The plan beside it is the last valid text's, greyed and said to be out of date.
        assert "stale" in driver.find_element(By.ID, "plan").get_attribute("class")
        assert float(driver.find_element(By.ID, "plot").value_of_css_property("opacity")) < 0.5
        assert "out of date" in driver.find_element(By.ID, "summary").text

        # Fixed, with another motion: the error goes and the plot follows the text.
        select_all(driver, editor)
        editor.send_keys(DREAD.replace("zoom: 1.03", "zoom: 1.03\n    rotate: 2"))
        wait(driver, 20, lambda d: not visible(d, "error-at-line"), "the error stayed")
        assert "stale" not in driver.find_element(By.ID, "plan").get_attribute("class")
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
        # What TikTok would say: the file's summary line by line, then the verdict.
        said = text(driver, "check").split("\n")
        assert said[0] == "dread/preview/dread.mp4" and "540x960" in said[2], said
        assert said[-1] == "TikTok would accept it." and len(said) == 6, said
        assert visible(driver, "contact") and natural_width(driver, "contact") > 0
        # Its time, measured, as the plan's estimate now counts it.
        assert "its frames took" in driver.find_element(By.ID, "job-message").text
        assert driver.find_element(By.ID, "progress-text").text.endswith("preview: done")
        wait(driver, 20, lambda d: "measured here" in d.find_element(By.ID, "estimate").text,
             "the plan's estimate did not take the time measured")  # fmt: skip
        if SCREENSHOT:
            time.sleep(1)  # Chromium's loading spinner over the video fades after canplay
            driver.save_screenshot(SCREENSHOT)

        # A draft takes no caption (TikTok's inbox upload has none): the page says so, and
        # the post's log gives it back to paste in the app.
        caption = driver.find_element(By.ID, "caption")
        caption.send_keys("a red circle becomes a blue square #feverdream")
        assert visible(driver, "caption-note") and "without its caption" in caption_note(driver)
        assert not driver.find_element(By.ID, "privacy").is_enabled()
        driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=direct]").click()
        assert not visible(driver, "caption-note")
        assert driver.find_element(By.ID, "privacy").is_enabled()
        driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=draft]").click()

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
        assert "paste it there: a red circle becomes a blue square #feverdream" in log
        (task,) = logged_in_tiktok.tasks.values()
        video = tmp_path / "outputs" / "dread" / "preview" / "dread.mp4"
        assert task.kind == "inbox" and task.sha256.hexdigest() == sha256(video)

        # The 3D camera, typed: the plot shows its keys (and drops the 2D ones, unused now).
        select_all(driver, editor)
        editor.send_keys(DREAD.replace("zoom: 1.03", "translate: [1, 0, 0.02]\n    fov: 50"))
        wait(driver, 20, lambda d: "translate z /frame" in plot_labels(d), "no 3D panels")
        labels = plot_labels(driver)
        assert "rotate_3d °/frame" in labels and "fov °" in labels and "zoom" not in labels
        webdriver.ActionChains(driver).move_to_element_with_offset(
            plot, plot.size["width"] // 4, 0
        ).click().perform()
        values = driver.find_element(By.ID, "frame-values").text
        assert "translate 1.000, 0.000, 0.020" in values and "fov 50.0°" in values, values
    finally:
        studio.close()


def test_a_newcomer_is_told_what_a_download_costs_and_offered_the_shapes_models(
    tmp_path: Path, browser, monkeypatch
):
    # No TikTok login, the storyboards' own models: a first visit to the studio.
    folder = tmp_path / "storyboards"
    folder.mkdir()
    studio = Studio.start(folder, outputs=tmp_path / "outputs", device="cpu")
    try:
        driver = browser
        driver.get(studio.url)
        wait(driver, 20, lambda d: "login" in text(d, "tiktok-state")
             and "checking" not in text(d, "tiktok-state"), "no word of the login")  # fmt: skip
        # Logged out, nothing in the post form can be used.
        post = driver.find_elements(By.CSS_SELECTOR, "#post :is(input, select, textarea, button)")
        assert len(post) == 5 and not any(control.is_enabled() for control in post)

        # The first click: a storyboard from the shapes example, which downloads nothing.
        create(driver, "first")
        wait(driver, 30, lambda d: d.find_elements(By.CSS_SELECTOR, "#plot polyline"), "no plot")
        assert not visible(driver, "needs")
        assert "not measured here yet" in text(driver, "estimate")

        # The real models' example says what its first render downloads before it does.
        Select(driver.find_element(By.ID, "new-from")).select_by_value("example:real")
        create(driver, "real")
        wait(driver, 30, lambda d: visible(d, "needs"), "no word of the download")
        needs = text(driver, "needs-text").split("\n")
        assert needs[1:3] == [
            "• vqgan_imagenet_f16_16384 (VQGAN), about 980 MB",
            "• ViT-B/32 (CLIP), about 338 MB",
        ], needs
        assert needs[3].startswith("1.3 GB, downloaded once")
        assert "`feverdream bench --storyboard real.yaml`" in needs[4]

        # Offline, the download fails in one line with the command, the addresses folded.
        for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(name, "http://127.0.0.1:9")
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.setenv(name, "127.0.0.1,localhost")
        driver.find_element(By.ID, "preview-button").click()
        alert = WebDriverWait(driver, 10).until(lambda d: d.switch_to.alert)
        assert "1.3 GB" in alert.text
        alert.accept()
        wait(driver, 60, lambda d: "failed" in text(d, "progress-text"), "it did not fail")
        what, command = text(driver, "job-message").split("\n")
        assert what.startswith("could not download vqgan_imagenet_f16_16384")
        assert "feverdream models download" in command
        details = driver.find_element(By.ID, "job-details")
        assert details.is_displayed() and details.get_attribute("open") is None
        section = driver.find_element(By.ID, "render")
        assert driver.execute_script(
            "return arguments[0].scrollWidth <= arguments[0].clientWidth", section
        )

        # The way out: the shapes models, as an edit of the text the artist sees.
        driver.find_element(By.ID, "use-shapes").click()
        assert "models:\n  vqgan: shapes\n  clip: shapes\nkeyframes:" in editor_text(driver)
        wait(driver, 20, lambda d: not visible(d, "needs"), "still asks for the download")
        assert driver.find_element(By.ID, "save-state").text == "unsaved"
    finally:
        studio.close()


def create(driver, name: str) -> None:
    """A new storyboard from the New form."""
    driver.find_element(By.ID, "new-name").send_keys(name)
    driver.find_element(By.CSS_SELECTOR, "#new-form button").click()
    wait(driver, 20, lambda d: d.find_element(By.ID, "board-name").text == f"{name}.yaml",
         f"{name}.yaml not opened")  # fmt: skip


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def editor_text(driver) -> str:
    return driver.find_element(By.ID, "text").get_attribute("value")


def caption_note(driver) -> str:
    return driver.find_element(By.ID, "caption-note").text


def rects(driver, *selectors: str) -> list[dict]:
    """Where elements are drawn on the page (their bounding boxes)."""
    return driver.execute_script(
        "return arguments[0].map((s) => document.querySelector(s).getBoundingClientRect()"
        ".toJSON())",
        list(selectors),
    )


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


def plot_labels(driver) -> list[str]:
    """The plot's words and numbers, read at once (the page may be drawing it anew)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#plot text')].map((t) => t.textContent)"
    )


def select_all(driver, editor) -> None:
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
