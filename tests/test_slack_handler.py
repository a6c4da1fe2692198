"""The Lambda entry point built from the environment alone, as on AWS: it answers a signed
command at once and refuses a forged one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import handlers.slack_events as entry
from bot.errors import ConfigError
from bot.slack.app import build_app
from bot.slack.wiring import build_slack_deps
from devtools.slack_api import LocalSlackApi
from tests.slack_support import ALICE, LAMBDA_CONTEXT, OPS, SECRET, write_slack_tables


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSlackApi]:
    with LocalSlackApi() as slack:
        write_slack_tables(tmp_path / "tables.toml", "http://127.0.0.1:9", "http://127.0.0.1:9/rest")
        for key, value in {
            "TABLEBOT_CONFIG": str(tmp_path / "tables.toml"),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_BASE_URL": slack.base_url,
            "TABLEBOT_STORE_PATH": str(tmp_path / "jobs.sqlite3"),
            "TABLEBOT_STAGING_DIR": str(tmp_path / "staging"),
        }.items():
            monkeypatch.setenv(key, value)
        entry._built.clear()
        yield slack
        entry._built.clear()


def test_handler_from_the_environment_answers_and_refuses_forgeries(env: LocalSlackApi) -> None:
    signer = env.signer(SECRET)
    # Requests without lazy work (no Lambda re-invocation needed here): a challenge, a chat message.
    challenge = entry.handler(signer.url_verification("c-123").lambda_event(), LAMBDA_CONTEXT)
    assert challenge["statusCode"] == 200 and "c-123" in challenge["body"]
    chat = signer.event_callback({"type": "message", "channel": OPS, "user": ALICE, "text": "hi", "ts": "1.000001"})
    assert entry.handler(chat.lambda_event(), LAMBDA_CONTEXT)["statusCode"] == 200

    forged = signer.event_callback({"type": "message", "channel": OPS, "user": ALICE, "text": "hi", "ts": "1.000002"})
    forged.headers["X-Slack-Signature"] = "v0=" + "1" * 64
    assert entry.handler(forged.lambda_event(), LAMBDA_CONTEXT)["statusCode"] == 401
    assert entry.handler({"requestContext": {"http": {"method": "GET"}}}, LAMBDA_CONTEXT)["statusCode"] == 404


def test_an_http_app_needs_its_signing_secret(env: LocalSlackApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    deps = build_slack_deps()
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        build_app(deps)
    assert build_app(deps, socket_mode=True) is not None
