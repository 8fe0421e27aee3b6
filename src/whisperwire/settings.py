"""The server's settings, declared once: type, default, range, help, flag(s) and variable.

`Settings` reads WHISPERWIRE_* variables (pydantic-settings); the CLI generates the `serve`
flags from the same fields and passes the flags given as keyword arguments, which beat the
variables. A field is one line (`name: type = option(default, flags, range)`) and its help the
docstring under it. The fields are declared in one model per concern (model, streaming,
network, limits, forwarding) that `Settings` combines, so the rest of the code reads them flat
(`settings.max_sessions`, `settings.forward_url`) and the streaming policy as one
`PolicyConfig` (`settings.policy.step_s`).
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from whisperwire.policy_config import PolicyConfig

if TYPE_CHECKING:
    from whisperwire.forward.config import ForwardConfig

ENV_PREFIX = "WHISPERWIRE_"
COMPUTE_TYPES = (
    "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16",
    "float16", "bfloat16", "float32", "default", "auto",
)  # fmt: skip
_POLICY = PolicyConfig()


class UsageError(Exception):
    """A bad setting: printed as one line naming the flag and the variable, exit status 2."""


def option(
    default: Any,
    *flags: str,
    between: tuple[float, float] | None = None,
    env: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A field that is also a `serve` flag and a variable (by default WHISPERWIRE_<LONG FLAG>);
    its help is the docstring under it (see `Group`)."""
    long = next(f for f in flags if f.startswith("--"))
    low, high = between or (None, None)
    return Field(
        default,
        ge=low,
        le=high,
        validation_alias=ENV_PREFIX + (env or long[2:].replace("-", "_").upper()),
        json_schema_extra={"flags": list(flags), "metavar": metavar},
    )


def _origin(text: str) -> str:
    """An origin as browsers send it: scheme://host[:port], lower case, no path."""
    origin = text.strip().lower().rstrip("/")
    parts = urllib.parse.urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        raise ValueError(f"{text!r} is not an origin; write it as https://host or http://host:port")
    return origin


# A list's variable holds its items separated by commas (or one item); its flag is repeated.
def _split_commas(value: Any) -> Any:
    return (
        [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, str)
        else value
    )


