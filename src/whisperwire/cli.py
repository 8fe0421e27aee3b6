"""The `whisperwire` command: flag parsing and validation into one Settings object."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from whisperwire import __version__
from whisperwire.policy import PolicyConfig
from whisperwire.settings import Settings

if TYPE_CHECKING:
    from whisperwire.forward import Forwarder

COMPUTE_TYPES = (
    "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16",
    "float16", "bfloat16", "float32", "default", "auto",
)  # fmt: skip


class UsageError(Exception):
    """A bad flag value: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the message already names the flag.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _ranged(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low:g} to {high:g})")
        return value

    parse.__name__ = kind.__name__
    return parse


def _env(name: str, default: Any) -> Any:
    return os.environ.get(f"WHISPERWIRE_{name}", default)


def _whisper_languages() -> frozenset[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


def _origin(text: str) -> str:
    """An origin as browsers send it: scheme://host[:port], lower case, no path."""
    origin = text.strip().lower().rstrip("/")
    parts = urllib.parse.urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an origin; write it as https://host or http://host:port"
        )
    return origin


def build_parser() -> Parser:
    parser = Parser(prog="whisperwire", description="Live speech-to-text over WebSocket.")
    parser.add_argument("--version", action="version", version=f"whisperwire {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=Parser)

    serve = commands.add_parser(
        "serve",
        help="run the WebSocket transcription server",
        description="Run the WebSocket server. Every flag also reads WHISPERWIRE_<NAME> "
        "from the environment (e.g. WHISPERWIRE_PORT).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    m = serve.add_argument_group("model")
    m.add_argument(
        "-m",
        "--model",
        default=_env("MODEL", None),
        help="faster-whisper model name (tiny.en, base, small, large-v3-turbo, org/repo: "
        "fetched from the hub where there is internet), a local CTranslate2 directory, or a "
        "Hugging Face Whisper checkpoint directory; default: the bundled tiny.en",
    )
    m.add_argument(
        "--checkpoint",
        default=_env("CHECKPOINT", None),
        help="a fine-tuned Hugging Face Whisper checkpoint directory (same as -m DIR)",
    )
    m.add_argument(
        "-t",
        "--threads",
        type=_ranged(int, 0, 256),
        default=int(_env("THREADS", 0)),
        help="CPU threads of each worker (0: the cores shared out among the workers)",
    )
    m.add_argument(
        "-w",
        "--workers",
        type=_ranged(int, 0, 64),
        default=int(_env("WORKERS", 0)),
        help="decodes run at once, on one copy of the weights (CTranslate2 inter_threads): "
        "more workers of fewer threads each carry more streams, fewer of more threads decode "
        "one stream sooner; 0: one single-threaded worker per core on a CPU, one on a GPU",
    )
    m.add_argument(
        "--batch",
        type=_ranged(int, 0, 64),
        default=int(_env("BATCH", 0)),
        help="partial updates of up to this many sessions decoded in one batched call (one "
        "encode, one greedy generate); 0: 8 on a GPU, 1 (no batching) on a CPU, where it "
        "saves nothing",
    )
    m.add_argument(
        "-l",
        "--language",
        default=_env("LANGUAGE", None),
        help="spoken language code, or 'auto' (default: en for .en models, else auto)",
    )
    m.add_argument("-tr", "--translate", action="store_true", help="translate to English")
    m.add_argument("-ng", "--no-gpu", action="store_true", help="never use CUDA")
    m.add_argument(
        "-bs",
        "--beam-size",
        type=_ranged(int, 1, 16),
        default=int(_env("BEAM_SIZE", 5)),
        help="beam size of the decodes whose words become final",
    )
    m.add_argument(
        "--partial-beam-size",
        type=_ranged(int, 1, 16),
        default=int(_env("PARTIAL_BEAM_SIZE", 1)),
        help="beam size of partial updates (1: greedy); they have no temperature fallback",
    )
    m.add_argument(
        "--compute-type",
        choices=COMPUTE_TYPES,
        default=_env("COMPUTE_TYPE", None),
        help="CTranslate2 compute type (default: int8 on CPU, float16 on GPU)",
    )
    m.add_argument(
        "--cache-dir",
        default=_env("CACHE_DIR", None),
        help="where converted checkpoints are cached (default: the user's cache dir)",
    )
    m.add_argument(
        "--base-model",
        default=_env("BASE_MODEL", None),
        help="where a checkpoint without tokenizer/preprocessor files takes them from",
    )

    s = serve.add_argument_group("streaming")
    policy = PolicyConfig()
    s.add_argument(
        "-vth",
        "--vad-thold",
        type=_ranged(float, 0.0, 1.0),
        default=float(_env("VAD_THOLD", policy.vad_threshold)),
        help="Silero VAD speech probability threshold",
    )
    s.add_argument(
        "--min-silence",
        type=_ranged(float, 0.1, 10.0),
        default=float(_env("MIN_SILENCE", policy.min_silence_s)),
        help="seconds of pause that end a segment",
    )
    s.add_argument(
        "--step",
        type=_ranged(float, 0.1, 10.0),
        default=float(_env("STEP", policy.step_s)),
        help="seconds of new audio between two partial decodes",
    )
    s.add_argument(
        "--trim",
        type=_ranged(float, 2.0, 25.0),
        default=float(_env("TRIM", policy.trim_s)),
        help="seconds of audio a decode window may grow to in continuous speech before it is "
        "cut at the last final word (shorter: cheaper decodes, less context)",
    )
    s.add_argument(
        "--commit",
        choices=("agreement", "one-pass"),
        default=_env("COMMIT", policy.commit),
        help="when a partial decode's words become final: when two decodes agree "
        "(LocalAgreement-2), or after one decode for words that end --commit-guard seconds "
        "before the audio decoded and have --commit-probability",
    )
    s.add_argument(
        "--commit-guard",
        type=_ranged(float, 0.0, 10.0),
        default=float(_env("COMMIT_GUARD", policy.guard_s)),
        help="one-pass commit: seconds a word must end before the end of the audio decoded",
    )
    s.add_argument(
        "--commit-probability",
        type=_ranged(float, 0.0, 1.0),
        default=float(_env("COMMIT_PROBABILITY", policy.min_probability)),
        help="one-pass commit: the least word probability",
    )
    s.add_argument(
        "--commit-stall",
        type=_ranged(float, 0.0, 30.0),
        default=float(_env("COMMIT_STALL", policy.stall_s)),
        help="one-pass commit: once an unsure word has held the words after it back this many "
        "seconds, the next decode is a thorough one (beam, fallback) that commits them; 0: off",
    )
    s.add_argument(
        "--commit-max-age",
        type=_ranged(float, 0.0, 30.0),
        default=float(_env("COMMIT_MAX_AGE", policy.max_age_s)),
        help="one-pass commit: seconds after which a word is committed whatever its "
        "probability (0: never)",
    )

    n = serve.add_argument_group("network")
    n.add_argument("-H", "--host", default=_env("HOST", "0.0.0.0"), help="address to bind")
    n.add_argument(
        "-p",
        "--port",
        type=_ranged(int, 1, 65535),
        default=int(_env("PORT", 9002)),
        help="port to listen on",
    )
    n.add_argument(
        "--max-message-mb",
        type=_ranged(float, 0.001, 4096),
        default=float(_env("MAX_MESSAGE_MB", 128)),
        help="largest WebSocket message accepted, in MiB (128: a 30-minute 16 kHz FLAC, "
        "mono or stereo, in base64)",
    )
    n.add_argument(
        "--certfile",
        "--ssl-cert",
        default=_env("CERTFILE", None),
        help="PEM certificate (chain): serve wss:// (TLS 1.2 or later); the key may be in it",
    )
    n.add_argument(
        "--keyfile",
        "--ssl-key",
        default=_env("KEYFILE", None),
        help="PEM private key (unencrypted) for --certfile",
    )
    n.add_argument(
        "--max-sessions",
        type=_ranged(int, 1, 100000),
        default=int(_env("MAX_SESSIONS", 64)),
        help="concurrent sessions before new ones are refused with OVERLOADED",
    )
    n.add_argument(
        "--max-sessions-per-address",
        type=_ranged(int, 0, 100000),
        default=int(_env("MAX_SESSIONS_PER_ADDRESS", 0)),
        help="sessions one client address may hold at once (OVERLOADED beyond it); 0: no "
        "limit, the default, as a gateway or voice-agent server carries many streams from one "
        "address; set it on an endpoint open to the public",
    )
    n.add_argument(
        "--max-backlog",
        type=_ranged(float, 0.0, 3600.0),
        default=float(_env("MAX_BACKLOG", 30.0)),
        help="seconds of a session's audio that may wait to be decoded; beyond it the server "
        "stops reading from that client until it catches up (TCP slows the sender; nothing "
        "is dropped); 0: no limit",
    )
    n.add_argument(
        "--idle-timeout",
        type=_ranged(float, 0.0, 86400.0),
        default=float(_env("IDLE_TIMEOUT", 300.0)),
        help="seconds a session may send nothing (no audio, no message) while the server has "
        "nothing of it in hand before it is closed (IDLE_TIMEOUT, close 1008); 0: never",
    )
    n.add_argument(
        "--max-memory-mb",
        type=_ranged(float, 0.0, 1e9),
        default=float(_env("MAX_MEMORY_MB", 0.0)),
        help="resident memory (MB) beyond which new sessions and clips are refused with "
        "OVERLOADED, and a clip is decoded only as far as the memory left allows; 0: 80%% of "
        "the machine's memory",
    )
    n.add_argument(
        "--max-clip-seconds",
        type=_ranged(float, 1.0, 86400.0),
        default=float(_env("MAX_CLIP_SECONDS", 7200.0)),
        help="longest audio a clip may decode to (MESSAGE_TOO_BIG beyond it); an hour takes "
        "230 MB while it is transcribed",
    )
    n.add_argument(
        "--max-session-duration",
        type=_ranged(float, 0.0, 30 * 86400.0),
        default=float(_env("MAX_SESSION_DURATION", 86400.0)),
        help="seconds a session may last; then its audio is finalised and it is closed "
        "(SESSION_TIMEOUT, close 1008); 0: no limit",
    )
    n.add_argument(
        "--resume-window",
        type=_ranged(float, 0.0, 3600.0),
        default=float(_env("RESUME_WINDOW", 30.0)),
        help="seconds a session whose connection dropped before `end` is kept for its client "
        "to reconnect with ?resume=SESSION_ID&last_segment=N (decoding goes on meanwhile); "
        "then its audio is finalised for the forwarder; 0: no resume",
    )
    n.add_argument(
        "--write-timeout",
        type=_ranged(float, 0.0, 86400.0),
        default=float(_env("WRITE_TIMEOUT", 60.0)),
        help="seconds one message to a client may wait to be sent: a client that stops "
        "reading is closed (1008) and its slot freed; 0: never",
    )
    n.add_argument(
        "--handshake-timeout",
        type=_ranged(float, 0.0, 3600.0),
        default=float(_env("HANDSHAKE_TIMEOUT", 10.0)),
        help="seconds a new connection may take to send its HTTP request (the WebSocket "
        "upgrade) before it is dropped; 0: never",
    )
    n.add_argument(
        "--max-lag",
        type=_ranged(float, 0.0, 3600.0),
        default=float(_env("MAX_LAG", 0.0)),
        help="seconds of final-word lag the admitted live streams are kept under: a new one "
        "that would push them past it is refused at connect with OVERLOADED (close 1013); "
        "0: 2 s plus twice the warm-up decode time",
    )
    n.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        default=[k for k in _env("API_KEY", "").split(",") if k],
        help="require this key from clients (?token=KEY or 'Authorization: Bearer KEY'); "
        "repeatable; WHISPERWIRE_API_KEY takes a comma-separated list",
    )
    n.add_argument(
        "--allowed-origin",
        action="append",
        metavar="ORIGIN",
        type=_origin,
        default=[o for o in _env("ALLOWED_ORIGINS", "").split(",") if o.strip()],
        help="accept WebSocket connections from web pages of this origin only (e.g. "
        "https://app.example.com; clients that send no Origin header, as non-browser ones, "
        "are not affected): against cross-site WebSocket hijacking; repeatable; "
        "WHISPERWIRE_ALLOWED_ORIGINS takes a comma-separated list; default: any origin",
    )
    n.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=("critical", "error", "warning", "info", "debug"),
    )

    f = serve.add_argument_group("forwarding")
    f.add_argument(
        "-f",
        "--forward-url",
        default=_env("FORWARD_URL", None),
        help="HTTP backend that receives transcripts (e.g. llama.cpp /completion)",
    )
    f.add_argument(
        "-nm",
        "--max-messages",
        type=_ranged(int, 1, 100000),
        default=int(_env("MAX_MESSAGES", 1)),
        help="finals per forwarded batch",
    )
    f.add_argument(
        "--forward-format",
        choices=("auto", "text", "json", "llama", "openai"),
        default=_env("FORWARD_FORMAT", "auto"),
        help="request body: auto picks llama for /completion, openai for /chat/completions, "
        "else json; text is the whisper.cpp seed's plain body",
    )
    f.add_argument(
        "--forward-header",
        action="append",
        metavar="'NAME: VALUE'",
        default=[h for h in [_env("FORWARD_HEADER", None)] if h],
        help="extra request header, e.g. 'Authorization: Bearer KEY' (repeatable)",
    )
    f.add_argument(
        "--forward-prompt",
        default=_env("FORWARD_PROMPT", "{text}"),
        help="prompt template for llama/openai, with {text} for the transcript",
    )
    f.add_argument(
        "--forward-n-predict",
        type=_ranged(int, -1, 1_000_000),
        default=int(_env("FORWARD_N_PREDICT", 256)),
        help="llama.cpp n_predict (tokens to generate; -1: no limit)",
    )
    f.add_argument(
        "--forward-model",
        default=_env("FORWARD_MODEL", "default"),
        help="the model field of OpenAI-style requests",
    )
    f.add_argument(
        "--data-dir",
        default=_env("DATA_DIR", None),
        help="where the forwarding outbox lives (default: the user's data dir)",
    )
    _add_transcribe_parser(commands)
    return parser


