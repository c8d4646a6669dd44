"""The playground page in a real headless Chromium, against a real uvicorn server on loopback.

Needs Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`) and
the `selenium` package; skipped with the reason where any is missing. Saves a screenshot of the
page with a prediction to a temporary folder, or to $PROMPTMUX_SCREENSHOT when set (the one in
bench/results/playground.png was made with PROMPTMUX_SCREENSHOT=bench/results/playground.png), so
that running the suite changes no tracked file.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The tiny-bundle helpers live with the unit tests; this module may run on its own.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from serve_support import live_server, train_bundle  # noqa: E402

from promptmux.serve.predictor import Predictor  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1000,1100",
]

if CHROMIUM is None or DRIVER is None:
    pytest.skip("Chromium or its driver is not installed (apt-get install -y chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import torch

    torch.set_num_threads(1)
    predictor = Predictor.from_pretrained(train_bundle(tiny_backbone, tmp_path_factory.mktemp("browser")))
    with live_server(predictor) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def predict_with(driver: Any, task: str, text: str, text_b: str | None = None) -> Any:
    """Pick `task`, type the text(s), click Predict; returns the result element once filled."""
    Select(driver.find_element(By.ID, "task")).select_by_value(task)
    for field, value in (("text", text), ("text_b", text_b)):
        if value is not None:
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
    old = driver.find_element(By.ID, "raw").get_attribute("textContent")
    driver.find_element(By.ID, "predict").click()
    wait = WebDriverWait(driver, 20)
    wait.until(lambda d: d.find_element(By.ID, "raw").get_attribute("textContent") not in ("", old))
    wait.until(ec.element_to_be_clickable((By.ID, "predict")))
    return driver.find_element(By.ID, "result")


def test_playground_predicts_every_task_type(server: str, browser: Any, tmp_path: Path) -> None:
    browser.get(f"{server}/")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    options = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "task")).options]
    assert options == ["sentiment", "pair", "score", "ner"]

    result = predict_with(browser, "pair", "the film was long", "it was awful")
    assert browser.find_element(By.ID, "pair-box").is_displayed()
    assert result.find_element(By.CLASS_NAME, "big").text in ("no", "yes")

    result = predict_with(browser, "score", "the plot was great")
    assert not browser.find_element(By.ID, "pair-box").is_displayed()
    assert result.find_element(By.CLASS_NAME, "big").text.startswith("value ")

    result = predict_with(browser, "ner", "john works in paris city")
    words = [t.text.split("\n")[0] for t in result.find_elements(By.CLASS_NAME, "tok")]
    assert words == ["john", "works", "in", "paris", "city"]

    result = predict_with(browser, "sentiment", "the movie was great fun, the best this year")
    assert result.find_element(By.CLASS_NAME, "big").text in ("negative", "positive")
    assert len(result.find_elements(By.CLASS_NAME, "bar")) == 2  # a bar per label, with probabilities
    assert not browser.find_element(By.ID, "error").is_displayed()
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe
    shot = Path(os.environ.get("PROMPTMUX_SCREENSHOT") or tmp_path / "playground.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_playground_shows_the_servers_error(server: str, browser: Any) -> None:
    browser.get(f"{server}/")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    predict_with(browser, "sentiment", "   ")
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert "HTTP 422" in error.text and "items[0].text: empty text" in error.text


def test_api_docs_render_without_internet(server: str, browser: Any) -> None:
    from promptmux.serve.app import swagger_ui_assets

    if swagger_ui_assets() is None:
        pytest.skip("swagger-ui-bundle-v2 is not installed: /docs loads Swagger UI from a CDN")
    browser.get(f"{server}/docs")
    paths = WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CLASS_NAME, "opblock-summary-path"))
    assert {"/v1/predict", "/v1/tasks", "/healthz", "/metrics"} <= {p.text.replace("\u200b", "") for p in paths}