def _one_item(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


T = TypeVar("T")
ComputeType = Literal[COMPUTE_TYPES]  # type: ignore[valid-type]
Origin = Annotated[str, AfterValidator(_origin)]
CommaList = Annotated[list[T], NoDecode, BeforeValidator(_split_commas)]
OneOrMore = Annotated[list[T], NoDecode, BeforeValidator(_one_item)]


class Group(BaseModel):
    """A group of `serve` flags: each field's docstring is its help."""

    model_config = ConfigDict(use_attribute_docstrings=True)


class ModelOptions(Group):
    """model"""

    model: str | None = option(None, "-m", "--model")
    """faster-whisper model name (tiny.en, base, small, large-v3-turbo, org/repo: fetched from the
    hub where there is internet), a local CTranslate2 directory, a Hugging Face Whisper
    checkpoint directory or a whisper.cpp ggml file (.bin); default: the bundled tiny.en"""
    checkpoint: str | None = option(None, "--checkpoint")
    """a fine-tuned Hugging Face Whisper checkpoint directory (same as -m DIR)"""
    threads: int = option(0, "-t", "--threads", between=(0, 256))
    """CPU threads of each worker (0: the cores shared out among the workers)"""
    workers: int = option(0, "-w", "--workers", between=(0, 64))
    """decodes run at once, on one copy of the weights (CTranslate2 inter_threads): more workers of
    fewer threads each carry more streams, fewer of more threads decode one stream sooner; 0: one
    single-threaded worker per core on a CPU, one on a GPU"""
    solo_threads: int = option(0, "--solo-threads", between=(0, 256))
    """threads of a second copy of the model that decodes for a session while it is the only one
    asking (one decode at a time, the workers wait): one stream's words come sooner than from a
    1-thread worker; 0: all the workers' threads, on a CPU with several workers; 1: none"""
    batch: int = option(0, "--batch", between=(0, 64))
    """partial updates of up to this many sessions decoded in one batched call (one encode, one
    greedy generate); 0: 8 on a GPU, 1 (no batching) on a CPU, where it saves nothing"""
    encoder_pad: float = option(30.0, "--encoder-pad", between=(1.0, 30.0), metavar="S")
    """seconds of padding Whisper's encoder sees after a live window's audio: it encodes the
    window and this much, not always 30 s (tiny.en, 10: a 10 s window encodes in a third of the
    time, a stream costs two fifths less CPU, but streamed WER is a point higher and Whisper
    invents text in pauses more often); 30 (the default): always 30 s, as Whisper does"""
    stream_decodes: int = option(2, "--stream-decodes", between=(1, 8))
    """partial decodes one live stream may have running at once while workers outnumber the
    streams and clips (its updates come that many times as often); 1: one at a time"""
    language: str = option("auto", "-l", "--language")
    """spoken language code, or 'auto' (English-only models: en)"""
    translate: bool = option(False, "-tr", "--translate")
    """translate to English"""
    no_gpu: bool = option(False, "-ng", "--no-gpu")
    """never use CUDA"""
    beam_size: int = option(5, "-bs", "--beam-size", between=(1, 16))
    """beam size of the decodes whose words become final"""
    partial_beam_size: int = option(1, "--partial-beam-size", between=(1, 16))
    """beam size of partial updates (1: greedy); they have no temperature fallback"""
    window_conditioning: bool = option(False, "--window-conditioning")
    """decode the rest of a window whose last segment Whisper cut after the window's text
    before it (faster-whisper's condition_on_previous_text, within one window)"""
    no_fallback: bool = option(False, "-nf", "--no-fallback")
    """decode at temperature 0 only, never again at higher temperatures when Whisper's checks
    fail (as whisper.cpp's -nf): quicker and reproducible, a little less robust"""
    compute_type: ComputeType | None = option(None, "--compute-type")
    """CTranslate2 compute type (default: int8 on CPU, float16 on GPU)"""
    checkpoint_cache_dir: str | None = option(None, "--cache-dir")
    """where converted checkpoints are cached (default: the user's cache dir)"""
    base_model: str | None = option(None, "--base-model")
    """where a checkpoint without tokenizer/preprocessor files takes them from"""


class StreamingOptions(Group):
    """streaming"""

    vad_threshold: float = option(_POLICY.vad_threshold, "-vth", "--vad-thold", between=(0.0, 1.0))
    """Silero VAD speech probability threshold"""
    min_silence_s: float = option(_POLICY.min_silence_s, "--min-silence", between=(0.1, 10.0))
    """seconds of pause that end a segment"""
    end_pad_s: float = option(_POLICY.end_pad_s, "--end-pad", between=(0.0, 2.0))
    """seconds of audio after a segment's speech kept in its last decode"""
    step_s: float = option(_POLICY.step_s, "--step", between=(0.1, 10.0))
    """seconds of new audio between two partial decodes"""
    trim_s: float = option(_POLICY.trim_s, "--trim", between=(2.0, 25.0))
    """seconds of audio a decode window may grow to in continuous speech before it is cut at the
    last final word (shorter: cheaper decodes, less context)"""
    trim_context_s: float = option(_POLICY.trim_context_s, "--trim-context", between=(0.0, 10.0))
    """seconds of final words a trimmed window keeps as context before its new audio, from a
    phrase start (0: the window starts at the last final word)"""
    commit: Literal["agreement", "one-pass"] = option(_POLICY.commit, "--commit")
    """when a partial decode's words become final: when two decodes agree (LocalAgreement-2), or
    after one decode for words that end --commit-guard seconds before the audio decoded and have
    --commit-probability"""
    guard_s: float = option(_POLICY.guard_s, "--commit-guard", between=(0.0, 10.0))
    """one-pass commit: seconds a word must end before the end of the audio decoded"""
    min_probability: float = option(
        _POLICY.min_probability, "--commit-probability", between=(0.0, 1.0)
    )
    """one-pass commit: the least word probability"""
    stall_s: float = option(_POLICY.stall_s, "--commit-stall", between=(0.0, 30.0))
    """one-pass commit: once an unsure word has held the words after it back this many seconds, the
    next decode is a thorough one (beam, fallback) that commits them; 0: off"""
    commit_failed_segments: bool = option(
        _POLICY.commit_failed_segments, "--commit-failed-segments"
    )
    """one-pass commit: commit the words of a partial decode's segment that failed Whisper's
    checks (too repetitive or too unlikely) as the others; by default they wait for a decode
    that passes"""
    forced_prefix: bool = option(_POLICY.forced_prefix, "--forced-prefix")
    """decode each window after the committed words it starts with, forced as the decoder's
    prefix: only the words after them are generated"""
    forced_min_probability: float = option(
        _POLICY.forced_min_probability, "--forced-prefix-probability", between=(0.0, 1.0)
    )
    """forced prefix: it stops before the first committed word of less probability; the rest
    is decoded freely"""
    prompt_chars: int = option(_POLICY.prompt_chars, "--prompt-chars", between=(0, 1000))
    """characters of the session's last finals given to each decode as Whisper's prompt (0:
    none; on tiny.en a prompt made long speech end in invented text)"""
    max_age_s: float = option(_POLICY.max_age_s, "--commit-max-age", between=(0.0, 30.0))
    """one-pass commit: seconds after which a word is committed whatever its probability (0:
    never)"""
    sure_guard_s: float = option(_POLICY.sure_guard_s, "--commit-sure-guard", between=(0.0, 10.0))
    """one-pass commit: the guard for a word of at least --commit-sure-probability (0: the same
    as --commit-guard)"""
    sure_probability: float = option(
        _POLICY.sure_probability, "--commit-sure-probability", between=(0.0, 1.0)
    )
    """one-pass commit: the word probability from which --commit-sure-guard applies"""

    @property
    def policy(self) -> PolicyConfig:
        """The streaming policy's configuration: these fields, its own defaults for the rest."""
        return PolicyConfig(**{name: getattr(self, name) for name in StreamingOptions.model_fields})


class NetworkOptions(Group):
    """network"""

    host: str = option("0.0.0.0", "-H", "--host")
    """address to bind"""
    port: int = option(9002, "-p", "--port", between=(1, 65535))
    """port to listen on"""
    certfile: str | None = option(None, "--certfile", "--ssl-cert")
    """PEM certificate (chain): serve wss:// (TLS 1.2 or later); the key may be in it"""
    keyfile: str | None = option(None, "--keyfile", "--ssl-key")
    """PEM private key (unencrypted) for --certfile"""
    api_key: CommaList[SecretStr] = option([], "--api-key", metavar="KEY")
    """require this key from clients (?token=KEY or 'Authorization: Bearer KEY'); repeatable; the
    variable takes a comma-separated list"""
    metrics_public: bool = option(False, "--metrics-public")
    """serve GET /metrics without a key even with --api-key (for a scraper on a trusted network);
    /health is open either way"""
    allowed_origins: CommaList[Origin] = option(
        [], "--allowed-origin", env="ALLOWED_ORIGINS", metavar="ORIGIN"
    )
    """accept WebSocket connections from web pages of this origin only (e.g.
    https://app.example.com; clients that send no Origin header, as non-browser ones, are not
    affected): against cross-site WebSocket hijacking; repeatable; the variable takes a
    comma-separated list; default: any origin"""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = option(
        "info", "--log-level"
    )
    """what the server logs"""

    @property
    def api_keys(self) -> list[str]:
        """The keys in clear, to compare with what a client offers (and for nothing else)."""
        return [key.get_secret_value() for key in self.api_key]


class LimitOptions(Group):
    """limits"""

    max_message_mb: float = option(128.0, "--max-message-mb", between=(0.001, 4096))
    """largest WebSocket message accepted, in MiB (128: a 30-minute 16 kHz FLAC, mono or stereo, in
    base64)"""
    max_sessions: int = option(64, "--max-sessions", between=(1, 100000))
    """concurrent sessions before new ones are refused with OVERLOADED"""
    max_sessions_per_address: int = option(0, "--max-sessions-per-address", between=(0, 100000))
    """sessions one client address may hold at once (OVERLOADED beyond it); 0: no limit, the
    default, as a gateway or voice-agent server carries many streams from one address; set it on an
    endpoint open to the public"""
    max_backlog_s: float = option(30.0, "--max-backlog", between=(0.0, 3600.0))
    """seconds of a session's audio that may wait to be decoded; beyond it the server stops reading
    from that client until it catches up (TCP slows the sender; nothing is dropped); 0: no limit"""
    idle_timeout_s: float = option(300.0, "--idle-timeout", between=(0.0, 86400.0))
    """seconds a session may send nothing (no audio, no message) while the server has nothing of it
    in hand before it is closed (IDLE_TIMEOUT, close 1008); 0: never"""
    max_memory_mb: float = option(0.0, "--max-memory-mb", between=(0.0, 1e9))
    """resident memory (MB) beyond which new sessions and clips are refused with OVERLOADED, and a
    clip is decoded only as far as the memory left allows; 0: 80% of the machine's memory"""
    malloc_arenas: int = option(2, "--malloc-arenas", between=(0, 64))
    """glibc malloc arenas the server may use (set at start; the MALLOC_ARENA_MAX environment
    variable wins); 0: glibc's default, up to 8 per core, where memory a thread freed stays with
    its arena and the server's resident memory creeps up over sessions (40 sessions of a 70 s
    recording: 406 -> 628 MiB still growing; with 2 arenas 365 -> 497 MiB, flat from the tenth)"""
    max_clip_s: float = option(7200.0, "--max-clip-seconds", between=(1.0, 86400.0))
    """longest audio a clip may decode to (MESSAGE_TOO_BIG beyond it); an hour takes 230 MB while it
    is transcribed"""
    max_session_s: float = option(86400.0, "--max-session-duration", between=(0.0, 30 * 86400.0))
    """seconds a session may last; then its audio is finalised and it is closed (SESSION_TIMEOUT,
    close 1008); 0: no limit"""
    resume_window_s: float = option(30.0, "--resume-window", between=(0.0, 3600.0))
    """seconds a session whose connection dropped before `end` is kept for its client to reconnect
    with ?resume=SESSION_ID&last_segment=N (decoding goes on meanwhile); then its audio is finalised
    for the forwarder; 0: no resume"""
    write_timeout_s: float = option(60.0, "--write-timeout", between=(0.0, 86400.0))
    """seconds one message to a client may wait to be sent: a client that stops reading is closed
    (1008) and its slot freed; 0: never"""
    handshake_timeout_s: float = option(10.0, "--handshake-timeout", between=(0.0, 3600.0))
    """seconds a new connection may take to send its HTTP request (the WebSocket upgrade) before it
    is dropped; 0: never"""
    max_lag_s: float = option(0.0, "--max-lag", between=(0.0, 3600.0))
    """seconds of final-word lag the admitted live streams are kept under: a new one that would push
    them past it is refused at connect with OVERLOADED (close 1013); 0: 2 s plus twice the warm-up
    decode time"""

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)


