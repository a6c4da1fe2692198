"""No job is stranded before the poller's states: a `received`/`validating` job whose intake died
(its lease ran out) and an approval wait past its deadline are ended `cancelled` by the poller,
with one notice in the thread; a job whose intake is still running is never touched.

The intake is the real one (`bot.intake.Intake`); its Slack file download goes through an
`httpx.MockTransport` that can die (raise `SystemExit`, as a Lambda timeout kills the listener)
or block until the test lets it go. Store: SQLite and DynamoDB Local; Slack: the local Slack API.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import TableConfig, TablesFile
from bot.errors import ConfigError
from bot.intake import Fetcher, Intake, IntakeResult, IntakeSettings, SlackFileRef, Upload
from bot.limits import InFlightCaps
from bot.schema import TableSchema
from bot.service import PollSettings
from bot.settings import load_settings
from bot.sources import SourceSettings
from bot.staging import FolderStaging
from bot.store import Job, JobStore
from bot.store.model import utc_now
from bot.targets import LimiterRegistry
from bot.wiring import TargetClients
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import SANDBOX_ENV, Upstream
from tests.poller_support import ALICE, CHANNEL, FAST, HOSTS_CSV, S, World, all_ended, run_until
from tests.store_support import job_store

APPROVER = "U0BOB0001"
APPROVER_GROUP = "S0LEADS01"


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    yield from job_store(request, tmp_path)


@pytest.fixture
def slack() -> Iterator[LocalSlackApi]:
    with LocalSlackApi() as api:
        api.add_channel(CHANNEL, "ops")
        api.add_user(ALICE, "alice")
        yield api
        assert api.internal_errors == []


@pytest.fixture
def world(tmp_path: Path, store: JobStore, slack: LocalSlackApi, upstream_tables: TablesFile, http: Any) -> World:
    return World(store, FolderStaging(tmp_path / "staging"), upstream_tables, slack, http)


class Download:
    """The Slack file server as the intake sees it: serves the CSV, or dies, or waits."""

    def __init__(self, data: bytes = HOSTS_CSV) -> None:
        self.data = data
        self.die = False
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        if self.die:
            raise SystemExit("the listener was killed (Lambda timeout)")
        assert self.release.wait(30), "the test never released the download"
        return httpx.Response(200, content=self.data, headers={"content-type": "text/csv"})


def make_intake(world: World, download: Download, settings: IntakeSettings) -> Intake:
    clients = TargetClients(world.http, SANDBOX_ENV, LimiterRegistry())

    def schema_for(table: TableConfig) -> TableSchema:
        return table.configured_schema() or clients(table).fetch_schema(table)

    fetcher = Fetcher(httpx.Client(transport=httpx.MockTransport(download.handler)), "xoxb-test", SourceSettings())
    return Intake(world.store, world.staging, world.tables, schema_for, fetcher, settings=settings)


def share(world: World, intake: Intake, n: int) -> tuple[Job, SlackFileRef, Upload]:
    """What the Slack front end does before the lazy listener: job, status message in the thread."""
    parent = world.slack.post_user_message(CHANNEL, ALICE, f"upload hosts #{n}")
    file = SlackFileRef(f"F{n}", f"https://files.slack.com/files-pri/T1-F{n}/hosts.csv", "hosts.csv", len(HOSTS_CSV))
    upload = Upload("hosts", ALICE, file, f"file:F{n}-{uuid.uuid4().hex[:6]}:{CHANNEL}", CHANNEL, parent["ts"])
    job, created = intake.open(upload)
    assert created
    status = world.web_client().chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="Received…")
    return intake.attach_status(job, thread_ts=parent["ts"], status_ts=status["ts"]), file, upload


def killed_intake(world: World, download: Download, lease_seconds: float, n: int) -> Job:
    """An intake that died while downloading: the job stays `validating` under the intake's lease."""
    intake = make_intake(world, download, IntakeSettings(lease_seconds=lease_seconds))
    job, file, _ = share(world, intake, n)
    download.die = True
    with pytest.raises(SystemExit):
        intake.run(job, file)
    job = world.store.get_job(job.job_id)
    assert job.state is S.VALIDATING and job.lease_owner is not None and job.lease_owner.startswith("intake:")
    return job


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_validating_job_whose_intake_died_ends_cancelled_with_one_notice(
    world: World, bigpanda_upstream: Upstream
) -> None:
    job = killed_intake(world, Download(), lease_seconds=0.5, n=1)
    assert job.next_check_at == job.lease_expires_at  # due exactly when the lease runs out

    run_until([world.poller()], all_ended(world.store, [job]))

    final = world.store.get_job(job.job_id)
    assert final.state is S.CANCELLED and final.notified and not final.notice_pending
    assert final.lease_owner is None and final.next_check_at is None
    assert final.last_error is not None and "stopped before it finished" in final.last_error
    [post] = world.endings(job)
    assert "`hosts.csv` stopped before it finished" in post["text"]
    assert post["text"].startswith(":no_entry_sign: Cancelled: nothing was uploaded"), post["text"]
    assert "nothing was uploaded" in post["text"] and "Share the file again" in post["text"]
    assert post["metadata"]["event_payload"] == {"job_id": job.job_id, "ending": "cancelled", "attempt": 0}
    assert not [b for b in post["blocks"] if b["type"] == "actions"]  # no Retry: nothing was staged to retry
    assert [h.to_state for h in world.store.history_for_job(job.job_id)] == [S.RECEIVED, S.VALIDATING, S.CANCELLED]
    assert bigpanda_upstream.admin.requests("/map") == []


