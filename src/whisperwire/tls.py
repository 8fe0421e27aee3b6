"""The server's TLS context from PEM files, with a one-line reason for each bad file."""

from __future__ import annotations

import re
import ssl


class TLSError(Exception):
    """The certificate or key cannot serve TLS; `which` is "cert" or "key"."""

    def __init__(self, which: str, message: str) -> None:
        super().__init__(message)
        self.which = which


class _Encrypted(Exception):
    pass


def _read_pem(which: str, path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        raise TLSError(which, f"{path} does not exist") from None
    except IsADirectoryError:
        raise TLSError(which, f"{path} is a directory, not a PEM file") from None
    except OSError as exc:
        raise TLSError(which, f"{path} cannot be read: {exc.strerror}") from None


def tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """The server's TLS context: TLS 1.2 at least, Python's default (secure) ciphers.

    `keyfile` may be omitted when `certfile` holds the key too. Raises TLSError with a
    one-line reason for a missing, unreadable, non-PEM, encrypted or mismatched file.
    """
    if "-----BEGIN CERTIFICATE-----" not in _read_pem("cert", certfile):
        raise TLSError("cert", f"{certfile} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    key_which, key_path = ("key", keyfile) if keyfile else ("cert", certfile)
    if not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", _read_pem(key_which, key_path)):
        hint = "" if keyfile else "; give the key file too"
        raise TLSError(key_which, f"{key_path} holds no PEM private key{hint}")

    def encrypted() -> str:
        raise _Encrypted

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile, password=encrypted)
    except _Encrypted:
        raise TLSError(
            key_which,
            f"{key_path} is encrypted with a passphrase; give an unencrypted key "
            "(openssl pkey -in KEY -out PLAIN_KEY)",
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSError(
                key_which,
                f"the private key in {key_path} does not match the certificate in {certfile}",
            ) from None
        raise TLSError("cert", f"cannot load {certfile}: {exc.reason or exc}") from None
    except OSError as exc:
        raise TLSError("cert", f"cannot load {certfile}: {exc.strerror or exc}") from None
    return context