# ForwardConfig's name for each forwarding setting. forward/config.py is imported only to
# forward (the forward package brings the forwarder's HTTP stack), so the settings declare its
# defaults again; a unit test fails when a name or a default drifts.
FORWARD_CONFIG_NAMES = {
    "forward_url": "url",
    "max_messages": "max_messages",
    "forward_format": "format",
    "forward_headers": "headers",
    "forward_prompt": "prompt_template",
    "forward_n_predict": "llama_n_predict",
    "forward_model": "openai_model",
    "data_dir": "data_dir",
    "forward_max_outbox_mb": "max_outbox_mb",
}


class ForwardOptions(Group):
    """forwarding"""

    forward_url: str | None = option(None, "-f", "--forward-url")
    """HTTP backend that receives transcripts (e.g. llama.cpp /completion)"""
    max_messages: int = option(1, "-nm", "--max-messages", between=(1, 100000))
    """finals per forwarded batch"""
    forward_format: Literal["auto", "text", "json", "llama", "openai"] = option(
        "auto", "--forward-format"
    )
    """request body: auto picks llama for /completion, openai for /chat/completions, else json; text
    is the whisper.cpp seed's plain body"""
    forward_headers: OneOrMore[str] = option([], "--forward-header", metavar="'NAME: VALUE'")
    """extra request header, e.g. 'Authorization: Bearer KEY' (repeatable; the variable holds
    one)"""
    forward_prompt: str = option("{text}", "--forward-prompt")
    """prompt template for llama/openai, with {text} for the transcript"""
    forward_n_predict: int = option(256, "--forward-n-predict", between=(-1, 1_000_000))
    """llama.cpp n_predict (tokens to generate; -1: no limit)"""
    forward_model: str = option("default", "--forward-model")
    """the model field of OpenAI-style requests"""
    data_dir: str | None = option(None, "--data-dir")
    """where the forwarding outbox lives (default: the user's data dir); with --ray, each
    replica's in a slot of it (replicas/<n>/), so the replicas must share it"""
    forward_max_outbox_mb: float = option(256.0, "--forward-max-outbox-mb", between=(0, 1_000_000))
    """the outbox's size on disk; when full, new finals are not forwarded (their clients are told, a
    counter and the log say so); 0: no cap"""

    @property
    def forward_config(self) -> ForwardConfig | None:
        """The forwarder's configuration (None: no --forward-url): these fields under
        ForwardConfig's names, one left None at the config's default; ValueError on a bad value."""
        if not self.forward_url:
            return None
        from whisperwire.forward.config import ForwardConfig

        given = {
            FORWARD_CONFIG_NAMES[name]: getattr(self, name) for name in ForwardOptions.model_fields
        }
        return ForwardConfig(**{key: value for key, value in given.items() if value is not None})


