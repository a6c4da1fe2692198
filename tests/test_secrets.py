"""Secrets come from SSM into the environment: only the allow-listed names of one function,
without overriding what is already set, never logged."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.secrets import load_ssm_secrets
from bot.settings import POLL_FUNCTION, SLACK_FUNCTION

TABLES = """
[targets.bp]
kind = "bigpanda"
token_env = "BIGPANDA_TOKEN"

[targets.de]
kind = "dengage"
userkey_env = "DENGAGE_USERKEY"
password_env = "DENGAGE_PASSWORD"

[tables.hosts]
target = "bp"
enrichment_id = "e1"
"""

# What SSM holds under the path: the secrets, plus parameters that must never become settings.
STORED = {
    "/tablebot/prod/SLACK_BOT_TOKEN": "xoxb-secret-value",
    "/tablebot/prod/SLACK_SIGNING_SECRET": "signing-secret-value",
    "/tablebot/prod/BIGPANDA_TOKEN": "bp-secret",
    "/tablebot/prod/DENGAGE_USERKEY": "de-user",
    "/tablebot/prod/DENGAGE_PASSWORD": "pw-secret",
    "/tablebot/prod/SLACK_API_BASE_URL": "https://evil.example/api/",
    "/tablebot/prod/TABLEBOT_ALLOW_HTTP_DOWNLOADS": "true",
}


class Ssm:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, names: Sequence[str]) -> dict[str, str]:
        self.asked.extend(names)
        return {name: STORED[name] for name in names if name in STORED}


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    tables = tmp_path / "tables.toml"
    tables.write_text(TABLES)
    return {"TABLEBOT_SSM_PATH": "/tablebot/prod/", "TABLEBOT_CONFIG": str(tables), **extra}


def test_the_slack_function_reads_only_its_secrets_and_the_tables_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ssm = Ssm()
    env = environment(tmp_path, DENGAGE_PASSWORD="set-by-operator")
    with caplog.at_level(logging.DEBUG):
        loaded = load_ssm_secrets(SLACK_FUNCTION, env, ssm)
    assert sorted(ssm.asked) == [
        "/tablebot/prod/BIGPANDA_TOKEN",
        "/tablebot/prod/DENGAGE_USERKEY",
        "/tablebot/prod/SLACK_BOT_TOKEN",
        "/tablebot/prod/SLACK_SIGNING_SECRET",
    ]  # the operator's own DENGAGE_PASSWORD is not even asked for
    assert loaded == ["BIGPANDA_TOKEN", "DENGAGE_USERKEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
    assert env["DENGAGE_PASSWORD"] == "set-by-operator"  # the environment wins
    # Parameters named like settings are never read: they cannot redirect the token or allow HTTP.
    assert "SLACK_API_BASE_URL" not in env and "TABLEBOT_ALLOW_HTTP_DOWNLOADS" not in env
    assert "xoxb-secret-value" not in caplog.text and "pw-secret" not in caplog.text  # names only
    assert "SLACK_BOT_TOKEN" in caplog.text


def test_the_poller_never_reads_the_signing_secret(tmp_path: Path) -> None:
    ssm = Ssm()
    env = environment(tmp_path)
    load_ssm_secrets(POLL_FUNCTION, env, ssm)
    assert "/tablebot/prod/SLACK_SIGNING_SECRET" not in ssm.asked
    assert "SLACK_SIGNING_SECRET" not in env
    assert env["SLACK_BOT_TOKEN"] == "xoxb-secret-value" and env["BIGPANDA_TOKEN"] == "bp-secret"


def test_a_missing_parameter_is_named_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = environment(tmp_path)
    with caplog.at_level(logging.WARNING):
        load_ssm_secrets(POLL_FUNCTION, env, lambda names: {})
    assert "BIGPANDA_TOKEN" in caplog.text and "SLACK_BOT_TOKEN" in caplog.text


def test_without_a_path_nothing_is_fetched() -> None:
    def fetch(names: Sequence[str]) -> dict[str, str]:
        raise AssertionError("SSM must not be called without TABLEBOT_SSM_PATH")

    env: dict[str, str] = {}
    assert load_ssm_secrets(SLACK_FUNCTION, env, fetch) == []
    assert env == {}