def _add_transcribe_parser(commands: Any) -> None:
    from whisperwire.bench.runner import add_bench_arguments

    bench = commands.add_parser(
        "bench",
        help="measure latency, accuracy, capacity, memory and hallucination",
        description="Benchmark a live server (started here, or --url) beside a fixed-window "
        "baseline; writes JSON, Markdown and PNG plots.",
    )
    add_bench_arguments(bench)

    t = commands.add_parser(
        "transcribe",
        help="transcribe audio files on a running server",
        description="Send each FILE to a whisperwire server: as one clip (the default; any "
        "format FFmpeg reads), or decoded and streamed as live PCM with --stream. Prints the "
        "transcript; exit status 1 when the server reports an error, 2 on a usage error.",
    )
    t.add_argument("files", nargs="+", metavar="FILE", help="audio file(s)")
    t.add_argument(
        "--url",
        default=_env("URL", "ws://localhost:9002/"),
        help="server URL, ws:// or wss:// (default: %(default)s)",
    )
    t.add_argument(
        "--stream",
        action="store_true",
        help="stream the decoded audio as live PCM: partials in place on a terminal, finals "
        "as lines",
    )
    t.add_argument("--realtime", action="store_true", help="with --stream: send at real-time pace")
    t.add_argument("-l", "--language", help="language code, or auto (default: the server's)")
    t.add_argument("--json", action="store_true", help="print the server's messages as JSON lines")
    t.add_argument("--cafile", help="PEM CA certificate to verify a wss:// server with")
    t.add_argument(
        "--insecure", action="store_true", help="wss:// without verifying the certificate"
    )