class RayOptions(Group):
    """Ray Serve (the ray extra: pip install 'whisperwire[ray]')"""

    ray: bool = option(False, "--ray")
    """serve as a Ray Serve application: the app in --ray-replicas replicas behind Ray's proxy
    (which listens on -H/-p), on a local Ray cluster started here or the one at --ray-address"""
    ray_address: str | None = option(None, "--ray-address")
    """a running Ray cluster to deploy to (e.g. auto, or ray://head:10001); default: start one
    here"""
    ray_replicas: int = option(2, "--ray-replicas", between=(1, 10000))
    """replicas of the app, each with its own sessions (and copy of the model, unless
    --ray-model-replicas)"""
    ray_replica_cpus: float = option(1.0, "--ray-replica-cpus", between=(0.0, 1024.0))
    """CPUs Ray reserves for each replica (match -t x -w)"""
    ray_model_replicas: int = option(0, "--ray-model-replicas", between=(0, 10000))
    """replicas of a model deployment that decodes for all the app's replicas through one
    scheduler (their sessions' partial decodes batched where the device batches); 0: each app
    replica loads its own model"""
    ray_model_cpus: float = option(2.0, "--ray-model-cpus", between=(0.0, 1024.0))
    """CPUs Ray reserves for each model replica (--ray-replica-gpus then goes to these)"""
    ray_replica_gpus: float = option(0.0, "--ray-replica-gpus", between=(0.0, 64.0))
    """GPUs Ray reserves for each replica"""


