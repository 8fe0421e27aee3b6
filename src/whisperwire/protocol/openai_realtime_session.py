"""A Realtime transcription session's settings: OpenAI's `session` object, checked, and back.

`parse` reads a GA `session.update`'s `session` (a partial update: what it leaves out keeps
its value), `parse_beta` the beta `transcription_session.update`'s; `Settings.describe` is
the `session` of `session.created` / `.updated`. Each refusal names the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from whisperwire.protocol import errors as err
from whisperwire.protocol import messages as msg

FORMATS = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}  # their rates
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
DEFAULT_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}
SESSION_KEYS = frozenset({"type", "audio", "include", "id", "object"})
INPUT_KEYS = frozenset({"format", "transcription", "turn_detection", "noise_reduction"})
TRANSCRIPTION_KEYS = frozenset({"model", "language", "prompt"})
VAD_KEYS = frozenset(DEFAULT_VAD) | {"create_response", "interrupt_response", "idle_timeout_ms"}
BETA_KEYS = frozenset(
    {
        "input_audio_format", "input_audio_transcription", "turn_detection",
        "input_audio_noise_reduction", "include", "modalities", "client_secret",
    }
)  # fmt: skip
INPUT = "session.audio.input"


def _refuse(param: str, message: str) -> err.ProtocolError:
    return err.ProtocolError(err.INVALID_MESSAGE, f"{param}: {message}", param=param)


def _obj(value: Any, param: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(param, "must be an object")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise _refuse(
            f"{param}.{unknown[0]}",
            f"unknown parameter; {param} takes {', '.join(sorted(keys))}",
        )
    return value


@dataclass(frozen=True)
class Settings:
    format: str = "audio/pcm"
    rate: int = 24000
    model: str = "whisper-1"  # accepted and echoed: the server's model transcribes
    language: str | None = None  # None: the server's default
    prompt: str = ""  # accepted and echoed; not used
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_VAD))
    vad_defaults: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_VAD))  # the server's
    noise_reduction: Any = None  # accepted and echoed; not applied
    include: Any = None

    @classmethod
    def for_server(cls, threshold: float, prefix_padding_s: float, silence_s: float) -> Settings:
        """The settings a session starts with: server VAD as the server's policy has it."""
        vad = {"type": "server_vad", "threshold": threshold}
        vad |= {"prefix_padding_ms": round(prefix_padding_s * 1000)}
        vad |= {"silence_duration_ms": round(silence_s * 1000)}
        return cls(turn_detection=dict(vad), vad_defaults=vad)

    @property
    def server_vad(self) -> bool:
        return self.turn_detection is not None

    @property
    def input_key(self) -> tuple[str, int]:
        return (self.format, self.rate)

    @property
    def bytes_per_second(self) -> int:
        return self.rate * (2 if self.format == "audio/pcm" else 1)  # G.711: a byte a sample

    def vad_tuning(self) -> dict[str, float]:
        """The policy settings the server VAD's parameters stand for."""
        vad = self.turn_detection or self.vad_defaults  # null: the server's, kept
        out = {}
        if vad.get("threshold") is not None:
            out["vad_threshold"] = float(vad["threshold"])
        if vad.get("prefix_padding_ms") is not None:
            out["speech_pad_s"] = vad["prefix_padding_ms"] / 1000
        if vad.get("silence_duration_ms") is not None:
            out["min_silence_s"] = vad["silence_duration_ms"] / 1000
        return out

    def native(self) -> dict[str, Any]:
        """The native stream settings these stand for."""
        out: dict[str, Any] = {"format": "openai_realtime", "encoding": "s16le"}
        out |= {"sample_rate": self.rate, "partials": False}
        return out if self.language is None else out | {"language": self.language}

    def describe(self, session_id: str, beta: bool = False) -> dict[str, Any]:
        """The `session` object of `session.created` / `.updated`."""
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt}
        if beta:
            beta_format = next(k for k, v in BETA_FORMATS.items() if v == self.format)
            return {
                "id": session_id,
                "object": "realtime.transcription_session",
                "input_audio_format": beta_format,
                "input_audio_transcription": transcription,
                "turn_detection": self.turn_detection,
                "input_audio_noise_reduction": self.noise_reduction,
                "include": self.include,
            }
        audio_format: dict[str, Any] = {"type": self.format}
        if self.format == "audio/pcm":
            audio_format["rate"] = self.rate
        return {
            "type": "transcription",
            "id": session_id,
            "object": "realtime.session",  # as OpenAI's transcription guide shows it (GA)
            "audio": {
                "input": {
                    "format": audio_format,
                    "transcription": transcription,
                    "turn_detection": self.turn_detection,
                    "noise_reduction": self.noise_reduction,
                }
            },
            "include": self.include,
        }


