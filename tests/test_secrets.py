"""Secrets come from the SSM path into the environment, without overriding what is already set."""

from __future__ import annotations

import logging

import pytest

from bot.secrets import load_ssm_environment


def test_parameters_under_the_path_become_environment_variables(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[str] = []

    def fetch(path: str) -> dict[str, str]:
        asked.append(path)
        return {"SLACK_BOT_TOKEN": "xoxb-secret-value", "DENGAGE_PASSWORD": "pw-secret", "not a name": "x"}

    env = {"TABLEBOT_SSM_PATH": "/tablebot/prod/", "DENGAGE_PASSWORD": "set-by-operator"}
    with caplog.at_level(logging.DEBUG):
        loaded = load_ssm_environment(env, fetch)
    assert asked == ["/tablebot/prod"]
    assert loaded == ["SLACK_BOT_TOKEN"]
    assert env["SLACK_BOT_TOKEN"] == "xoxb-secret-value"
    assert env["DENGAGE_PASSWORD"] == "set-by-operator"  # the environment wins
    assert "not a name" not in env
    assert "xoxb-secret-value" not in caplog.text  # names are logged, values never
    assert "SLACK_BOT_TOKEN" in caplog.text


def test_without_a_path_nothing_is_fetched() -> None:
    def fetch(path: str) -> dict[str, str]:
        raise AssertionError("SSM must not be called without TABLEBOT_SSM_PATH")

    env: dict[str, str] = {}
    assert load_ssm_environment(env, fetch) == []
    assert env == {}