GROUPS = (ModelOptions, StreamingOptions, NetworkOptions, LimitOptions, ForwardOptions, RayOptions)


# The groups are listed last to first: pydantic orders the fields of the bases that way round.
class Settings(
    RayOptions,
    ForwardOptions,
    LimitOptions,
    NetworkOptions,
    StreamingOptions,
    ModelOptions,
    BaseSettings,
):
    """Every `serve` setting; keyword arguments (the flags given) beat WHISPERWIRE_* variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,  # WHISPERWIRE_PORT= is the default, as in a compose file
        validate_by_name=True,
        extra="forbid",
    )

    @model_validator(mode="after")
    def _pairs(self) -> Settings:
        if self.checkpoint and self.model:
            raise ValueError(
                f"{source('checkpoint')}: give either --checkpoint or -m/--model, not both"
            )
        if self.keyfile and not self.certfile:
            raise ValueError(f"{source('keyfile')}: give --certfile/--ssl-cert with it")
        return self


def flags(name: str) -> list[str]:
    return _extra(Settings.model_fields[name])["flags"]


def variable(name: str) -> str:
    return str(Settings.model_fields[name].validation_alias)


def metavar(name: str) -> str:
    """What the help calls a flag's value: as declared, or the variable without its prefix."""
    return _extra(Settings.model_fields[name])["metavar"] or variable(name)[len(ENV_PREFIX) :]


def source(name: str) -> str:
    """Where a field comes from, for messages: `-p/--port / WHISPERWIRE_PORT`."""
    return f"{'/'.join(flags(name))} / {variable(name)}"


def load_settings(**given: Any) -> Settings:
    """Settings from the flags given (by field name) and the variables; raises UsageError."""
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise UsageError("; ".join(_explain(error) for error in exc.errors())) from None
    except SettingsError as exc:  # a variable the settings source could not read at all
        raise UsageError(str(exc)) from None


def _extra(info: FieldInfo) -> dict[str, Any]:
    assert isinstance(info.json_schema_extra, dict)
    return info.json_schema_extra


_BY_KEY = {
    key: name
    for name, info in Settings.model_fields.items()
    for key in (name, info.validation_alias)
}


def _explain(error: ErrorDetails) -> str:
    """One pydantic error as `FLAG / VARIABLE: reason` (a check across fields names its own)."""
    kind, value, context = error["type"], error["input"], error.get("ctx", {})
    if kind == "extra_forbidden":  # a name no flag has (a Serve config file's args)
        return f"{error['loc'][0]}: not a setting of whisperwire serve (see its --help)"
    if kind == "value_error":
        reason = str(context["error"])
    elif kind in ("greater_than_equal", "less_than_equal"):
        metadata = Settings.model_fields[_BY_KEY[error["loc"][0]]].metadata
        low = next(m.ge for m in metadata if isinstance(m, Ge))
        high = next(m.le for m in metadata if isinstance(m, Le))
        reason = f"{value} is out of range ({low:g} to {high:g})"
    elif kind.startswith("int_"):
        reason = f"{value!r} is not an integer"
    elif kind.startswith("float_"):
        reason = f"{value!r} is not a number"
    elif kind == "bool_parsing":
        reason = f"{value!r} is not one of 1, 0, true, false, yes, no"
    elif kind == "literal_error":
        reason = f"{value!r} is not one of {context['expected']}"
    else:
        reason = error["msg"]
    if not error["loc"]:
        return reason
    return f"{source(_BY_KEY[str(error['loc'][0])])}: {reason}"
