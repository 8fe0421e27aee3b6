"""The encoder over a live window's audio and 10 s of padding (`--encoder-pad`,
encoder_context) on the real model: windows decoded greedily (partial updates) and
thoroughly (a region's last decode, its made-up tail dropped as the policy drops it) are
transcribed as well as with Whisper's 30 s; whole clips keep Whisper's 30 s."""

from __future__ import annotations

from typing import Any

import pytest
from support import librispeech_clips, load_audio, wer

from whisperwire.engine import Engine, EngineOptions, resolve_model
from whisperwire.words import without_squeezed_tail


@pytest.fixture(scope="module")
def engines() -> dict[float, Engine]:
    return {
        pad: Engine(resolve_model(None), EngineOptions(workers=1, encoder_pad_s=pad))
        for pad in (10.0, 30.0)
    }


NO_WORSE_THAN = 1.25


@pytest.mark.parametrize("thorough", [False, True], ids=["greedy partial", "thorough final"])
def test_windows_decoded_on_a_short_context_match_whispers_30_s(
    engines: dict[float, Engine], thorough: bool
) -> None:
    clips = librispeech_clips(20)  # 2-35 s each: short windows and ones of the full 30 s
    references = [text for _, text in clips]
    texts: dict[float, list[str]] = {}
    for pad, engine in engines.items():
        texts[pad] = []
        for path, _ in clips:
            window = load_audio(path)[: 29 * 16000]  # a live window is at most 29 s
            words = engine.decode_window(window, "", "en", "transcribe", thorough).words
            said = without_squeezed_tail(words) if thorough else words
            texts[pad].append(" ".join(w.text for w in said))
    short, full = wer(references, texts[10.0]), wer(references, texts[30.0])
    print(f"WER with 10 s of padding {short:.4f}, with 30 s {full:.4f}")
    # Within 1.10x on the Intel VMs; on a 2-core AMD EPYC VM (2026-12-07, oneDNN) greedy
    # partials gave 13.3 % against 11.3 % (1.18x). The README documents that the short
    # context costs about a point of WER (so --encoder-pad is off by default); what holds on
    # every machine is that it does not break decoding: 1-5 s of padding, which does, gave
    # empty or looping text, far past this bound.
    assert short <= NO_WORSE_THAN * full, (short, full)


class Spy:
    """The CTranslate2 model, noting the frames of each encoder input it is given."""

    def __init__(self, model: Any) -> None:
        self.model, self.frames = model, []  # type: list[int]

    def encode(self, features: Any, **options: Any) -> Any:
        self.frames.append(features.shape[-1])
        return self.model.encode(features, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def test_live_windows_are_encoded_short_and_whole_clips_on_30_s(
    engines: dict[float, Engine],
) -> None:
    path, _ = librispeech_clips(5)[4]  # 4.5 s
    audio = load_audio(path)
    model = engines[10.0].model
    spy = Spy(model.model)
    model.model = spy
    try:
        engines[10.0].decode_window(audio, "", "en", "transcribe", thorough=False)
        live = list(spy.frames)
        segments, _ = engines[10.0].transcribe_file(audio, "en", "transcribe", "", 0.0)
        text = " ".join(s.text for s in segments)
    finally:
        model.model = spy.model
    frames = len(audio) / 160  # 10 ms each
    # 10 s of padding after the audio; where Whisper ends its first segment before the audio
    # does (on the AMD VM of 2026-12-07: [1450, 1010]), the rest is encoded the same way
    assert frames + 1000 <= live[0] <= frames + 1003, live
    assert all(1000 <= n <= live[0] for n in live[1:]), live
    assert spy.frames[len(live) :] == [3000], spy.frames  # a clip: as offline faster-whisper
    assert text.strip()
