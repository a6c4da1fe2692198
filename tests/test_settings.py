"""Every environment variable is defined once in `bot.settings`, parsed once, and documented in
the README from there; the CLI ends quietly on a closed pipe and on Ctrl-C."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import Settings, load_settings, markdown_table, unknown_variables, variables

ROOT = Path(__file__).resolve().parents[1]
TABLEBOT = [sys.executable, "-m", "bot.cli"]


def test_the_readme_table_is_generated_from_the_settings_module() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", readme, re.S)
    assert found, "README.md lost its settings markers"
    assert found.group(1).strip() == markdown_table().strip(), "regenerate: python -m bot.settings --markdown"


def test_no_module_of_the_bot_reads_a_setting_from_the_environment_itself() -> None:
    names = {var.name for _, var in variables()}
    for path in [*(ROOT / "bot").rglob("*.py"), *(ROOT / "handlers").rglob("*.py")]:
        if path.name == "settings.py":
            continue
        text = path.read_text()
        for name in names:
            read = re.search(rf'(getenv\(|get\(|\[)\s*"{name}"', text)
            assert not read, f"{path.relative_to(ROOT)} reads {name} itself; use bot.settings"


def test_defaults_and_typed_values() -> None:
    assert load_settings({}) == Settings()
    settings = load_settings(
        {
            "TABLEBOT_POLL_WORKERS": "8",
            "TABLEBOT_MAX_FILE_MB": "2.5",
            "TABLEBOT_ALLOW_HTTP_DOWNLOADS": "TRUE",
            "TABLEBOT_SLACK_FILE_HOSTS": "a.example, b.example,",
            "TABLEBOT_CONFIG": "tables.toml",
            "TABLEBOT_JOB_TIMEOUT_SECONDS": " ",  # blank is unset
        }
    )
    assert settings.poll_workers == 8
    assert settings.max_file_bytes == 2_500_000
    assert settings.allow_http_downloads is True
    assert settings.slack_file_hosts == ("a.example", "b.example")
    assert settings.config_path == Path("tables.toml")
    assert settings.job_timeout_seconds == Settings().job_timeout_seconds


@pytest.mark.parametrize(
    ("name", "raw", "says"),
    [
        ("TABLEBOT_LEASE_SECONDS", "soon", "must be a number"),
        ("TABLEBOT_POLL_FIRST_CHECK_SECONDS", "0", "positive"),
        ("TABLEBOT_POLL_WORKERS", "2.5", "whole number"),
        ("TABLEBOT_ALLOW_HTTP_DOWNLOADS", "maybe", "true or false"),
        ("TABLEBOT_MAX_FILE_MB", "-1", "positive"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(name: str, raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name} .*{says}"):
        load_settings({name: raw})


def test_unknown_tablebot_variables_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    env = {"TABLEBOT_POLL_WORKER": "8", "TABLEBOT_CONFIG": "t.toml", "HOME": "/root"}
    assert unknown_variables(env) == ["TABLEBOT_POLL_WORKER"]
    with caplog.at_level(logging.WARNING):
        load_settings(env)
    assert "TABLEBOT_POLL_WORKER is not a tablebot setting" in caplog.text


def test_every_setting_is_documented_with_a_meaning_and_a_default() -> None:
    for attr, var in variables():
        assert var.meaning and var.default_text, attr
        assert var.name.isupper(), var.name
    assert len({var.name for _, var in variables()}) == len(dataclasses.fields(Settings))


def _issues_file(tmp_path: Path) -> Path:
    # Enough bad rows that the JSON report is far larger than a pipe's buffer.
    path = tmp_path / "bad.csv"
    path.write_text("host,service\n" + "".join(f"web-{i}\n" for i in range(5000)))
    return path


def test_the_cli_ends_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    file = _issues_file(tmp_path)
    cmd = [*TABLEBOT, "validate", str(file), "--target", "bigpanda", "--columns", "host,service", "--format", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)  # `| head -c 100`
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_ctrl_c_ends_the_cli_with_130_and_no_traceback(tmp_path: Path) -> None:
    fifo = tmp_path / "never-written.csv"
    os.mkfifo(fifo)  # the CLI blocks opening it: interrupted mid-command
    cmd = [*TABLEBOT, "validate", str(fifo), "--target", "bigpanda", "--columns", "host"]
    # A shell's background job (a CI runner may be one) starts children with SIGINT ignored:
    # give the CLI the disposition a terminal gives it.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(1.5)  # let it start; the signal is the point, not the timing
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"Traceback" not in stderr and b"interrupted" in stderr
