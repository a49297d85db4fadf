"""Real headless Chromium for the page tests, driven by Selenium, with JavaScript turned off
(the pages must work without it).

Debian's `chromium` and `chromium-driver` are installed with apt-get when missing (CI is a fresh
Debian machine, run as root); nothing is downloaded by Selenium (its driver manager is bypassed
by naming the driver). Screenshots of whole pages go to `test-artifacts/screenshots/`; files the
pages send as downloads go to the browser's `downloads` folder (a temp folder of its own).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.server import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
PACKAGES = ("chromium", "chromium-driver")
DESKTOP = (1280, 900)
PHONE = (390, 844)  # CSS pixels of a common phone
PAGE_LOAD_SECS = 20
# Chromium lays a page out at least this wide, whatever the window size.
MIN_WINDOW_WIDTH = 500
DOWNLOAD_SECS = 120
# Chromium names a download in progress `<name>.crdownload`.
PARTIAL_SUFFIX = ".crdownload"


def ensure_chromium() -> None:
    """Install Debian's Chromium and its driver if they are missing (apt-get, as root)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"Chromium is needed: install the Debian packages {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)


def replaced(element: WebElement) -> bool:
    """Whether the element's page has been replaced by another. Chromium answers "stale", or,
    asked while the new page is being put in place, that the node "does not belong to the
    document"; both mean the old page is gone."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


class Browser:
    def __init__(self, size: tuple[int, int], name: str) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={size[0]},{size[1]}", "--force-device-scale-factor=1",
                     "--no-first-run", "--disable-extensions"):
            options.add_argument(flag)
        self.downloads = Path(tempfile.mkdtemp(prefix=f"chromium-{name}-downloads-"))
        options.add_experimental_option("prefs", {
            "profile.managed_default_content_settings.javascript": 2,
            "download.default_directory": str(self.downloads), "download.prompt_for_download": False})
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(self.downloads)})
        if size[0] < MIN_WINDOW_WIDTH:  # a window can't be that narrow: emulate the phone's screen
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": True})
        self.size = size
        self.name = name

    def open(self, url: str) -> None:
        self.driver.get(url)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    @property
    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def title(self) -> str:
        return str(self.driver.title)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def fill(self, form: str, **fields: str) -> None:
        for name, value in fields.items():
            box = self.find(f"{form} [name={name}]")
            box.clear()
            box.send_keys(value)

    def submit(self, form: str, **fields: str) -> None:
        """Fill the form's fields and press its submit button, as a person would."""
        self.fill(form, **fields)
        self.click(self.find(f"{form} button[type=submit]"))

    def click(self, element: WebElement) -> None:
        """Click a link or button and wait until the next page has replaced this one."""
        old_page = self.driver.find_element(By.TAG_NAME, "html")
        element.click()
        WebDriverWait(self.driver, PAGE_LOAD_SECS).until(lambda driver: replaced(old_page))
        WebDriverWait(self.driver, PAGE_LOAD_SECS).until(
            lambda driver: driver.execute_cdp_cmd("Runtime.evaluate", {"expression": "document.readyState"})
            ["result"]["value"] == "complete")

    def download(self, element: WebElement) -> Path:
        """Click a link that downloads a file; the file, once Chromium has saved all of it."""
        before = set(self.downloads.iterdir())
        element.click()
        deadline = time.monotonic() + DOWNLOAD_SECS
        while time.monotonic() < deadline:
            done = [p for p in set(self.downloads.iterdir()) - before if not p.name.endswith(PARTIAL_SUFFIX)]
            partial = [p for p in self.downloads.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]
            if done and not partial:
                [path] = done
                return path
            time.sleep(0.1)
        raise TimeoutError(f"no download finished in {DOWNLOAD_SECS} s: {sorted(self.downloads.iterdir())}")

    def screenshot(self, name: str) -> Path:
        """The whole page (beyond the window) as `test-artifacts/screenshots/<name>.png`."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        content = metrics["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": self.size[0], "height": max(content["height"], 200), "scale": 1}
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": clip})
        path = SCREENSHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def horizontal_overflow(self) -> float:
        """How many CSS pixels the page is wider than the window (0: nothing to scroll sideways)."""
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        return float(metrics["cssContentSize"]["width"] - metrics["cssLayoutViewport"]["clientWidth"])

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.downloads, ignore_errors=True)
