"""The `whisperwire` command; the `serve` flags are generated from the `Settings` model."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args, get_origin

from whisperwire import __version__
from whisperwire.allocator import limit_arenas
from whisperwire.settings import (
    GROUPS,
    Settings,
    UsageError,
    flags,
    load_settings,
    metavar,
    source,
    variable,
)

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from whisperwire.engine import Engine, ModelSource
    from whisperwire.forward import Forwarder
    from whisperwire.forward.config import ForwardConfig
    from whisperwire.metrics import Metrics


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the message already names the flag.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _choices(annotation: Any) -> tuple[str, ...]:
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return tuple(choice for arg in get_args(annotation) for choice in _choices(arg))


def _argument(name: str, info: FieldInfo, current: Any) -> dict[str, Any]:
    """add_argument's keywords for a field: how it parses, and its help."""
    shown = ",".join(map(str, current)) if isinstance(current, list) else current
    default = "" if shown is None or shown is False or shown == "" else f" (default: {shown})"
    help = f"{info.description}{default} [env: {variable(name)}]".replace("%", "%%")
    kind: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help}
    if info.annotation is bool:
        return {**kind, "action": "store_true"}
    if get_origin(info.annotation) is list:
        return {**kind, "action": "append", "metavar": metavar(name)}
    choices = _choices(info.annotation)
    return {**kind, "metavar": "{" + ",".join(choices) + "}" if choices else metavar(name)}


def _serve_arguments(serve: Parser) -> None:
    """One flag per field, in the field's group; the help shows the variable's value."""
    try:
        current = load_settings()  # the variables alone: a bad one stops even --help
    except UsageError as exc:
        serve.error(str(exc))
    for group in GROUPS:
        section = serve.add_argument_group(group.__doc__)
        for name, info in group.model_fields.items():
            section.add_argument(*flags(name), **_argument(name, info, getattr(current, name)))


