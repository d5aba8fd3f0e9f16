"""The try-it page of a real `bgmrec serve`, used in a real headless Chromium: a video uploaded on the page comes
back as k ranked music with players that play the catalog's previews."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest
from browser import AUDIO_DURATION_SCRIPT, console_errors, headless_chromium

from bgmrec.previews import catalog_previews_step

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READY_TIMEOUT_S = 180
ANSWER_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def page_server(music_world, start_server, tmp_path_factory) -> str:
    """`bgmrec serve` on a copy of the world's registry (production VMCML over real tones) with the catalog's
    previews written beside it; the base URL once /readyz answers."""
    import shutil

    root = tmp_path_factory.mktemp("page")
    registry = Path(shutil.copytree(music_world.registry_dir, root / "registry"))
    written = catalog_previews_step(music_world.dataset_dir, registry)
    assert written["written"] == len(music_world.music_ids), written
    env = {**os.environ, "BENTOML_HOME": str(root / "bentoml_home"), "BGMREC_MONITOR_INTERVAL_S": "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = start_server([str(Path(sys.executable).parent / "bgmrec"), "serve", "--registry", str(registry)],
                          env, root / "serve.log")
    try:
        yield server.wait_ready(READY_TIMEOUT_S)
    finally:
        server.stop()


def test_previews_are_served_and_unknown_music_is_named(page_server, music_world):
    preview = httpx.get(f"{page_server}/try/audio/{music_world.music_ids[0]}", timeout=10)
    assert preview.status_code == 200 and preview.headers["content-type"] == "audio/mpeg"
    assert len(preview.content) > 1000
    missing = httpx.get(f"{page_server}/try/audio/no%2Fsuch", timeout=10)
    assert missing.status_code == 404
    assert missing.json() == {"error": "music 'no/such' is not in the catalog"}
    assert httpx.get(f"{page_server}/try", timeout=10, follow_redirects=True).text.startswith("<!DOCTYPE html>")


def _ask(browser, video: Path, k: int, description: str = "") -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element("id", "video").send_keys(str(video))
    browser.find_element("id", "description").send_keys(description)
    amount = browser.find_element("id", "k")
    amount.clear()
    amount.send_keys(str(k))
    browser.find_element("id", "submit").click()
    WebDriverWait(browser, ANSWER_TIMEOUT_S).until(
        lambda page: page.find_element("id", "submit").is_enabled() and page.find_element("id", "status").text
    )


def test_an_uploaded_video_gets_k_ranked_music_with_players(page_server, clip_writer, tmp_path):
    video = clip_writer(tmp_path / "my clip.mp4", 200, seconds=1.5)
    with headless_chromium(tmp_path / "profile") as browser:
        browser.get(f"{page_server}/try/")
        _ask(browser, video, 4)
        status = browser.find_element("id", "status").text
        assert status.startswith("4 music from catalog version"), status
        items = browser.find_elements("css selector", "#results li")
        assert len(items) == 4
        scores = [float(item.find_element("css selector", ".score").text.split()[-1]) for item in items]
        assert scores == sorted(scores, reverse=True)
        players = [item.find_element("css selector", "audio") for item in items]
        assert all(p.get_attribute("src").startswith(f"{page_server}/try/audio/") for p in players)
        assert browser.execute_async_script(AUDIO_DURATION_SCRIPT, players[0]) > 0.5
        assert console_errors(browser) == []


def test_a_refused_upload_is_explained_on_the_page(page_server, tmp_path):
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("these are notes, not a video")
    with headless_chromium(tmp_path / "profile") as browser:
        browser.get(f"{page_server}/try")  # without the slash: redirected to /try/
        _ask(browser, not_a_video, 3)
        status = browser.find_element("id", "status")
        assert "refused the video (400)" in status.text and "could not be decoded" in status.text
        assert status.get_attribute("class") == "error"
        assert browser.find_elements("css selector", "#results li") == []



def test_a_description_goes_to_a_model_that_reads_no_text_without_harm(page_server, clip_writer, tmp_path):
    """The test model was trained without text vectors: an upload's description is left out, not an error."""
    video = clip_writer(tmp_path / "clip.mp4", 120, seconds=1.0)
    with video.open("rb") as f:
        r = httpx.post(f"{page_server}/recommend_by_upload", files={"video": ("clip.mp4", f, "video/mp4")},
                       data={"description": "a walk on the beach", "k": "3"}, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 3
