"""The forwarder's settings: :class:`ForwardConfig` and the parsing of its headers, wire
format names and prompt template."""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

FORMATS: tuple[str, ...] = ("auto", "text", "json", "llama", "openai")

# RFC 9110 token characters for a header field name.
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers that control message framing; letting users set them would corrupt requests.
_FORBIDDEN_HEADERS = frozenset({"content-length", "transfer-encoding"})


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/whisperwire`` (``~/.local/share/whisperwire`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "whisperwire"


def parse_header(value: str) -> tuple[str, str]:
    """Parse a ``'Name: value'`` string (e.g. from ``--forward-header``).

    Raises ValueError naming the offending header; a header's value is never echoed
    back because it is typically a secret (API key).
    """
    name, sep, val = value.partition(":")
    name = name.strip()
    if not sep:
        raise ValueError(f"invalid forward header {value!r}: expected 'Name: value'")
    if not _TOKEN_RE.match(name):
        raise ValueError(
            f"invalid forward header name {name!r}: must be a non-empty HTTP token "
            "(letters, digits, and !#$%&'*+-.^_`|~)"
        )
    if name.lower() in _FORBIDDEN_HEADERS:
        raise ValueError(f"forward header {name!r} cannot be set; httpx computes it")
    val = val.strip()
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in val):
        raise ValueError(
            f"invalid forward header {name!r}: value contains a control character (CR, LF, ...)"
        )
    try:
        val.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"invalid forward header {name!r}: value must be ASCII/latin-1") from None
    return name, val


def resolve_format(url: str, fmt: str = "auto") -> str:
    """Return the concrete wire format (``text|json|llama|openai``) for ``url``."""
    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown forward format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    path = urlsplit(url).path.rstrip("/")
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/completion"):
        return "llama"
    return "json"


def _check_template(template: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"invalid prompt template {template!r}: {exc}") from None
    if fields != {"text"}:
        raise ValueError(
            f"invalid prompt template {template!r}: it must use the field {{text}} and no "
            "other field (write literal braces as {{ and }})"
        )


@dataclass
class ForwardConfig:
    """Settings of the transcript forwarder (see the CLI's ``--forward-*`` flags).

    Outbox cap (``max_outbox_mb``): the SQLite outbox holds the finals not yet delivered,
    so a backend that stays down makes it grow.  Once the outbox uses ``max_outbox_mb``
    (its pages in use, measured after each write), it is *full*: a new final is not
    written to it and never reaches the backend, but it is not lost silently.  The
    client still gets the final itself, and then a ``forward`` reply for it with
    ``status: null`` and ``error: "outbox full (...)"``, in a batch of its own (the
    session's open batch is closed first, so batch numbers stay in the order of the
    finals, and the backend sees the skipped number).  Each such final counts in
    ``whisperwire_forward_dropped_total{reason="outbox_full"}`` and in
    :meth:`Forwarder.stats` (``dropped_outbox_full``, ``outbox_full``, ``outbox_bytes``);
    a WARNING is logged once when the outbox becomes full and an INFO line when it has
    room again.  What the outbox already holds is still delivered, in order, and new
    finals are accepted again as soon as deliveries made room.  0 = no cap.
    """

    url: str
    #: Finals per batch.  1 = every final utterance is answered as soon as it is final.
    max_messages: int = 1
    format: str = "auto"
    #: Extra request headers: ``'Name: value'`` strings (as given to ``--forward-header``)
    #: or ``(name, value)`` pairs; validated and normalised to a tuple of pairs.
    headers: Sequence[str | tuple[str, str]] = ()
    data_dir: Path = field(default_factory=default_data_dir)
    #: Read/write/pool timeout of one request (LLM backends can take a while).
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    #: ``str.format`` template with ``{text}``; builds the llama prompt / openai message.
    prompt_template: str = "{text}"
    llama_n_predict: int = 256
    openai_model: str = "default"
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    #: Upper bound on a server's ``Retry-After`` we are willing to honour.
    max_retry_after_s: float = 300.0
    #: Give up (mark failed) after this many attempts; None = retry transient errors
    #: for as long as the process lives (the outbox keeps the batch across restarts).
    max_attempts: int | None = None
    #: Concurrent requests across sessions (per session it is always one at a time).
    max_concurrency: int = 4
    #: Honour HTTP(S)_PROXY / NO_PROXY / SSL_CERT_FILE from the environment.
    trust_env: bool = True
    #: Size of the on-disk outbox (MB) past which new finals are not forwarded (see the
    #: class docstring); 0 = no cap.
    max_outbox_mb: float = 256.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"invalid forward URL {self.url!r}: expected http(s)://host[:port]/path"
            )
        resolve_format(self.url, self.format)  # validates the name
        self.format = self.format.strip().lower()
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {self.max_messages}")
        if self.llama_n_predict == 0 or self.llama_n_predict < -1:
            raise ValueError(f"llama_n_predict must be > 0 or -1, got {self.llama_n_predict}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        for name in ("timeout_s", "connect_timeout_s", "initial_backoff_s", "max_backoff_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_retry_after_s", "max_outbox_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        _check_template(self.prompt_template)
        normalised: list[tuple[str, str]] = []
        for item in self.headers:
            if isinstance(item, str):
                normalised.append(parse_header(item))
            else:
                name, value = item
                normalised.append(parse_header(f"{name}: {value}"))
        self.headers = tuple(normalised)
        self.data_dir = Path(self.data_dir).expanduser()

    @property
    def header_pairs(self) -> list[tuple[str, str]]:
        return [h if isinstance(h, tuple) else parse_header(h) for h in self.headers]

    @property
    def resolved_format(self) -> str:
        return resolve_format(self.url, self.format)

    @property
    def max_outbox_bytes(self) -> int:
        """The cap in bytes; 0 = none."""
        return int(self.max_outbox_mb * 1024 * 1024)
