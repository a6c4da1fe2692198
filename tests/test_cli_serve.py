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