def _transcribe_arguments(t: Parser) -> None:
    t.add_argument("files", nargs="+", metavar="FILE", help="audio file(s)")
    t.add_argument(
        "--url",
        default=os.environ.get("WHISPERWIRE_URL", "ws://localhost:9002/"),
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


def _bench_arguments(bench: Parser) -> None:
    from whisperwire.bench.runner import add_bench_arguments

    add_bench_arguments(bench)


def _replay_arguments(replay: Parser) -> None:
    from whisperwire.bench.replay import add_replay_arguments

    add_replay_arguments(replay)


# name: (summary, description, what adds its arguments)
COMMANDS: dict[str, tuple[str, str, Callable[[Parser], None]]] = {
    "serve": (
        "run the WebSocket transcription server",
        "Run the WebSocket server. Every flag also reads the variable shown with it "
        "(booleans: 1, 0, true, false, yes, no); a flag beats its variable.",
        _serve_arguments,
    ),
    "bench": (
        "measure latency, accuracy, capacity, memory and hallucination",
        "Benchmark a live server (started here, or --url) beside a fixed-window "
        "baseline; writes JSON, Markdown and PNG plots.",
        _bench_arguments,
    ),
    "replay": (
        "replay recordings through the streaming policy on a virtual clock",
        "Stream the long-form file (or test-other clips) through the streaming policy with "
        "the real model, on a virtual clock: the same flags give the same transcript run after "
        "run on one machine (nearly: see the README). Compares policies given as `serve` "
        "flags by WER and virtual lag; with several jitter seeds, by their medians.",
        _replay_arguments,
    ),
    "transcribe": (
        "transcribe audio files on a running server",
        "Send each FILE to a whisperwire server: as one clip (the default; any "
        "format FFmpeg reads), or decoded and streamed as live PCM with --stream. Prints the "
        "transcript; exit status 1 when the server reports an error, 2 on a usage error.",
        _transcribe_arguments,
    ),
}


def build_parser(command: str | None = None) -> Parser:
    """The parser, with the arguments of `command` only: bench's import the benchmark, serve's
    read the environment (a bad variable exits 2), and neither is needed by the others."""
    parser = Parser(prog="whisperwire", description="Live speech-to-text over WebSocket.")
    parser.add_argument("--version", action="version", version=f"whisperwire {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=Parser)
    for name, (summary, description, add_arguments) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=description)
        if name == command:
            add_arguments(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand: the first word (the top-level options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The flags given (serve's have no defaults) over the variables; raises UsageError."""
    return load_settings(**{k: v for k, v in vars(args).items() if k in Settings.model_fields})


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


def forward_config(settings: Settings) -> ForwardConfig | None:
    """The forwarding the flags describe, or None; raises UsageError on a bad value."""
    try:
        return settings.forward_config
    except ValueError as exc:
        raise UsageError(f"forwarding: {exc}") from None


def forwarder_from(settings: Settings, metrics: Metrics | None = None) -> Forwarder | None:
    """The forwarder the flags describe (reporting to `metrics`), or None; raises UsageError
    on a bad value."""
    config = forward_config(settings)
    if config is None:
        return None
    from whisperwire.forward import Forwarder

    return Forwarder(config, metrics=metrics.forward() if metrics is not None else None)


def checked_model(settings: Settings) -> ModelSource:
    """The model the settings name, with what can be checked before it loads (the certificate,
    the checkpoint's directory, the language code); raises UsageError."""
    from whisperwire.engine import ModelError, resolve_model
    from whisperwire.languages import whisper_languages
    from whisperwire.server import TLSError, tls_context

    if settings.certfile:  # before the model loads: a bad certificate fails fast
        try:
            tls_context(settings.certfile, settings.keyfile)
        except TLSError as exc:
            name = "certfile" if exc.which == "cert" else "keyfile"
            raise UsageError(f"{source(name)}: {exc}") from None
    flag = source("checkpoint" if settings.checkpoint else "model")
    if settings.checkpoint and Path(settings.checkpoint).is_file():
        raise UsageError(f"{flag}: {settings.checkpoint} is a file (a ggml model file? use -m)")
    if settings.checkpoint and not Path(settings.checkpoint).is_dir():
        raise UsageError(f"{flag}: directory {settings.checkpoint} does not exist")
    try:
        source_model = resolve_model(settings.checkpoint or settings.model)
    except ModelError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    language = settings.language
    # A checkpoint's tokenizer may know codes beyond Whisper's: checked once it is loaded.
    if source_model.kind != "checkpoint" and language not in ("auto", *whisper_languages()):
        raise UsageError(
            f"{source('language')}: unknown language code {language!r} "
            "(use a Whisper code such as en, de, fr, or auto)"
        )
    return source_model


def decoding_options(settings: Settings) -> dict[str, Any]:
    """The `EngineOptions` fields that decide what a decode gives (not where it runs): the
    server's engine and `whisperwire replay`'s take them from the same flags."""
    return {
        "beam_size": settings.beam_size,
        "partial_beam_size": settings.partial_beam_size,
        "window_conditioning": settings.window_conditioning,
        "no_fallback": settings.no_fallback,
        "encoder_pad_s": settings.encoder_pad,
    }


def load_engine(settings: Settings, source_model: ModelSource) -> Engine:
    """The model loaded and warmed up, as the settings say; raises UsageError."""
    from whisperwire.checkpoints import CheckpointError
    from whisperwire.engine import Engine, EngineOptions, ModelError, cuda_available

    log = logging.getLogger("whisperwire")
    flag = source("checkpoint" if settings.checkpoint else "model")
    device = "cuda" if not settings.no_gpu and cuda_available() else "cpu"
    compute_type = settings.compute_type or ("float16" if device == "cuda" else "int8")
    options = EngineOptions(
        device=device,
        compute_type=compute_type,
        threads=settings.threads,
        workers=settings.workers,
        solo_threads=settings.solo_threads,
        batch=settings.batch,
        cache_dir=settings.checkpoint_cache_dir,
        base_model=settings.base_model,
        **decoding_options(settings),
    )
    log.debug("loading model %s on %s (%s)", source_model.location, device, compute_type)
    try:
        engine = Engine(source_model, options)
    except (ModelError, CheckpointError) as exc:  # one line naming the problem
        raise UsageError(f"{flag}: {exc}") from None
    language = settings.language
    if language not in ("auto", *engine.languages):
        raise UsageError(
            f"{source('language')}: the model {engine.name} cannot transcribe "
            f"{language!r} (it knows: {', '.join(sorted(engine.languages))})"
        )
    engine.warm_up()
    log.info("model %s loaded on %s (%s)", engine.name, device, compute_type)
    return engine


def run_serve(settings: Settings) -> int:
    if not settings.ray:  # before the imports below start threads (numpy's, for one)
        limit_arenas(settings.malloc_arenas)
    from whisperwire.metrics import Metrics
    from whisperwire.server import serve

    if settings.ray:
        try:
            from whisperwire.ray_app import run_ray
        except ImportError as exc:
            raise UsageError(
                f"{source('ray')}: Ray Serve is not installed ({exc}); pip install "
                "'whisperwire[ray]'"
            ) from None
        return run_ray(settings)
    metrics = Metrics()  # the server's registry, the forwarder's metrics in it
    forwarder = forwarder_from(settings, metrics)
    engine = load_engine(settings, checked_model(settings))
    serve(settings, engine, forwarder, metrics)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "bench":
        from whisperwire.bench.runner import run_bench

        return run_bench(args)
    if args.command == "replay":
        from whisperwire.bench.replay import run_replay

        return run_replay(args)
    try:
        if args.command == "transcribe":
            return run_transcribe(args)
        settings = settings_from_args(args)
        logging.basicConfig(
            level=getattr(logging, settings.log_level.upper()),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return run_serve(settings)
    except UsageError as exc:
        print(f"whisperwire {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
