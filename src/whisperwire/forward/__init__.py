"""Forward final transcripts to an HTTP backend and relay its reply to the client.

Overview
--------
A :class:`Forwarder` collects each session's *final* segments into batches of
``max_messages`` finals, POSTs every closed batch to ``ForwardConfig.url`` in one of
several wire formats and hands the backend's reply back to the session that produced
the speech (``{"type": "forward", ...}``), or logs it when that client is gone.

Batching is per session, never across sessions.  A batch is closed when it holds
``max_messages`` finals, on :meth:`Forwarder.flush` (client ``flush``), on
:meth:`Forwarder.end_session` (client ``end`` / disconnect) and on
:meth:`Forwarder.close` (server shutdown).

Modules: ``config`` (:class:`ForwardConfig`, header/format/template parsing),
``outbox`` (the SQLite outbox and its thread), ``lanes`` (per-session ordered delivery),
``delivery`` (one HTTP attempt, retries with tenacity), ``formats`` (the wire formats
and the reply messages), ``metrics`` and ``forwarder`` (the :class:`Forwarder`).

Durability
----------
Every final is written to a SQLite outbox (``<data_dir>/forward-outbox.sqlite3``)
before :meth:`Forwarder.add_final` returns, so even an open, not yet full batch
survives a crash or SIGKILL.  All SQLite work runs on one dedicated thread whose FIFO
queue also serialises the writes; the event loop never blocks on disk I/O, and memory
holds no texts (a batch's finals are read back when it is sent).  A batch row is
deleted only after the backend answered 2xx.  Connection errors, timeouts, 429 and 5xx
are retried with capped exponential backoff and jitter (``Retry-After`` is honoured);
other statuses are not retried, the error is relayed and the batch is kept with
``state='failed'`` for inspection (``UPDATE batches SET state='pending' WHERE
state='failed'`` and a restart sends them again).  Batches of one session are delivered
strictly in order: batch k+1 is not sent before batch k succeeded or failed permanently.
A new Forwarder on the same data dir closes the batches a dead process left open and
delivers everything still pending; a second one while the first runs is refused (file
lock).  The outbox is capped by ``ForwardConfig.max_outbox_mb`` (see its docstring for
what happens to finals while it is full).

Delivery is exactly once from the outbox's point of view.  The unavoidable
at-least-once edge: if the backend received a batch but its 2xx never reached us (or
we were killed/closed after sending but before the delete was committed), the batch
is sent again.  Every request carries ``Idempotency-Key: <batch uuid>`` (stable across
retries and restarts) so a backend that cares can de-duplicate.

Wire formats (``ForwardConfig.format``)
---------------------------------------
``text``    the seed's form: ``Content-Type: text/plain``, finals' texts joined by
            ``"\\n"``, header ``X-Connection-ID: <session id>``.
``json``    ``{"session_id", "batch", "segments": [{"segment_id", "text", "start",
            "end"}], "text"}``; ``batch`` counts from 0 per session, ``text`` is the
            segment texts joined by ``"\\n"``.
``llama``   llama.cpp ``/completion``: ``{"prompt", "n_predict", "stream": false}``; the
            reply's ``content`` is relayed.
``openai``  ``/v1/chat/completions``: ``{"model", "messages": [{"role": "user",
            "content"}]}``; the reply's ``choices[0].message.content`` is relayed.
``auto``    ``llama`` if the URL path ends in ``/completion``, ``openai`` if it ends in
            ``/chat/completions``, else ``json``.

Every format also sends ``X-Connection-ID`` and ``Idempotency-Key``; user headers
(``ForwardConfig.headers``) are added last and override defaults of the same name.

Reply to the client
-------------------
For every batch that is delivered or fails permanently, the session's registered
callback (:meth:`Forwarder.attach`) receives::

    {"type": "forward", "batch": <n>, "segment_ids": [...], "status": <HTTP status|null>,
     "response": <reply>, "error": <null|text>}

``response`` is the backend's body (parsed JSON, else text); for ``llama``/``openai``
it is the model's content string and the full parsed reply is added as ``"body"``.  A
2xx reply without that content gives ``response: null`` and an ``error`` (the batch still
counts as delivered).  Transient failures are not reported (they are retried); a
permanent failure has ``error`` set and ``status`` = the HTTP status (null for network
errors when ``max_attempts`` ran out, and for a final not forwarded because the outbox
was full).  Without a callback the reply is logged.

Lifecycle (server wiring)
-------------------------
startup: ``await fw.start()``; connect: ``fw.attach(sid, send_json)``; each final:
``await fw.add_final(sid, seg)``; client ``flush``: ``await fw.flush(sid)``; client
``end``: ``await fw.end_session(sid, wait_s=...)``; disconnect:
``await fw.end_session(sid)``; shutdown (after the sessions): ``await fw.close()``.
"""

from whisperwire.forward.config import (
    FORMATS,
    ForwardConfig,
    default_data_dir,
    parse_header,
    resolve_format,
)
from whisperwire.forward.delivery import parse_retry_after
from whisperwire.forward.forwarder import Forwarder, SendFn
from whisperwire.forward.metrics import ForwardMetrics, PrometheusForwardMetrics
from whisperwire.forward.outbox import OUTBOX_FILENAME

__all__ = [
    "FORMATS",
    "OUTBOX_FILENAME",
    "ForwardConfig",
    "ForwardMetrics",
    "Forwarder",
    "PrometheusForwardMetrics",
    "SendFn",
    "default_data_dir",
    "parse_header",
    "parse_retry_after",
    "resolve_format",
]
