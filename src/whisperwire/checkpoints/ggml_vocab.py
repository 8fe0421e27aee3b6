"""A Hugging Face ``tokenizer.json`` from a ggml file's vocabulary.

A ggml file holds Whisper's byte-level BPE tokens as raw bytes, by id, and no merge rules; its
special tokens are implied by ``n_vocab`` (whisper.cpp adds them itself). Whisper's tokens are
ranked by id like tiktoken's: the merge that makes a token is the split of its bytes that BPE
reaches using only tokens of lower id. This module derives those merges, maps the bytes to
GPT-2's printable byte alphabet and lays the special tokens out as OpenAI Whisper does.
"""

from __future__ import annotations

from typing import Any

from whisperwire.checkpoints.errors import CheckpointError

# Whisper's language tokens in token order (after <|startoftranscript|>); v3 added "yue".
LANGUAGES = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln",
    "ha", "ba", "jw", "su", "yue",
)  # fmt: skip


def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes onto printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def special_tokens(n_vocab: int) -> list[str]:
    """The special tokens from <|endoftext|> to <|notimestamps|>, in id order."""
    multilingual = n_vocab > 51864
    n_languages = n_vocab - 51765 - int(multilingual)  # whisper.cpp's rule: 99 or 100
    if not 1 <= n_languages <= len(LANGUAGES):
        raise CheckpointError(f"a Whisper vocabulary of {n_vocab} tokens has no known layout")
    no_speech = "<|nospeech|>" if n_languages > 99 else "<|nocaptions|>"
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES[:n_languages]),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        no_speech,
        "<|notimestamps|>",
    ]


def derive_merges(tokens: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The merge rules, in rank order, that rebuild ``tokens`` (ranked by index)."""
    ranks = {token: rank for rank, token in enumerate(tokens)}
    merges = []
    for rank, token in enumerate(tokens):
        if len(token) < 2:
            continue
        parts = _bpe(ranks, token, rank)
        if len(parts) != 2:
            raise CheckpointError(
                f"the vocabulary is not byte-level BPE: token {rank} ({token!r}) cannot be built "
                "from two tokens of lower id"
            )
        merges.append((parts[0], parts[1]))
    return merges


def _bpe(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def build_tokenizer_json(tokens: list[bytes], n_vocab: int) -> dict[str, Any]:
    """The ``tokenizer.json`` of a Whisper model whose BPE tokens are ``tokens``.

    ``tokens`` may run on past the BPE tokens (the Hugging Face converter writes
    <|endoftext|>'s text too): only ids below <|endoftext|> are taken. A multilingual vocabulary
    has one more plain token there (50256) than an English-only one.
    """
    eot = 50256 if n_vocab <= 51864 else 50257
    if len(tokens) < 256:
        raise CheckpointError(f"the vocabulary has only {len(tokens)} tokens")
    plain = list(tokens[:eot])
    if len(plain) == eot - 1:  # a multilingual file may stop before 50256 (an unused token)
        plain.append(b"")
    if len(plain) != eot:
        raise CheckpointError(f"the vocabulary has {len(tokens)} tokens; Whisper's has {eot}")
    alphabet = byte_alphabet()

    def text(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {text(token): index for index, token in enumerate(plain)}
    if len(vocab) != eot:
        raise CheckpointError("the vocabulary holds the same token twice")
    bpe_tokens = [token for token in plain if token]  # multilingual: 50256 is empty
    merges = [f"{text(a)} {text(b)}" for a, b in derive_merges(bpe_tokens)]
    specials = special_tokens(n_vocab)
    added = [
        {"id": eot + offset, "content": token, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
        for offset, token in enumerate(specials)
    ]  # fmt: skip
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    sot, no_ts = f"{specials[1]}", specials[-1]
    template = [{"SpecialToken": {"id": sot, "type_id": 0}},
                {"SpecialToken": {"id": no_ts, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}]  # fmt: skip
    ids = {token["content"]: token["id"] for token in added}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": template,
            "pair": [*template[:3], {"Sequence": {"id": "B", "type_id": 1}}, template[3]],
            "special_tokens": {
                name: {"id": name, "ids": [ids[name]], "tokens": [name]}
                for name in (sot, no_ts, "<|endoftext|>")
            },
        },
        "decoder": {"type": "ByteLevel", **byte_level, "add_prefix_space": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
