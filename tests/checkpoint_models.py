"""Test checkpoints built on the fly: no multilingual Whisper weights can be had offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def multilingual_tokenizer(english_tokenizer: Path, languages: list[str]) -> dict[str, Any]:
    """Whisper's multilingual token layout on tiny.en's BPE tokens.

    Ids 0-50255 keep tiny.en's BPE tokens; 50256 becomes the empty token that multilingual
    Whisper vocabularies have (CTranslate2 tells multilingual models by it); then
    <|endoftext|> 50257, <|startoftranscript|> 50258, the language tokens and the task tokens.
    """
    data = json.loads(english_tokenizer.read_text())
    vocab = data["model"]["vocab"]
    del vocab["<|endoftext|>"]
    vocab[""] = 50256
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in languages),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    template = data["added_tokens"][0]
    data["added_tokens"] = [
        dict(template, id=50257 + offset, content=token) for offset, token in enumerate(specials)
    ]
    ids = {token: 50257 + offset for offset, token in enumerate(specials)}
    for token, entry in data["post_processor"]["special_tokens"].items():
        entry["ids"] = [ids[token]]
    return data


def build_multilingual(root: Path, tiny_en_hf: Path) -> Path:
    """A large-v3-shaped (128 mel bins, 100 languages) Whisper with tiny random weights."""
    import torch
    import transformers

    root.mkdir(parents=True, exist_ok=True)
    english = json.loads((tiny_en_hf / "tokenizer.json").read_text())
    languages = [t["content"][2:-2] for t in english["added_tokens"] if 50258 <= t["id"] <= 50356]
    languages.append("yue")  # large-v3 added Cantonese after the 99 languages of v2
    tokenizer = multilingual_tokenizer(tiny_en_hf / "tokenizer.json", languages)
    (root / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    (root / "tokenizer_config.json").write_bytes(
        (tiny_en_hf / "tokenizer_config.json").read_bytes()
    )
    preprocessor = json.loads((tiny_en_hf / "preprocessor_config.json").read_text())
    (root / "preprocessor_config.json").write_text(json.dumps(dict(preprocessor, feature_size=128)))

    eot, sot = 50257, 50258
    config = transformers.WhisperConfig(
        vocab_size=50257 + len(languages) + 8 + 1501,  # text, specials, timestamps: 51866
        num_mel_bins=128,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        begin_suppress_tokens=[220, eot],
        suppress_tokens=[],
    )
    torch.manual_seed(0)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(root)
    return root
