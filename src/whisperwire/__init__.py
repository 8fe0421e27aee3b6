"""whisperwire: live speech-to-text over WebSocket on Whisper models."""

__version__ = "0.1.0"
