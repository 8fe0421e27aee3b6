"""The browser page at GET /, in headless Chromium: the system's Chromium (Debian's `chromium`
package; WHISPERWIRE_CHROMIUM names another) driven by Playwright, whose own browser downloads
are not used. Its fake microphone plays a WAV of jfk.flac into the page's AudioWorklet.

Without Chromium or Playwright these tests skip on a developer's machine and fail in CI
(CI=true), where .ci/run installs Chromium and the lock installs Playwright.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import numpy as np
import pytest
import support
from support import (
    REPO,
    Server,
    audio_root,
    load_audio,
    normalizer,
    start_server,
    transcripts,
    wer,
)

JFK = (  # the acceptance's reference, as the brief words it
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
SCREENSHOT = REPO / "docs" / "page.png"
XSS = '<img src=x onerror="window.__xss = (window.__xss || 0) + 1">'


def missing(reason: str) -> NoReturn:
    support.missing(reason, "the browser page")


def chromium_path() -> str:
    named = os.environ.get("WHISPERWIRE_CHROMIUM")
    if named:
        if not Path(named).is_file():
            missing(f"WHISPERWIRE_CHROMIUM={named} is not a file")
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    missing("Chromium is not installed (apt-get install chromium, or set WHISPERWIRE_CHROMIUM)")


@pytest.fixture(scope="module", autouse=True)
def playwright() -> Iterator[Any]:
    """Playwright, once Chromium and Playwright are both known to be there: before any server
    starts, so that a machine without them skips (or in CI fails) at once."""
    chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright is not installed (pip install playwright; make install-test)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def jfk_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jfk.flac as Chromium's fake microphone takes it: a 16-bit PCM WAV (mono, 16 kHz here),
    with 0.5 s of silence before and 3 s after so that the speech region ends."""
    samples = load_audio(audio_root() / "jfk" / "jfk.flac", sample_rate=16000)
    before, after = np.zeros(8000, np.float32), np.zeros(48000, np.float32)
    pcm = (np.clip(np.concatenate([before, samples, after]), -1, 1) * 32767).astype("<i2")
    path = tmp_path_factory.mktemp("mic") / "jfk.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def browser(playwright: Any, jfk_wav: Path) -> Iterator[Any]:
    executable = chromium_path()
    args = [
        "--use-fake-ui-for-media-stream",  # grant the microphone without asking
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={jfk_wav}%noloop",  # played once, then silence
        "--autoplay-policy=no-user-gesture-required",
    ]
    browser = playwright.chromium.launch(executable_path=executable, args=args)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 960, "height": 600}, accept_downloads=True)
    context.grant_permissions(["microphone", "clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.problems = []  # uncaught exceptions and console errors of the page
    page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: page.problems.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    yield page
    context.close()


def finals(page: Any) -> str:
    return " ".join(t.strip() for t in page.locator("#transcript .final").all_text_contents())


def open_page(page: Any, server: Server, path: str = "/") -> None:
    page.goto(f"http://127.0.0.1:{server.port}{path}")
    page.wait_for_selector("#state[data-state='open']", timeout=30_000)


def test_the_microphone_is_transcribed_live(server: Server, page: Any) -> None:
    open_page(page, server)
    assert page.locator("#state").text_content() == "connected"
    start = time.monotonic()
    page.click("#mic")
    page.wait_for_selector("#state:text('listening')", timeout=10_000)
    first_partial = first_final = None
    score = 1.0
    while time.monotonic() - start < 30:
        if first_partial is None and page.locator("#partial").text_content():
            first_partial = time.monotonic() - start
        text = finals(page)
        if text:
            first_final = first_final or time.monotonic() - start
            score = wer([JFK], [text])
            if score <= 0.15 and normalizer()(text).endswith("country"):  # the whole sentence
                break
        time.sleep(0.2)
    took = time.monotonic() - start
    print(
        f"browser page: first partial {first_partial} s, first final {first_final} s, "
        f"WER {score:.3f} after {took:.1f} s: {finals(page)!r}"
    )
    assert score <= 0.15, f"after {took:.1f} s: {finals(page)!r}"
    assert wer([transcripts("jfk")["jfk.flac"]], [finals(page)]) <= 0.15
    assert first_partial is not None, "no grey partial was shown before the finals"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))  # for the README, while it listens
    page.click("#mic")  # stop: a flush
    page.wait_for_selector("#mic:text('Start microphone')")
    page.wait_for_selector("#state:text('connected')")  # the last frame sent, then the flush
    assert page.locator("#errors li").count() == 0, page.locator("#errors").text_content()
    assert not page.problems, page.problems


