"""`tablebot serve` refuses to start without its settings, saying which one is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "TABLEBOT_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_without_app_token_says_so() -> None:
    done = _serve({"SLACK_BOT_TOKEN": "xoxb-test", "TABLEBOT_CONFIG": "examples/tables.toml"})
    assert done.returncode == 2
    assert "SLACK_APP_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_without_tables_file_says_so() -> None:
    done = _serve({"SLACK_APP_TOKEN": "xapp-test", "SLACK_BOT_TOKEN": "xoxb-test"})
    assert done.returncode == 2
    assert "TABLEBOT_CONFIG" in done.stderr


def _settings(tmp_path: Path, slack_url: str, app_token: str) -> dict[str, str]:
    return {
        "SLACK_APP_TOKEN": app_token,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_BASE_URL": slack_url,
        "TABLEBOT_CONFIG": "examples/tables.toml",
        "TABLEBOT_STORE_PATH": str(tmp_path / "jobs.sqlite3"),
        "TABLEBOT_STAGING_DIR": str(tmp_path / "staging"),
    }


def test_serve_with_a_token_slack_refuses_says_what_to_check(tmp_path: Path) -> None:
    from devtools.slack_api import LocalSlackApi

    with LocalSlackApi() as slack:
        done = _serve(_settings(tmp_path, slack.base_url, "xapp-1-not-this-app"))
    assert done.returncode == 2, done.stderr
    assert "Slack refused to open a Socket Mode connection (invalid_auth): check SLACK_APP_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_when_slack_cannot_be_reached_says_so_and_exits_4(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = _serve(_settings(tmp_path, f"http://127.0.0.1:{port}/api/", "xapp-1-test"))
    assert done.returncode == 4, done.stderr
    assert f"cannot reach Slack at http://127.0.0.1:{port}/api/" in done.stderr
    assert "Traceback" not in done.stderr
