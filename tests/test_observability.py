"""Operators' view: JSON log lines carry the job on every line and never a token; metrics are
recorded by name and flushed as CloudWatch embedded metrics (EMF)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.config import TablesFile
from bot.errors import ConfigError
from bot.observability import Metrics, job_context, mask_secrets, setup_logging
from bot.settings import Settings, load_settings
from bot.store import Job, JobState
from devtools.slack_api import LocalSlackApi

JOB = Job(
    job_id="20300101T000000Z-abcdef012345",
    delivery_key="Ev0123",
    state=JobState.QUEUED,
    version=3,
    table="hosts",
    target="bp",
    requested_by="U0ALICE01",
    source="F01",
    file_name="hosts.csv",
    created_at=datetime(2030, 1, 1, tzinfo=UTC),
    updated_at=datetime(2030, 1, 1, tzinfo=UTC),
)


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    setup_logging(Settings(log_level="DEBUG"), json_lines=True)
    yield
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_every_line_in_a_job_names_it_and_no_token_is_written(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = logging.getLogger("bot.test")
    with job_context(request_id="req-1"), job_context(JOB):  # a Lambda invocation, then a job in it
        log.info("sending with %s", "xoxb-1234-5678-abcdefghijkl")
        log.warning("header Authorization: Bearer abcdefghijklmnop1234")
    log.info("outside any job")
    inside_1, inside_2, outside = _lines(capsys)
    for line in (inside_1, inside_2):
        assert line["job_id"] == JOB.job_id and line["table"] == "hosts"
        assert line["target"] == "bp" and line["delivery"] == "Ev0123"
        assert line["request_id"] == "req-1"
    assert "xoxb-1234" not in json.dumps(inside_1) and "[masked]" in str(inside_1["message"])
    assert "abcdefghijklmnop1234" not in json.dumps(inside_2)
    assert "job_id" not in outside and outside["level"] == "INFO"


def test_the_level_comes_from_the_environment() -> None:
    assert load_settings({"TABLEBOT_LOG_LEVEL": "warning"}).log_level == "WARNING"
    with pytest.raises(ConfigError, match="TABLEBOT_LOG_LEVEL"):
        load_settings({"TABLEBOT_LOG_LEVEL": "loud"})
    assert mask_secrets("token=abcd1234efgh and password: hunter2hunter2") == "toke…[masked] and pass…[masked]"


def test_metrics_are_flushed_as_emf_once(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = Metrics()
    metrics.add("UploadsEnded", Ending="done")
    metrics.add("UploadsEnded", Ending="done")
    metrics.add("UploadsEnded", Ending="failed")
    metrics.add("PollerLagSeconds", 0.25)
    assert metrics.total("UploadsEnded") == 3 and metrics.total("UploadsEnded", Ending="done") == 2
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.add("Typo")
    assert metrics.flush_emf(namespace="tablebot/test", service="tablebot") == 3
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    done = next(o for o in objects if o.get("Ending") == "done")
    assert done["UploadsEnded"] == [1.0, 1.0]
    assert done["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "tablebot/test"
    assert metrics.flush_emf(namespace="tablebot/test", service="tablebot") == 0  # drained


def test_an_idle_poll_invocation_returns_at_once_with_json_logs_and_metrics(
    tmp_path: Path,
    upstream_tables: TablesFile,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from handlers import poll_jobs
    from tests.fixtures_upstream import SANDBOX_ENV

    assert upstream_tables.path is not None
    with LocalSlackApi() as slack:
        env = {
            **SANDBOX_ENV,
            "TABLEBOT_CONFIG": str(upstream_tables.path),
            "TABLEBOT_STORE_PATH": str(tmp_path / "jobs.sqlite3"),
            "TABLEBOT_STAGING_DIR": str(tmp_path / "staging"),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_API_BASE_URL": slack.base_url,
            "TABLEBOT_METRICS_NAMESPACE": "tablebot/test",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("TABLEBOT_JOBS_TABLE", raising=False)
        monkeypatch.delenv("TABLEBOT_STAGING_BUCKET", raising=False)
        root = logging.getLogger()
        before, level = list(root.handlers), root.level
        poll_jobs._built.clear()
        poll_jobs._settings.clear()
        try:
            context = SimpleNamespace(aws_request_id="req-poll-1", get_remaining_time_in_millis=lambda: 60_000)
            report = poll_jobs.handler({"source": "aws.events"}, context)
        finally:
            poll_jobs._built.clear()
            for handler in list(root.handlers):
                if handler not in before:
                    root.removeHandler(handler)
            root.setLevel(level)
    assert report["idle"] is True and report["processed"] == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    assert any(
        m["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "tablebot/test" and "OldestWaitingSeconds" in m for m in emf
    )
    told = [line for line in lines if str(line.get("message", "")).startswith("poller run:")]
    assert told and told[0]["request_id"] == "req-poll-1" and told[0]["level"] == "INFO"
