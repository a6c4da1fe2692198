"""The Lambda entry point built from environment settings, and the Block Kit of endings."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.config import TablesFile, load_tables_file
from bot.errors import ConfigError
from bot.service import Ending
from bot.settings import load_settings
from bot.slack.render import RETRY_ACTION_ID, SECTION_TEXT_LIMIT, ending_message, progress_message
from bot.staging import FolderStaging
from bot.store import Job, JobState, SqliteJobStore
from bot.targets import LimiterRegistry
from bot.targets.base import DEFAULT_PACING
from bot.wiring import TargetClients, build_service, poll_settings
from devtools.slack_api import LocalSlackApi
from handlers import poll_jobs
from tests.fixtures_upstream import SANDBOX_ENV, Upstream, write_tables_file
from tests.poller_support import ALICE, CHANNEL, HOSTS_CSV, World

S = JobState


class LambdaContext:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


@pytest.fixture
def slack() -> Iterator[LocalSlackApi]:
    with LocalSlackApi() as api:
        api.add_channel(CHANNEL, "ops")
        api.add_user(ALICE, "alice")
        yield api


def test_handler_builds_from_the_environment_and_ends_a_job(
    tmp_path: Path, slack: LocalSlackApi, upstream_tables: TablesFile, monkeypatch: pytest.MonkeyPatch, http: object
) -> None:
    assert upstream_tables.path is not None
    env = {
        **SANDBOX_ENV,
        "TABLEBOT_CONFIG": str(upstream_tables.path),
        "TABLEBOT_STORE_PATH": str(tmp_path / "jobs.sqlite3"),
        "TABLEBOT_STAGING_DIR": str(tmp_path / "staging"),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_API_BASE_URL": slack.base_url,
        "TABLEBOT_POLL_RUN_SECONDS": "0.5",
        "TABLEBOT_POLL_FIRST_CHECK_SECONDS": "0.1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TABLEBOT_JOBS_TABLE", raising=False)
    monkeypatch.delenv("TABLEBOT_STAGING_BUCKET", raising=False)
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    world = World(store, FolderStaging(tmp_path / "staging"), upstream_tables, slack, http)  # type: ignore[arg-type]
    job = world.queue_job("hosts", HOSTS_CSV)
    poll_jobs._built.clear()
    try:
        deadline = time.monotonic() + 30
        while not store.get_job(job.job_id).is_terminal:
            assert time.monotonic() < deadline, "the handler did not end the job"
            # 10.3 s left in Lambda minus the 10 s margin: this run is cut to 0.3 s.
            report = poll_jobs.handler({"source": "aws.events"}, LambdaContext(10.3))
            assert set(report) == {"steps", "processed", "queries", "seconds", "quarantined", "idle"}
            assert float(report["seconds"]) < 5  # type: ignore[arg-type]
    finally:
        poll_jobs._built.clear()
    assert store.get_job(job.job_id).state is S.DONE
    assert len(world.endings(job)) == 1
    store.close()


def test_settings_refuse_nonsense_with_the_variable_named() -> None:
    assert poll_settings(load_settings({"TABLEBOT_JOB_TIMEOUT_SECONDS": "90"})).job_timeout_seconds == 90
    assert poll_settings(load_settings({"TABLEBOT_NOTICE_LEASE_SECONDS": "45"})).notice_lease_seconds == 45
    with pytest.raises(ConfigError, match="TABLEBOT_LEASE_SECONDS"):
        poll_settings(load_settings({"TABLEBOT_LEASE_SECONDS": "soon"}))
    with pytest.raises(ConfigError, match="positive"):
        poll_settings(load_settings({"TABLEBOT_POLL_FIRST_CHECK_SECONDS": "0"}))


def _job() -> Job:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    return Job(
        job_id="20300101T000000Z-abc",
        delivery_key="Ev1",
        state=S.SUBMITTED,
        version=3,
        table="hosts",
        target="bp",
        requested_by=ALICE,
        source="F1",
        file_name="hosts.csv",
        created_at=now,
        updated_at=now,
        row_count=1200,
    )


def test_failed_ending_has_retry_button_with_job_id_and_others_do_not() -> None:
    job = _job()
    text, blocks = ending_message(
        job, Ending(S.FAILED, "BigPanda refused it (400): bad header", "BigPanda", ("j1",), True)
    )
    actions = [b for b in blocks if b["type"] == "actions"]
    assert [(e["action_id"], e["value"]) for a in actions for e in a["elements"]] == [(RETRY_ACTION_ID, job.job_id)]
    assert "bad header" in text and "1,200 rows" in text
    for state in (S.DONE, S.TIMED_OUT):
        _, other = ending_message(job, Ending(state, None, "BigPanda", ("j1",), False))
        assert not [b for b in other if b["type"] == "actions"]
        assert "`j1`" in str(other)


def test_long_reasons_are_cut_to_slacks_section_limit() -> None:
    _, blocks = ending_message(_job(), Ending(S.FAILED, "x" * 10_000, "D·engage", (), True))
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(t) <= SECTION_TEXT_LIMIT for t in texts) and any(t.endswith("…") for t in texts)
    assert "part 2 of 3" in progress_message(_job(), "part 2 of 3 sent")[0]


def test_clients_of_one_target_share_one_limiter_that_never_bursts_past_the_rate(
    upstream_tables: TablesFile,
) -> None:
    pacing = LimiterRegistry()
    table = upstream_tables.table("hosts")
    with httpx.Client() as http:
        first = TargetClients(http, SANDBOX_ENV, pacing)(table)
        second = TargetClients(http, SANDBOX_ENV, pacing)(table)  # another poller of the same process
        default = TargetClients(http, SANDBOX_ENV)
    assert first is not second
    assert default.pacing is DEFAULT_PACING  # shared with every client built in this process
    key = "bigpanda|" + table.target.base_url + "|TEST_BIGPANDA_TOKEN"
    limiter = pacing.limiter(key, 5.0)
    assert limiter is pacing.limiter(key, 5.0)
    assert (limiter.limit, limiter.period) == (5, 1.0) and limiter.margin_seconds > 0


def test_services_built_from_settings_share_the_organizations_limit_through_the_store(
    tmp_path: Path, bigpanda_upstream: Upstream, slack: LocalSlackApi
) -> None:
    """Two containers (two services, two stores on one SQLite file, their own HTTP clients) with a
    BigPanda limit of 1 request a second: their requests arrive at least a second apart."""
    tables = load_tables_file(
        write_tables_file(
            tmp_path / "tables.toml",
            bigpanda_url=bigpanda_upstream.base_url,
            extra_target="requests_per_second = 1",
        )
    )
    settings = load_settings(
        {
            "TABLEBOT_STORE_PATH": str(tmp_path / "jobs.sqlite3"),
            "TABLEBOT_STAGING_DIR": str(tmp_path / "staging"),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_API_BASE_URL": slack.base_url,
        }
    )
    table = tables.table("hosts")
    stores = [SqliteJobStore(tmp_path / "jobs.sqlite3") for _ in range(2)]
    https = [httpx.Client() for _ in range(2)]
    services = [
        build_service(settings, environ=SANDBOX_ENV, tables=tables, store=store, http=http)
        for store, http in zip(stores, https, strict=True)
    ]
    for _ in range(2):
        for service in services:
            service.client_for(table).fetch_schema(table)
    times = sorted(r["time"] for r in bigpanda_upstream.admin.requests("/mapping-enrichment/"))
    assert len(times) == 4
    assert min(b - a for a, b in itertools.pairwise(times)) >= 1.0
    # Booked in the store (what another process would see), not in this process's own limiters.
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        keys = [row[0] for row in db.execute("SELECT rate_key FROM rate_slots")]
    assert keys == [f"rps|bigpanda|{table.target.base_url}|TEST_BIGPANDA_TOKEN"]
    for store, http in zip(stores, https, strict=True):
        store.close()
        http.close()