def run_transcribe(args: argparse.Namespace) -> int:
    from whisperwire.client import Options, transcribe

    if args.realtime and not args.stream:
        print("whisperwire transcribe: error: --realtime needs --stream", file=sys.stderr)
        return 2
    options = Options(
        url=args.url,
        stream=args.stream,
        realtime=args.realtime,
        language=args.language,
        json=args.json,
        cafile=args.cafile,
        insecure=args.insecure,
    )
    return transcribe(args.files, options)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Cross-flag validation (what argparse cannot see alone); raises UsageError."""
    if args.checkpoint and args.model:
        raise UsageError("--checkpoint: give either --checkpoint or -m/--model, not both")
    language = args.language
    try:  # those from WHISPERWIRE_ALLOWED_ORIGINS are not checked by argparse
        origins = [_origin(o) for o in args.allowed_origin]
    except argparse.ArgumentTypeError as exc:
        raise UsageError(
            f"argument --allowed-origin (WHISPERWIRE_ALLOWED_ORIGINS): {exc}"
        ) from None
    if args.keyfile and not args.certfile:
        raise UsageError("argument --keyfile/--ssl-key: give --certfile/--ssl-cert with it")
    policy = PolicyConfig(
        vad_threshold=args.vad_thold,
        min_silence_s=args.min_silence,
        step_s=args.step,
        trim_s=args.trim,
        commit=args.commit,
        guard_s=args.commit_guard,
        min_probability=args.commit_probability,
        max_age_s=args.commit_max_age,
        stall_s=args.commit_stall,
    )
    return Settings(
        model=args.checkpoint or args.model,
        threads=args.threads,
        workers=args.workers,
        batch=args.batch,
        language=language or "auto",
        translate=args.translate,
        no_gpu=args.no_gpu,
        beam_size=args.beam_size,
        partial_beam_size=args.partial_beam_size,
        compute_type=args.compute_type,
        checkpoint_cache_dir=args.cache_dir,
        base_model=args.base_model,
        host=args.host,
        port=args.port,
        max_message_mb=args.max_message_mb,
        certfile=args.certfile,
        keyfile=args.keyfile,
        max_sessions=args.max_sessions,
        idle_timeout_s=args.idle_timeout,
        max_backlog_s=args.max_backlog,
        max_memory_mb=args.max_memory_mb,
        max_clip_s=args.max_clip_seconds,
        resume_window_s=args.resume_window,
        max_session_s=args.max_session_duration,
        write_timeout_s=args.write_timeout,
        handshake_timeout_s=args.handshake_timeout,
        max_sessions_per_address=args.max_sessions_per_address,
        max_lag_s=args.max_lag,
        api_keys=list(args.api_key),
        allowed_origins=origins,
        policy=policy,
        forward_url=args.forward_url,
        max_messages=args.max_messages,
        forward_format=args.forward_format,
        forward_headers=list(args.forward_header),
        forward_prompt=args.forward_prompt,
        forward_n_predict=args.forward_n_predict,
        forward_model=args.forward_model,
        data_dir=args.data_dir,
        log_level=args.log_level,
    )


def forwarder_from(settings: Settings) -> Forwarder | None:
    """The forwarder the flags describe, or None; raises UsageError on a bad value."""
    if not settings.forward_url:
        return None
    from whisperwire.forward import ForwardConfig, Forwarder, default_data_dir

    try:
        config = ForwardConfig(
            url=settings.forward_url,
            max_messages=settings.max_messages,
            format=settings.forward_format,
            headers=settings.forward_headers,
            data_dir=Path(settings.data_dir) if settings.data_dir else default_data_dir(),
            prompt_template=settings.forward_prompt,
            llama_n_predict=settings.forward_n_predict,
            openai_model=settings.forward_model,
        )
    except ValueError as exc:
        raise UsageError(f"forwarding: {exc}") from None
    return Forwarder(config)


def run_serve(settings: Settings, explicit_language: bool, model_flag: str) -> int:
    from whisperwire.checkpoints import CheckpointError
    from whisperwire.engine import Engine, EngineOptions, ModelError, cuda_available, resolve_model
    from whisperwire.server import TLSError, serve, tls_context

    log = logging.getLogger("whisperwire")
    forwarder = forwarder_from(settings)
    if settings.certfile:  # before the model loads: a bad certificate fails fast
        try:
            tls_context(settings.certfile, settings.keyfile)
        except TLSError as exc:
            flag = "--certfile/--ssl-cert" if exc.which == "cert" else "--keyfile/--ssl-key"
            raise UsageError(f"argument {flag}: {exc}") from None
    flag = model_flag
    if model_flag == "--checkpoint" and not Path(settings.model or "").is_dir():
        raise UsageError(f"argument --checkpoint: directory {settings.model} does not exist")
    try:
        source = resolve_model(settings.model)
    except ModelError as exc:
        raise UsageError(f"argument {flag}: {exc}") from None
    language = settings.language
    # A checkpoint's tokenizer may know codes beyond Whisper's: checked once it is loaded.
    if source.kind != "checkpoint" and language not in ("auto", *_whisper_languages()):
        raise UsageError(
            f"argument -l/--language: unknown language code {language!r} "
            "(use a Whisper code such as en, de, fr, or auto)"
        )
    device = "cuda" if not settings.no_gpu and cuda_available() else "cpu"
    compute_type = settings.compute_type or ("float16" if device == "cuda" else "int8")
    options = EngineOptions(
        device=device,
        compute_type=compute_type,
        threads=settings.threads,
        workers=settings.workers,
        batch=settings.batch,
        beam_size=settings.beam_size,
        partial_beam_size=settings.partial_beam_size,
        cache_dir=settings.checkpoint_cache_dir,
        base_model=settings.base_model,
    )
    log.debug("loading model %s on %s (%s)", source.location, device, compute_type)
    try:
        engine = Engine(source, options)
    except ModelError as exc:
        raise UsageError(f"argument {flag}: {exc}") from None
    except CheckpointError as exc:  # one line naming the problem
        raise UsageError(f"argument {flag}: {exc}") from None
    if explicit_language and settings.language not in ("auto", *engine.languages):
        raise UsageError(
            f"argument -l/--language: the model {engine.name} cannot transcribe "
            f"{settings.language!r} (it knows: {', '.join(sorted(engine.languages))})"
        )
    engine.warm_up()
    log.info("model %s loaded on %s (%s)", engine.name, device, compute_type)
    serve(settings, engine, forwarder)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "bench":
        from whisperwire.bench.runner import run_bench

        return run_bench(args)
    if args.command == "transcribe":
        try:
            return run_transcribe(args)
        except KeyboardInterrupt:
            return 130
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = settings_from_args(args)
        return run_serve(
            settings,
            explicit_language=args.language is not None,
            model_flag="--checkpoint" if args.checkpoint else "-m/--model",
        )
    except UsageError as exc:
        print(f"whisperwire {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
