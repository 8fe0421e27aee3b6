"""The whisper.cpp `stream` dialect (`format=text`): plain text frames.

The server sends `CONNECTION_ID:<session id>` first, then each final's text and each clip's
transcription, nothing else. Its clients send what native clients send (PCM, and JSON
messages when they have any), so frames are read as the native dialect reads them.
"""

from __future__ import annotations

from whisperwire.protocol import events as ev
from whisperwire.protocol import native
from whisperwire.protocol.dialect import Clock, Dialect


def encode(event: ev.ServerEvent, clock: Clock) -> str | None:
    match event:
        case ev.Ready(session_id=session_id):
            return f"CONNECTION_ID:{session_id}"
        case ev.StatusReport(state="ready", session_id=session_id):
            # As the dialect has always answered `status` while nothing is in hand.
            return f"CONNECTION_ID:{session_id}"
        case ev.Final(text=text):
            return text
        case ev.Transcription(transcription=text):
            return text
    return None


DIALECT = Dialect("text", encode, native.read)