def test_a_file_is_sent_as_a_clip(server: Server, page: Any) -> None:
    open_page(page, server)
    page.set_input_files("#file", str(audio_root() / "jfk" / "jfk.flac"))
    clip = page.locator("#transcript .clip")
    clip.wait_for(timeout=60_000)
    assert clip.locator(".name").text_content() == "jfk.flac"
    text = clip.text_content().removeprefix("jfk.flac")
    assert wer([JFK], [text]) <= 0.15, text
    page.wait_for_function("document.getElementById('clip-state').textContent === ''")
    assert not page.problems, page.problems


def test_transcripts_are_shown_as_text_never_run(server: Server, page: Any) -> None:
    """A WebSocket in the page's place (Playwright's route) sends markup in every text the
    page shows: a partial, a final, a clip's transcription and name, an error."""

    def fake_server(ws: Any) -> None:
        config = {"sample_rate": 16000, "encoding": "s16le", "language": "en",
                  "task": "transcribe", "partials": True, "format": "json",
                  "max_message_bytes": 1 << 20, "model": XSS, "languages": ["en", XSS]}  # fmt: skip
        events = [
            {"type": "state", "state": "ready", "session_id": "s", "config": config},
            {"type": "partial", "segment_id": 0, "text": XSS + " partial", "stable": ""},
            {"type": "final", "segment_id": 0, "text": "said " + XSS},
            {"type": "transcription", "audio_id": XSS, "transcription": "clip " + XSS},
            {"type": "error", "code": XSS, "message": "bad " + XSS},
            {"type": "partial", "segment_id": 1, "text": XSS, "stable": XSS},
        ]
        for event in events:
            ws.send(json.dumps(event))
        ws.on_message(lambda message: sent.append(json.loads(message)))

    sent: list[dict[str, Any]] = []  # what the page sent the fake server
    page.route_web_socket(lambda url: url.startswith("ws://"), fake_server)
    open_page(page, server)
    page.wait_for_selector("#errors li")
    page.wait_for_timeout(500)  # an onerror handler would have run by now
    final = page.locator("#transcript .final")
    assert final.text_content() == "said " + XSS and final.is_visible()
    assert page.locator("#transcript .clip .name").text_content() == XSS
    assert page.locator("#transcript .clip").text_content() == XSS + "clip " + XSS
    assert XSS in page.locator("#partial").text_content()
    assert XSS in page.locator("#errors").text_content()
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__xss") is None
    with page.expect_download() as download:
        page.click("#download")
    saved = Path(download.value.path()).read_text()
    assert saved == f"said {XSS}\n[{XSS}]\nclip {XSS}\n"
    page.click("#copy")
    assert page.evaluate("navigator.clipboard.readText()") == saved
    # The language and translate choices go to the server as a `config` message.
    page.select_option("#language", XSS)
    page.check("#translate")
    page.wait_for_function("document.getElementById('translate').checked")
    deadline = time.monotonic() + 10
    while {"type": "config", "language": XSS, "task": "translate"} not in sent:
        assert time.monotonic() < deadline, sent
        page.wait_for_timeout(100)
    assert not page.problems, page.problems


def test_with_an_api_key_the_page_is_public_and_its_socket_asks_for_the_key(
    tmp_path: Path, page: Any
) -> None:
    server = start_server(tmp_path, "--api-key", "s3cret")
    try:
        http = f"http://127.0.0.1:{server.port}"
        reply = httpx.get(http + "/", timeout=10)
        assert reply.status_code == 200 and "text/html" in reply.headers["content-type"]
        assert "script-src 'self'" in reply.headers["content-security-policy"]
        for asset in ("web/app.js", "web/worklet.js", "web/style.css"):
            assert httpx.get(f"{http}/{asset}", timeout=10).status_code == 200, asset
        page.goto(http + "/")
        page.wait_for_selector("#errors li:has-text('UNAUTHORIZED')", timeout=30_000)
        assert page.locator("#state").get_attribute("data-state") == "error"
        page.fill("#token", "s3cret")
        page.click("#connect")
        page.wait_for_selector("#state[data-state='open']", timeout=30_000)
        page.goto("about:blank")
        page.goto(http + "/#token=s3cret")  # a key in the fragment: taken, then removed
        page.wait_for_selector("#state[data-state='open']", timeout=30_000)
        assert "s3cret" not in page.url
    finally:
        server.stop()
    assert "s3cret" not in server.output()
