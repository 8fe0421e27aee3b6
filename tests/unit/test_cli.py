"""The `whisperwire` command's settings: flags and WHISPERWIRE_* variables, one model."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from whisperwire.cli import build_parser, main, settings_from_args
from whisperwire.forward import ForwardConfig
from whisperwire.policy_config import PolicyConfig
from whisperwire.settings import (
    FORWARD_CONFIG_NAMES,
    ForwardOptions,
    Settings,
    StreamingOptions,
    UsageError,
    load_settings,
    variable,
)

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def no_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings' variables of whoever runs the tests do not leak into them."""
    for name in Settings.model_fields:
        monkeypatch.delenv(variable(name), raising=False)


def serve(*argv: str) -> Settings:
    return settings_from_args(build_parser("serve").parse_args(["serve", *argv]))


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WHISPERWIRE_")}
    return subprocess.run(
        [sys.executable, "-m", "whisperwire", *argv],
        env={**clean, "PYTHONPATH": str(SRC), **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_every_serve_flag_in_the_help_shows_its_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    options = capsys.readouterr().out.split("options:", 1)[1]
    described = {}
    for entry in re.split(r"\n(?=  -)", options):
        text = " ".join(entry.split())
        if not text or text.startswith("-h, --help"):
            continue
        flag = re.match(r"(?:-\w+ \S+, )*(?:-\w+, )*(--[\w-]+)", text)
        assert flag, text
        env = re.search(r"\[env: (WHISPERWIRE_\w+)\]", text)
        assert env, f"{flag[1]} shows no variable: {text}"
        described[flag[1]] = env[1]
    assert described["--port"] == "WHISPERWIRE_PORT"
    assert described["--translate"] == "WHISPERWIRE_TRANSLATE"
    assert described["--no-gpu"] == "WHISPERWIRE_NO_GPU"
    assert described["--allowed-origin"] == "WHISPERWIRE_ALLOWED_ORIGINS"
    assert len(described) == len(Settings.model_fields)


def test_help_shows_the_variables_values_but_never_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHISPERWIRE_PORT", "9100")
    monkeypatch.setenv("WHISPERWIRE_API_KEY", "s3cret")
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "port to listen on (default: 9100)" in text
    assert "s3cret" not in text


def test_every_setting_has_its_help() -> None:
    """A field's help is the docstring under it: a forgotten one would show as "None"."""
    assert [name for name, info in Settings.model_fields.items() if not info.description] == []


def test_a_port_out_of_range_in_the_variable_exits_2_naming_flag_and_variable() -> None:
    line = one_line(run("serve", WHISPERWIRE_PORT="70000"))
    assert "--port" in line and "WHISPERWIRE_PORT" in line
    assert "70000 is out of range (1 to 65535)" in line


def test_a_bad_variable_stops_even_the_help_with_one_line() -> None:
    line = one_line(run("serve", "--help", WHISPERWIRE_BEAM_SIZE="x"))
    assert "--beam-size" in line and "WHISPERWIRE_BEAM_SIZE" in line and "'x'" in line


def test_a_bad_flag_exits_2_naming_flag_and_variable() -> None:
    line = one_line(run("serve", "--max-backlog", "-1"))
    assert "--max-backlog / WHISPERWIRE_MAX_BACKLOG: -1 is out of range (0 to 3600)" in line


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-p", "0"], "-p/--port / WHISPERWIRE_PORT: 0 is out of range (1 to 65535)"),
        (["-t", "2.5"], "-t/--threads / WHISPERWIRE_THREADS: '2.5' is not an integer"),
        (["--step", "soon"], "--step / WHISPERWIRE_STEP: 'soon' is not a number"),
        (["--commit", "never"], "--commit / WHISPERWIRE_COMMIT: 'never' is not one of"),
        (["--compute-type", "int4"], "--compute-type / WHISPERWIRE_COMPUTE_TYPE: 'int4'"),
        (["--allowed-origin", "ftp://a"], "WHISPERWIRE_ALLOWED_ORIGINS: 'ftp://a' is not an"),
        (["--keyfile", "k.pem"], "--keyfile/--ssl-key / WHISPERWIRE_KEYFILE: give --certfile"),
        (["--checkpoint", "d", "-m", "base"], "--checkpoint / WHISPERWIRE_CHECKPOINT: give"),
    ],
)
def test_bad_values_name_their_flag_and_variable(argv: list[str], words: str) -> None:
    with pytest.raises(UsageError, match=re.escape(words)):
        serve(*argv)


def test_a_bad_variable_is_checked_like_its_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPERWIRE_VAD_THOLD", "1.5")
    with pytest.raises(UsageError, match=r"-vth/--vad-thold / WHISPERWIRE_VAD_THOLD: 1.5 is out"):
        load_settings()
    monkeypatch.setenv("WHISPERWIRE_VAD_THOLD", "nan")
    with pytest.raises(UsageError, match="WHISPERWIRE_VAD_THOLD"):
        load_settings()


