"""A real headless Chromium for the browser tests: Debian's chromium and chromium-driver (scripts/setup.sh installs
them), driven by selenium. Without them the tests skip, naming what is missing, except under CI (CI=true), where
they fail: there the browser tests must run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1024")


def require_chromium() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    reason = (f"no {' and no '.join(missing)}: install Debian's chromium and chromium-driver "
              "(bash scripts/setup.sh does) to run the browser tests")
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def headless_chromium(profile: Path) -> Iterator[Any]:
    """A selenium WebDriver of a fresh headless Chromium (its own profile in `profile`), console logs kept."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """Console errors and failed loads the page logged since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


# Loads an <audio> element's metadata (players are preload="none") and hands back its duration in seconds, or the
# media error code when the browser cannot decode it.
AUDIO_DURATION_SCRIPT = """
const [audio, done] = [arguments[0], arguments[arguments.length - 1]];
audio.addEventListener("loadedmetadata", () => done(audio.duration), {once: true});
audio.addEventListener("error", () => done("media error " + (audio.error && audio.error.code)), {once: true});
audio.preload = "metadata";
audio.load();
"""
