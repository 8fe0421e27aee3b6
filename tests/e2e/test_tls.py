"""wss:// end to end: a self-signed certificate made here, the server on it, clients against it."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import Server, audio_root, free_port, recv_json, start_server, transcripts, wer
from websockets.exceptions import InvalidHandshake
from websockets.sync.client import connect


@dataclass
class Pki:
    cert: Path
    key: Path
    other_key: Path  # belongs to another certificate
    encrypted_key: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("pki")
    made = Pki(d / "cert.pem", d / "key.pem", d / "other-key.pem", d / "encrypted-key.pem")
    pairs = [(made.cert, made.key, "localhost"), (d / "other.pem", made.other_key, "other")]
    for cert, key, name in pairs:
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        )  # fmt: skip
    openssl("pkey", "-in", str(made.key), "-aes256", "-passout", "pass:secret",
            "-out", str(made.encrypted_key))  # fmt: skip
    return made


@pytest.fixture(scope="module")
def server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    audio_root()
    srv = start_server(
        tmp_path_factory.mktemp("tls"), "--certfile", str(pki.cert), "--keyfile", str(pki.key)
    )
    srv.scheme = "wss"
    yield srv
    srv.stop()


def client_context(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.cert))


def transcribe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whisperwire", "transcribe", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


JFK = str(Path("jfk") / "jfk.flac")


def test_wss_session_works_with_the_ca(server: Server, pki: Pki) -> None:
    with connect(server.url, ssl=client_context(pki), open_timeout=30) as ws:
        assert recv_json(ws)["state"] == "ready"
        ws.send('{"type":"ping"}')
        assert recv_json(ws)["state"] == "pong"
        assert ws.socket.version() in ("TLSv1.2", "TLSv1.3")


def test_cli_client_transcribes_over_wss_with_cafile(server: Server, pki: Pki) -> None:
    jfk = str(audio_root() / JFK)
    out = transcribe(jfk, "--url", server.url, "--cafile", str(pki.cert))
    assert out.returncode == 0, out.stderr
    assert wer([transcripts("jfk")["jfk.flac"]], [out.stdout]) <= 0.1
    insecure = transcribe(jfk, "--url", server.url, "--insecure", "--stream")
    assert insecure.returncode == 0, insecure.stderr
    assert wer([transcripts("jfk")["jfk.flac"]], [insecure.stdout]) <= 0.35


def test_unverified_certificate_is_refused_by_the_client(server: Server) -> None:
    out = transcribe(str(audio_root() / JFK), "--url", server.url)
    assert out.returncode == 1
    assert "certificate verify failed" in out.stderr and "Traceback" not in out.stderr


def test_plain_ws_against_the_tls_port_fails(server: Server) -> None:
    plain = f"ws://127.0.0.1:{server.port}/"
    with pytest.raises((InvalidHandshake, OSError, EOFError)):
        connect(plain, open_timeout=10).close()
    out = transcribe(str(audio_root() / JFK), "--url", plain)
    assert out.returncode == 1 and "wss://" in out.stderr, out.stderr


def test_tls_below_1_2_is_refused(server: Server, pki: Pki) -> None:
    context = client_context(pki)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old versions
    with pytest.warns(DeprecationWarning):
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass


@pytest.mark.parametrize(
    ("args", "flag", "words"),
    [
        (["--keyfile", "{d}/missing.pem"], "--keyfile/--ssl-key", "does not exist"),
        (["--ssl-key", "{d}"], "--keyfile/--ssl-key", "is a directory"),
        (["--ssl-key", "{other_key}"], "--keyfile/--ssl-key", "does not match"),
        (["--keyfile", "{encrypted_key}"], "--keyfile/--ssl-key", "encrypted"),
        (["--keyfile", "{cert}"], "--keyfile/--ssl-key", "no PEM private key"),
        (["--keyfile", "{key}", "--certfile", "{key}"], "--certfile/--ssl-cert", "no PEM cert"),
        (["--keyfile", "{key}", "--ssl-cert", "{d}/nope.pem"], "--certfile/--ssl-cert", "exist"),
        (["--keyfile", "{key}", "--certfile", "/"], "--certfile/--ssl-cert", "directory"),
        (["--keyfile", "{key}"], None, "give --certfile"),  # no certificate at all
    ],
)
def test_bad_certificate_or_key_stops_the_server_with_exit_2(
    pki: Pki, args: list[str], flag: str | None, words: str
) -> None:
    names = {"d": pki.cert.parent, **{k: getattr(pki, k) for k in vars(pki)}}
    argv = [a.format(**names) for a in args]
    if flag is not None and "--certfile" not in argv and "--ssl-cert" not in argv:
        argv += ["--certfile", str(pki.cert)]
    out = subprocess.run(
        [sys.executable, "-m", "whisperwire", "serve", "-p", str(free_port()), *argv],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], out.stderr
    assert flag is None or flag in lines[0]
    assert "Traceback" not in out.stderr
