"""`whisperwire transcribe` against a running server: clips, streams, errors, exit codes."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    REPO,
    Server,
    audio_root,
    normalizer,
    offline_transcripts,
    start_server,
    transcripts,
    wer,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    audio_root()
    srv = start_server(tmp_path_factory.mktemp("server"), "--max-message-mb", "4")
    yield srv
    srv.stop()


def transcribe(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whisperwire", "transcribe", *map(str, args)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip


def jfk() -> Path:
    return audio_root() / "jfk" / "jfk.flac"


def sentence_wer(text: str) -> float:
    return wer([transcripts("jfk")["jfk.flac"]], [text])


def test_clip_prints_the_sentence(server: Server) -> None:
    out = transcribe(jfk(), "--url", server.url)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 1
    assert sentence_wer(out.stdout) <= 0.1


def test_stream_prints_finals_as_lines(server: Server) -> None:
    out = transcribe(jfk(), "--url", server.url, "--stream")
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stdout, "no in-place partials when stdout is not a terminal"
    assert sentence_wer(out.stdout) <= 0.35


def test_realtime_stream_as_json_lines_has_partials(server: Server) -> None:
    out = transcribe(jfk(), "--url", server.url, "--stream", "--realtime", "--json")
    assert out.returncode == 0, out.stderr
    messages = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "state" and kinds[-1] == "end" and "partial" in kinds
    finals = " ".join(m["text"] for m in messages if m["type"] == "final")
    assert sentence_wer(finals) <= 0.35


def test_partials_are_shown_in_place_on_a_terminal(server: Server) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "whisperwire", "transcribe", str(jfk()), "--url", server.url,
         "--stream", "--realtime"],
        stdout=follower, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    os.close(follower)
    screen = b""
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while chunk := os.read(leader, 4096):
            screen += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0
    text = screen.decode()
    assert "\r\x1b[K" in text, "partials overwrite the line in place"
    # What stays on screen: each line's text after its last carriage return.
    visible = [line.split("\r")[-1].replace("\x1b[K", "") for line in text.split("\r\n")]
    assert sentence_wer(" ".join(visible)) <= 0.35


def test_several_files_and_language(server: Server) -> None:
    short = audio_root() / "pocketsphinx_librivox"
    second = sorted(short.glob("*.wav"))[0]
    out = transcribe(jfk(), second, "--url", server.url, "--language", "en")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"==> {jfk()} <==" and lines[2] == f"==> {second} <=="
    assert sentence_wer(lines[1]) <= 0.1
    assert wer([transcripts("pocketsphinx_librivox")[second.name]], [lines[3]]) <= 0.35


def test_server_error_exits_1_with_the_reason(server: Server, tmp_path: Path) -> None:
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio at all\n" * 100)
    out = transcribe(junk, jfk(), "--url", server.url)
    assert out.returncode == 1
    assert "AUDIO_DECODE_ERROR" in out.stderr and str(junk) in out.stderr
    assert sentence_wer(out.stdout.splitlines()[-1]) <= 0.1, "the next file is still done"
    big = tmp_path / "big.flac"
    big.write_bytes(jfk().read_bytes() * 4)  # 4.6 MB: over this server's 4 MiB
    out = transcribe(big, "--url", server.url)
    assert out.returncode == 1 and ("MESSAGE_TOO_BIG" in out.stderr or "1009" in out.stderr)


def test_usage_errors_exit_2(server: Server, tmp_path: Path) -> None:
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio at all\n" * 100)
    for args, words in [
        ([tmp_path / "missing.flac", "--url", server.url], "cannot read"),
        ([junk, "--url", server.url, "--stream"], "cannot decode"),
        ([jfk(), "--url", "http://localhost:1/"], "ws:// or wss://"),
        ([jfk(), "--url", server.url, "--insecure"], "wss://"),
        ([jfk(), "--url", server.url, "--realtime"], "--stream"),
    ]:
        out = transcribe(*args)
        assert out.returncode == 2, (args, out)
        assert words in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_unreachable_server_exits_1(tmp_path: Path) -> None:
    out = transcribe(jfk(), "--url", "ws://127.0.0.1:9/")
    assert out.returncode == 1 and "cannot connect" in out.stderr


def test_readme_shows_the_client() -> None:
    readme = (REPO / "README.md").read_text()
    assert "whisperwire transcribe" in readme and "--stream" in readme and "--cafile" in readme


def test_a_long_file_streamed_as_fast_as_possible_is_slowed_and_transcribed_whole(
    tmp_path: Path,
) -> None:
    """The 13.3-minute long-form file sent at once (no --realtime), to a server with its
    defaults: the server stops reading while more than --max-backlog seconds wait (the client
    is told once, with OVERLOADED), and the whole file comes back as finals, no 1011 close, as
    accurate as offline decoding within 10 % (issue 12)."""
    name = "ls_test_other_all100.flac"
    path = audio_root() / "longform" / name
    srv = start_server(tmp_path)
    try:
        out = transcribe(path, "--url", srv.url, "--stream")
    finally:
        srv.stop()
    assert out.returncode == 0, out.stderr
    assert "OVERLOADED" in out.stderr and "--max-backlog" in out.stderr
    reference = transcripts("longform")[name]
    streaming = wer([reference], [out.stdout])
    offline = wer([reference], offline_transcripts([path]))
    said, heard = len(normalizer()(reference).split()), len(normalizer()(out.stdout).split())
    print(f"sent at once: {heard} of {said} words, WER {streaming:.4f} (offline {offline:.4f})")
    assert heard >= 0.95 * said  # nothing dropped: a lost backlog is dozens of words
    assert streaming <= 1.10 * offline
