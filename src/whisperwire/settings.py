"""One typed settings object for the server, filled by the CLI (flags and WHISPERWIRE_* env)."""

from __future__ import annotations

from dataclasses import dataclass, field

from whisperwire.policy import PolicyConfig


@dataclass
class Settings:
    # model
    model: str | None = None  # None: the bundled tiny.en
    threads: int = 0  # per worker; 0: the cores shared out among the workers
    workers: int = 0  # decodes at once, on one copy of the weights; 0: one per core (CPU)
    batch: int = 0  # sessions' partial windows decoded in one call; 0: 8 on a GPU, 1 on a CPU
    language: str = "auto"  # "en" is forced for English-only models
    translate: bool = False
    no_gpu: bool = False
    beam_size: int = 5  # decodes whose words become final
    partial_beam_size: int = 1  # partial updates (greedy), no temperature fallback
    compute_type: str | None = None  # None: int8 on CPU, float16 on GPU
    checkpoint_cache_dir: str | None = None
    base_model: str | None = None
    # network
    host: str = "0.0.0.0"
    port: int = 9002
    certfile: str | None = None
    keyfile: str | None = None
    max_message_mb: float = 128.0
    max_sessions: int = 64
    max_sessions_per_address: int = 0  # 0: no limit (a gateway may carry many streams)
    max_backlog_s: float = 30.0  # a session's undecoded audio before reading pauses; 0: none
    idle_timeout_s: float = 300.0  # a session sending nothing, with nothing in hand; 0: never
    max_memory_mb: float = 0.0  # resident memory before new work is refused; 0: 80 % of RAM
    max_clip_s: float = 7200.0  # a clip's decoded audio
    max_session_s: float = 86400.0  # a session's age before it is ended; 0: no limit
    resume_window_s: float = 30.0  # a dropped connection may resume within this; 0: never
    write_timeout_s: float = 60.0  # one message waiting to reach a client; 0: never
    handshake_timeout_s: float = 10.0  # a connection's HTTP request (the upgrade); 0: never
    max_lag_s: float = 0.0  # admission: final-word lag kept for admitted streams; 0: auto
    api_keys: list[str] = field(default_factory=list)  # empty: no authentication
    allowed_origins: list[str] = field(default_factory=list)  # browsers' Origin; empty: any
    # streaming
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # forwarding
    forward_url: str | None = None
    max_messages: int = 1
    forward_format: str = "auto"
    forward_headers: list[str] = field(default_factory=list)
    forward_prompt: str = "{text}"
    forward_n_predict: int = 256
    forward_model: str = "default"
    data_dir: str | None = None
    # misc
    log_level: str = "info"

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)