def test_a_flag_beats_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPERWIRE_PORT", "9100")
    monkeypatch.setenv("WHISPERWIRE_API_KEY", "a,b")
    assert serve().port == 9100
    assert serve().api_keys == ["a", "b"]
    assert serve("-p", "9200").port == 9200
    assert serve("--api-key", "c").api_keys == ["c"]


@pytest.mark.parametrize(
    ("value", "on"), [("1", True), ("true", True), ("yes", True), ("0", False), ("no", False)]
)
def test_translate_and_no_gpu_have_variables(
    monkeypatch: pytest.MonkeyPatch, value: str, on: bool
) -> None:
    monkeypatch.setenv("WHISPERWIRE_TRANSLATE", value)
    monkeypatch.setenv("WHISPERWIRE_NO_GPU", value)
    settings = serve()
    assert settings.translate is on and settings.no_gpu is on
    monkeypatch.setenv("WHISPERWIRE_TRANSLATE", "maybe")
    with pytest.raises(UsageError, match="-tr/--translate / WHISPERWIRE_TRANSLATE: 'maybe'"):
        load_settings()


def test_an_empty_variable_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPERWIRE_PORT", "")
    assert serve().port == 9002


def test_an_api_key_never_appears_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPERWIRE_API_KEY", "from-the-env")
    settings = serve("--api-key", "s3cret", "--api-key", "other")
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "s3cret" not in shown and "other" not in shown and "from-the-env" not in shown
    assert settings.api_keys == ["s3cret", "other"]  # what the server compares with


def test_lists_from_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPERWIRE_ALLOWED_ORIGINS", "https://App.example.com/, http://b:8080")
    monkeypatch.setenv("WHISPERWIRE_FORWARD_HEADER", "Accept: a, b")
    settings = serve()
    assert settings.allowed_origins == ["https://app.example.com", "http://b:8080"]
    assert settings.forward_headers == ["Accept: a, b"]


def test_the_streaming_flags_make_the_policy_config() -> None:
    policy = serve(
        "--step", "0.8", "--commit", "agreement", "-vth", "0.6", "--prompt-chars", "80"
    ).policy
    assert (policy.step_s, policy.commit, policy.vad_threshold) == (0.8, "agreement", 0.6)
    assert policy.prompt_chars == 80
    assert (
        policy.max_window_s == PolicyConfig().max_window_s
    )  # a field without a flag keeps the policy's default


def test_every_streaming_setting_is_a_policy_config_field_with_its_type_and_default() -> None:
    """The flags' defaults come from PolicyConfig and the config is built by field name: a
    setting renamed, retyped or given its own default fails here, not in a session."""
    config = {field.name: field for field in dataclasses.fields(PolicyConfig)}
    types = typing.get_type_hints(PolicyConfig)
    for name, info in StreamingOptions.model_fields.items():
        assert name in config, name
        assert (info.annotation, info.default) == (types[name], config[name].default), name
    assert load_settings().policy == PolicyConfig()


def test_every_forwarding_setting_is_a_forward_config_field_with_its_default() -> None:
    """The forwarding settings declare ForwardConfig's defaults again (the config lives in the
    forwarder's package, imported only to forward): a name or a default that drifts fails here."""
    assert set(FORWARD_CONFIG_NAMES) == set(ForwardOptions.model_fields)
    fields = {field.name for field in dataclasses.fields(ForwardConfig)}
    assert set(FORWARD_CONFIG_NAMES.values()) <= fields
    url = "http://127.0.0.1:9/hook"
    assert load_settings().forward_config is None
    assert load_settings(forward_url=url).forward_config == ForwardConfig(url=url)


def test_the_forwarding_flags_make_the_forward_config() -> None:
    config = serve("-f", "http://b/completion", "--forward-prompt", "Q: {text}").forward_config
    assert config is not None and config.prompt_template == "Q: {text}"
    assert (config.url, config.resolved_format) == ("http://b/completion", "llama")


def test_a_forwarding_value_the_config_refuses_exits_2_in_one_line() -> None:
    line = one_line(run("serve", "-f", "http://b/hook", "--forward-prompt", "no field"))
    assert "forwarding: invalid prompt template 'no field'" in line


def test_serving_does_not_import_the_benchmark() -> None:
    probe = (
        "import sys; from whisperwire.cli import build_parser, settings_from_args; "
        "settings_from_args(build_parser('serve').parse_args(['serve', '-p', '9100'])); "
        "print(sorted(m for m in sys.modules if m.startswith('whisperwire.bench')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "{serve,bench,replay,transcribe}"),
        (["bench"], "--server-args"),
        (["replay"], "--long-seconds"),
    ],
)
def test_the_other_helps_still_work(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0 and words in capsys.readouterr().out
