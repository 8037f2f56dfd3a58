"""The browser page in headless Debian Chromium: fake camera (a test pattern, no face) and a real speech
recording as the microphone, streamed by WHIP to a real server inside a network namespace; the test reads
what the page renders and ends the session from the keyboard."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from depscreen.localserver import LocalServer, start_local_server

from .conftest import FIXTURES
from .netns import PEER_FLAGS, NetworkNamespace, idle_health, namespaces_available

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
UNAVAILABLE = namespaces_available() or (
    None if CHROMIUM.exists() and CHROMEDRIVER.exists() else "needs Debian chromium and chromium-driver (make test)"
)
pytestmark = [pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""), pytest.mark.slow]

SENTENCES_WANTED = 2
INTERVAL_SHOWN = r"not enough speech yet|none \(the model has no interval calibration\)|\d+% interval \d+%–\d+%"
"""The page's interval: why there is none yet, or the nominal level and the bounds."""
RENDER_DEADLINE_S = 120.0
"""Longest wait for the page to show the sentences (or the summary): generous for a loaded CI machine."""


@dataclass
class PageSeen:
    """What the page showed while live and after Stop."""

    title: str
    before: str
    live_connection: str
    transcript: list[str]
    probability: str
    interval: str
    modalities: list[str]
    symptom_count: int
    chart_points: int
    summary: str
    ended_connection: str
    console_errors: list[str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NetworkNamespace, LocalServer]]:
    log_path = tmp_path_factory.mktemp("browser-server") / "server.log"
    with NetworkNamespace() as namespace, log_path.open("w") as log:
        local = namespace.run(start_local_server, "--device", "cpu", *PEER_FLAGS, output=log)
        try:
            yield namespace, local
        finally:
            local.stop()


def speech_wav(path: Path) -> Path:
    """jfk.flac as the 48 kHz mono 16-bit WAV that Chromium's fake audio capture reads."""
    with av.open(str(FIXTURES / "jfk.flac")) as source, av.open(str(path), "w") as target:
        stream = target.add_stream("pcm_s16le", rate=48_000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
        for frame in source.decode(audio=0):
            for out in resampler.resample(frame):
                target.mux(stream.encode(out))
        for out in resampler.resample(None):
            target.mux(stream.encode(out))
        target.mux(stream.encode(None))
    return path


def drive_page(url: str, wav: Path, profile: Path) -> PageSeen:
    """Open the page, start from the keyboard, wait for sentences, stop, wait for the summary."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}", "--window-size=1280,1400",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.get(url)
        text = lambda element_id: driver.find_element(By.ID, element_id).text  # noqa: E731
        before = text("connection")
        driver.find_element(By.ID, "start").send_keys(Keys.ENTER)
        wait = WebDriverWait(driver, RENDER_DEADLINE_S, poll_frequency=0.5)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript li")) >= SENTENCES_WANTED)
        seen = {
            "live_connection": text("connection"),
            "transcript": [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#transcript li")],
            "probability": text("probability"),
            "interval": text("interval"),
            "modalities": [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#modalities li")],
            "symptom_count": len(driver.find_elements(By.CSS_SELECTOR, "#symptoms li [role=meter]")),
            "chart_points": len(driver.find_elements(By.CSS_SELECTOR, "#chart-points circle")),
        }
        driver.find_element(By.ID, "stop").send_keys(Keys.ENTER)
        wait.until(lambda d: d.find_element(By.ID, "summary-section").is_displayed())
        wait.until(lambda d: d.find_element(By.ID, "connection").text == "ended")
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        return PageSeen(
            title=driver.title,
            before=before,
            summary=text("summary"),
            ended_connection=text("connection"),
            console_errors=errors,
            **seen,
        )
    finally:
        driver.quit()


@pytest.mark.e2e
def test_page_streams_camera_and_microphone_and_renders_live_updates(
    served: tuple[NetworkNamespace, LocalServer], tmp_path: Path
) -> None:
    namespace, server = served
    wav = speech_wav(tmp_path / "jfk.wav")
    seen = namespace.run(drive_page, f"{server.http_url}/", wav, tmp_path / "profile")
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)

    assert seen.title.startswith("depscreen")
    assert seen.before == "not started" and seen.live_connection == "live"
    assert len(seen.transcript) >= SENTENCES_WANTED
    assert seen.chart_points >= SENTENCES_WANTED
    words = " ".join(seen.transcript).lower()
    assert any(word in words for word in ("fellow", "america", "ask not", "country")), seen.transcript
    assert seen.probability.endswith("%")
    assert re.fullmatch(INTERVAL_SHOWN, seen.interval), seen.interval
    assert re.search(r"Interval\s*(" + INTERVAL_SHOWN + ")", seen.summary), seen.summary
    audio, video, text = seen.modalities
    assert audio.startswith("Audio") and audio.endswith("%")
    assert video.startswith("Video") and video.endswith("not available")  # the fake camera shows no face
    assert text.startswith("Text") and text.endswith("%")
    assert seen.symptom_count == 8
    assert "Sentences" in seen.summary and seen.ended_connection == "ended"
    assert seen.console_errors == []
    health = namespace.run(idle_health, server.http_url, RENDER_DEADLINE_S)
    assert health["sessions_active"] == 0 and health["webrtc_peers"] == 0
