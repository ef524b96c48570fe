"""`sgone app` end to end in a real headless Chromium (Debian's, driven by selenium).

The app runs as `sgone app` in a subprocess on a free loopback port. The tests click the
bundled example, run it and compare the downloaded mask with the Predictor's own result; a
broken query file must come back as one sentence on the page while the app keeps serving.
Without a browser the tests skip locally and fail in CI (CI=true).

SGONE_APP_SCREENSHOT=path saves a screenshot of the page with its results (docs/img/app.png).
"""
from __future__ import annotations

import importlib.util
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import missing

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1700")
START_TIMEOUT = 90  # model-free start of the server; the first run loads the model
RUN_TIMEOUT = 60


def _missing() -> str | None:
    for module in ("selenium", "gradio"):
        if importlib.util.find_spec(module) is None:
            return f"python package {module} is not installed (pip install -e '.[dev,app]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


def _require_browser() -> None:
    """Skip locally, fail in CI: a browser test that silently skips there tests nothing."""
    reason = _missing()
    if reason is not None:
        missing(f"browser test cannot run: {reason}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """(base url, process) of `sgone app` on a free loopback port; stopped with SIGINT afterwards."""
    _require_browser()
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "sgone.cli", "app", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    lines = []
    url = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "open http://" in line:
            url = line.split("open ", 1)[1].split()[0]
            break
    if url is None:
        proc.kill()
        pytest.fail("sgone app did not start:\n" + "".join(lines))
    assert url == f"http://127.0.0.1:{port}/"
    yield url, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="sgone-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#run-button")))


def _wait(driver, condition, timeout=RUN_TIMEOUT, what=""):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: condition(d))
    except Exception:
        from selenium.webdriver.common.by import By

        message = driver.find_element(By.CSS_SELECTOR, "#message").text
        pytest.fail(f"timed out waiting for {what}; page message: {message!r}")


def _text(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector).text.replace("\n.", ".")  # file lists break names


def _mask_links(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#mask-files a")
            if a.get_attribute("href")]


def test_broken_query_is_one_sentence_and_the_app_keeps_serving(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, proc = server
    _open(browser, url)
    broken = tmp_path / "holiday.jpg"
    broken.write_bytes(b"this is not a JPEG file")
    browser.find_element(By.CSS_SELECTOR, "#query-files input[type=file]").send_keys(str(broken))
    _wait(browser, lambda d: "holiday.jpg" in _text(d, "#query-files"), 30, "the upload")
    browser.find_element(By.CSS_SELECTOR, "#run-button").click()
    message = _wait(browser, lambda d: "Error" in _text(d, "#message") and _text(d, "#message"),
                    what="the error message")
    assert "holiday.jpg" in message and "not an image" in message
    assert "\n" not in message.strip() and "Traceback" not in browser.page_source
    assert _mask_links(browser) == []
    assert proc.poll() is None  # still serving


def test_example_mask_matches_the_predictor(server, browser):
    from selenium.webdriver.common.by import By

    from sgone.samples import sample_paths
    from sgone.io import read_image, read_mask
    from sgone.predictor import Predictor

    url, proc = server
    _open(browser, url)
    browser.find_element(By.CSS_SELECTOR, "#example-0").click()
    _wait(browser, lambda d: "query.jpg" in _text(d, "#query-files"), 30, "the example to load")
    browser.find_element(By.CSS_SELECTOR, "#run-button").click()
    links = _wait(browser, _mask_links, what="the mask download")
    assert len(links) == 1 and urllib.parse.urlparse(links[0]).hostname == "127.0.0.1"
    with urllib.request.urlopen(links[0], timeout=30) as response:
        mask = np.asarray(Image.open(io.BytesIO(response.read())))

    paths = sample_paths()
    query = read_image(paths["query"])
    predictor = Predictor()  # the app's default model, size and threshold
    predictor.set_support([read_image(paths["support"])], [read_mask(paths["support_mask"])])
    expected = predictor.predict(query).mask == 1
    assert mask.shape == query.shape[:2] and set(np.unique(mask)) <= {0, 255}
    got = mask == 255
    iou = (got & expected).sum() / max((got | expected).sum(), 1)
    assert iou > 0.99, f"IoU {iou:.4f} between the page's mask and the Predictor's"
    assert "Segmented 1 image" in _text(browser, "#message")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#overlays img")) >= 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#archive a")) == 1

    # offline: every resource the page loaded came from the app itself
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    hosts = {urllib.parse.urlparse(r).hostname for r in resources if not r.startswith(("data:", "blob:"))}
    assert hosts <= {"127.0.0.1"}, f"the page fetched from {hosts - {'127.0.0.1'}}"

    shot = os.environ.get("SGONE_APP_SCREENSHOT")
    if shot:
        browser.execute_script("window.scrollTo(0, 0)")
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(shot)
        with Image.open(shot) as im:  # 256 colours: a third of the size, same look
            small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
        small.save(shot, optimize=True)

    # temporary files live under one folder that goes away when the app stops
    workdir = Path(urllib.parse.unquote(urllib.parse.urlparse(links[0]).path.split("file=", 1)[1])).parents[2]
    assert workdir.name.startswith("sgone-app-") and workdir.is_dir()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert not workdir.exists()


def test_a_missing_browser_fails_under_ci_and_skips_locally(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="browser test cannot run: /nonexistent/chromium not found"):
        _require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/chromium not found"):
        _require_browser()