def _format(value: Any) -> tuple[str, int]:
    param = f"{INPUT}.format"
    value = _obj(value, param, frozenset({"type", "rate"}))
    kind = value.get("type", "audio/pcm")
    if kind not in FORMATS:
        raise _refuse(
            f"{param}.type",
            f"{err.shown(kind)} is not supported; use audio/pcm, audio/pcmu or audio/pcma",
        )
    rate = value.get("rate", FORMATS[kind])
    if kind != "audio/pcm" and rate != FORMATS[kind]:
        raise _refuse(f"{param}.rate", f"{kind} is 8000 Hz")
    # OpenAI takes 24000 only; any rate the native protocol takes is an extension of ours.
    if not isinstance(rate, int) or not msg.MIN_SAMPLE_RATE <= rate <= msg.MAX_SAMPLE_RATE:
        raise _refuse(
            f"{param}.rate",
            f"{err.shown(rate)} is not an integer from {msg.MIN_SAMPLE_RATE} to "
            f"{msg.MAX_SAMPLE_RATE} (OpenAI's is 24000)",
        )
    return kind, rate


def _transcription(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    value = _obj(value, param, TRANSCRIPTION_KEYS)
    out: dict[str, Any] = {}
    for key in ("model", "prompt"):
        if key in value:
            if not isinstance(value[key], str):
                raise _refuse(f"{param}.{key}", "must be a string")
            out[key] = value[key]
    if "language" in value:
        language = value["language"]
        if language is not None and not isinstance(language, str):
            raise _refuse(f"{param}.language", "must be a string such as 'en', or null")
        out["language"] = language or None
    return out


def _turn_detection(value: Any, param: str, defaults: dict[str, Any]) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _obj(value, param, VAD_KEYS)
    if value.get("type", "server_vad") != "server_vad":
        raise _refuse(
            f"{param}.type",
            f"{err.shown(value.get('type'))} is not supported; use server_vad, or null for "
            "commits by the client",
        )
    out = dict(defaults) | {k: v for k, v in value.items() if k in DEFAULT_VAD}
    threshold = out["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise _refuse(f"{param}.threshold", "must be a number from 0 to 1")
    if not 0.0 < threshold < 1.0:
        raise _refuse(f"{param}.threshold", "must be a number from 0 to 1")
    for key, top in (("prefix_padding_ms", 2000), ("silence_duration_ms", 10000)):
        ms = out[key]
        if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= top:
            raise _refuse(f"{param}.{key}", f"must be an integer from 0 to {top}")
    if out["silence_duration_ms"] < 100:
        raise _refuse(f"{param}.silence_duration_ms", "must be at least 100")
    return out


def parse(session: dict[str, Any], current: Settings) -> Settings:
    """A GA `session.update`'s `session`: what it gives replaces, the rest is kept."""
    session = _obj(session, "session", SESSION_KEYS)
    kind = session.get("type", "transcription")
    if kind != "transcription":
        raise _refuse(
            "session.type",
            f"{err.shown(kind)} is not supported; this server only transcribes: send "
            "type 'transcription'",
        )
    changes: dict[str, Any] = {}
    if "include" in session:
        changes["include"] = session["include"]
    audio = _obj(session.get("audio", {}), "session.audio", frozenset({"input"}))
    given = _obj(audio.get("input", {}), INPUT, INPUT_KEYS)
    if "format" in given:
        changes["format"], changes["rate"] = _format(given["format"])
    if "transcription" in given:
        param = f"{INPUT}.transcription"
        changes |= _transcription(given["transcription"], param)
    if "turn_detection" in given:
        param = f"{INPUT}.turn_detection"
        vad = _turn_detection(given["turn_detection"], param, current.vad_defaults)
        changes["turn_detection"] = vad
    if "noise_reduction" in given:
        changes["noise_reduction"] = given["noise_reduction"]
    return replace(current, **changes)


def parse_beta(session: dict[str, Any], current: Settings) -> Settings:
    """The beta `transcription_session.update`'s `session` (the whole configuration)."""
    session = _obj(session, "session", BETA_KEYS)
    fmt = session.get("input_audio_format", "pcm16")
    if fmt not in BETA_FORMATS:
        raise _refuse(
            "session.input_audio_format",
            f"{err.shown(fmt)} is not supported; use pcm16, g711_ulaw or g711_alaw",
        )
    kind = BETA_FORMATS[fmt]
    transcription = _transcription(
        session.get("input_audio_transcription"), "session.input_audio_transcription"
    )
    defaults = current.vad_defaults
    vad = _turn_detection(
        session.get("turn_detection", defaults), "session.turn_detection", defaults
    )
    return Settings(
        format=kind,
        rate=FORMATS[kind],
        turn_detection=vad,
        noise_reduction=session.get("input_audio_noise_reduction"),
        include=session.get("include"),
        vad_defaults=defaults,
        **transcription,
    )