def test_a_validating_job_whose_intake_still_runs_is_left_alone(world: World, bigpanda_upstream: Upstream) -> None:
    """The main risk: the poller must never end a job its intake is working on. The intake here is
    held inside its download (a slow 500 MB file) while pollers run; when it goes on, it finishes."""
    download = Download()
    intake = make_intake(world, download, IntakeSettings(lease_seconds=60.0))
    job, file, _ = share(world, intake, 2)
    # Even once due by its next check, the running intake's lease keeps the poller out.
    download.release.clear()
    results: list[IntakeResult] = []
    worker = threading.Thread(target=lambda: results.append(intake.run(job, file)))
    worker.start()
    try:
        assert download.entered.wait(10)
        busy = world.store.get_job(job.job_id)
        assert busy.state is S.VALIDATING and busy.lease_active(utc_now())
        pollers = [world.poller(), world.poller()]
        for _ in range(3):
            threads = [threading.Thread(target=p.run, args=(0.3,)) for p in pollers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        # A poller given the job directly is refused, and writes nothing; so is one holding a stale
        # copy in which the lease had run out (the intake renewed it since).
        assert world.service().process(busy) == "busy"
        stale = replace(busy, lease_expires_at=utc_now() - timedelta(seconds=1), next_check_at=utc_now())
        assert world.service().process(stale) == "busy"
        assert world.store.get_job(job.job_id).version == busy.version
    finally:
        download.release.set()
        worker.join(30)
    [result] = results
    assert result.kind == "queued", result.message
    final = world.store.get_job(job.job_id)
    assert final.state is S.QUEUED and final.lease_owner is None  # the poller may take it at once
    # What the file was checked against is recorded: the sender compares it (bot.targets.identity).
    assert final.target_identity is not None and '"enrichment_id":"demo"' in final.target_identity
    assert world.endings(job) == []
    assert [h.to_state for h in world.store.history_for_job(job.job_id)] == [S.RECEIVED, S.VALIDATING, S.QUEUED]


def test_a_job_never_leased_is_ended_only_after_the_intake_limit(world: World) -> None:
    """An intake that never started (`run` not called): no lease; ended once it has not changed
    for the intake limit, not before."""
    intake = make_intake(world, Download(), IntakeSettings(lease_seconds=0.5))
    job, _, _ = share(world, intake, 3)
    assert job.lease_owner is None and job.state is S.RECEIVED
    patient = world.service(settings=PollSettings(**{**FAST.__dict__, "intake_lease_seconds": 3600.0}))
    wait_for(lambda: job.next_check_at is not None and utc_now() >= job.next_check_at)
    due = world.store.get_job(job.job_id)
    assert patient.process(due) == "skipped"
    assert world.store.get_job(job.job_id).version == due.version

    eager = world.service(settings=PollSettings(**{**FAST.__dict__, "intake_lease_seconds": 0.5}))
    run_until([world.poller(eager)], all_ended(world.store, [job]))
    final = world.store.get_job(job.job_id)
    assert final.state is S.CANCELLED and final.notified
    assert len(world.endings(job)) == 1


def test_two_pollers_racing_on_a_stranded_job_post_once(world: World, bigpanda_upstream: Upstream) -> None:
    jobs = [killed_intake(world, Download(), lease_seconds=0.3, n=10 + i) for i in range(3)]
    pollers = [world.poller(), world.poller(), world.poller()]
    run_until(pollers, all_ended(world.store, jobs))
    for job in jobs:
        assert world.store.get_job(job.job_id).state is S.CANCELLED
        assert len(world.endings(job)) == 1


def _approval_tables(world: World, tmp_path: Path) -> World:
    from bot.config import load_tables_file

    path = tmp_path / "tables.toml"
    text = path.read_text().replace(
        "[tables.hosts]", f'[tables.hosts]\napprovers = ["{APPROVER}", "{APPROVER_GROUP}"]', 1
    )
    path.write_text(text)
    return World(world.store, world.staging, load_tables_file(path), world.slack, world.http)


def test_an_approval_wait_past_its_deadline_ends_cancelled_with_one_notice(
    world: World, tmp_path: Path, bigpanda_upstream: Upstream
) -> None:
    world = _approval_tables(world, tmp_path)
    intake = make_intake(world, Download(), IntakeSettings(lease_seconds=60.0, approval_timeout_seconds=1.0))
    job, file, _ = share(world, intake, 20)
    before = utc_now()
    result = intake.run(job, file, approval=True)
    assert result.kind == "awaiting_approval"
    waiting = result.job
    assert waiting.lease_owner is None and waiting.next_check_at is not None
    assert before + timedelta(seconds=1) <= waiting.next_check_at <= utc_now() + timedelta(seconds=1)

    run_until([world.poller(), world.poller()], all_ended(world.store, [job]))

    final = world.store.get_job(job.job_id)
    assert final.state is S.CANCELLED and final.notified
    [post] = world.endings(job)
    assert "No approver answered within 1 s" in post["text"] and "nothing was uploaded" in post["text"]
    assert f"<@{APPROVER}>" in post["text"] and f"<!subteam^{APPROVER_GROUP}>" in post["text"]
    assert bigpanda_upstream.admin.requests("/map") == []


def test_an_approval_before_the_deadline_is_not_cancelled(world: World, bigpanda_upstream: Upstream) -> None:
    intake = make_intake(world, Download(), IntakeSettings(lease_seconds=60.0, approval_timeout_seconds=3600.0))
    job, file, _ = share(world, intake, 21)
    waiting = intake.run(job, file, approval=True).job
    run_until([world.poller()], lambda: True)  # one short run: nothing is due
    assert world.store.get_job(job.job_id).version == waiting.version

    queued = intake.approve(job.job_id, APPROVER)
    assert queued.state is S.QUEUED and queued.next_check_at is not None
    run_until([world.poller()], all_ended(world.store, [job]))
    assert world.store.get_job(job.job_id).state is S.DONE
    [post] = world.endings(job)
    assert "Done" in post["text"]


def test_the_intake_settings_come_from_the_environment() -> None:
    settings = IntakeSettings.from_settings(
        load_settings({"TABLEBOT_INTAKE_LEASE_SECONDS": "1200", "TABLEBOT_APPROVAL_TIMEOUT_SECONDS": "7200"})
    )
    assert (settings.lease_seconds, settings.approval_timeout_seconds) == (1200.0, 7200.0)
    assert IntakeSettings.from_settings(load_settings({})) == IntakeSettings(
        lease_seconds=960.0, approval_timeout_seconds=86400.0, caps=InFlightCaps(per_user=3, per_table=5)
    )
    with pytest.raises(ConfigError, match="TABLEBOT_APPROVAL_TIMEOUT_SECONDS must be a positive number"):
        IntakeSettings.from_settings(load_settings({"TABLEBOT_APPROVAL_TIMEOUT_SECONDS": "0"}))
