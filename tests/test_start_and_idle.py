"""The bot starts the upload itself (`JobService.start_upload`, the poller's first step run at
once), the poller is free when idle, and the caps on uploads in flight: on SQLite and DynamoDB
Local, against the sandboxes and the local Slack API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import TablesFile
from bot.errors import TooManyInFlight
from bot.limits import InFlightCaps, check_in_flight
from bot.observability import Metrics
from bot.poller import Poller, PollerSettings
from bot.service import PollSettings
from bot.service.gate import gate_key
from bot.staging import FolderStaging
from bot.store import JobStore
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import Upstream
from tests.poller_support import ALICE, CHANNEL, CONTACTS_CSV, FAST, HOSTS_CSV, S, World, all_ended, run_until
from tests.store_support import job_store


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


# -- the bot starts the upload ----------------------------------------------------------------------


def test_start_upload_sends_a_queued_job_at_once_and_only_once(world: World, bigpanda_upstream: Upstream) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    front = world.service(worker_id="slack-fn")
    assert front.start_upload(job.job_id) == "sent"
    started = world.store.get_job(job.job_id)
    assert started.state is S.SUBMITTED and started.upstream_job_ids and started.lease_owner is None
    assert started.gate_key == gate_key(world.tables.table("hosts"))
    assert "is applying the upload" in world.status_text(job)
    # A re-invoked listener (or a second click) starts nothing more.
    assert front.start_upload(job.job_id) == "skipped"
    assert len(world.store.get_job(job.job_id).upstream_parts) == 1

    run_until([world.poller()], all_ended(world.store, [job]))
    assert world.store.get_job(job.job_id).state is S.DONE
    assert len(world.endings(job)) == 1


def test_what_cannot_start_now_is_left_to_the_poller(world: World, bigpanda_upstream: Upstream) -> None:
    first, second = world.queue_job("hosts", HOSTS_CSV), world.queue_job("hosts", HOSTS_CSV)
    front = world.service(worker_id="slack-fn")
    assert front.start_upload(first.job_id) == "sent"
    assert front.start_upload(second.job_id) == "waiting"  # the table's gate: one upload at a time
    waiting = world.store.get_job(second.job_id)
    assert waiting.state is S.QUEUED and waiting.next_check_at is not None and waiting.lease_owner is None

    run_until([world.poller()], all_ended(world.store, [first, second]))
    for job in (first, second):
        assert world.store.get_job(job.job_id).state is S.DONE
        assert len(world.endings(job)) == 1


def test_start_upload_of_a_job_the_poller_holds_leaves_it_to_the_poller(world: World) -> None:
    job = world.queue_job("contacts", CONTACTS_CSV)
    world.store.acquire_lease(job, "poller-elsewhere", 30)
    assert world.service(worker_id="slack-fn").start_upload(job.job_id) == "busy"
    assert world.store.get_job(job.job_id).state is S.QUEUED
    assert world.service().start_upload("20300101T000000Z-000000000000") == "skipped"


# -- free when idle ----------------------------------------------------------------------------------


def test_an_idle_scheduled_run_returns_at_once(world: World) -> None:
    poller = world.poller(settings=PollerSettings(run_seconds=50.0, idle_seconds=0.05))
    report = poller.run()
    assert report.idle and report.processed == 0 and report.queries == 1
    # A job waiting far beyond the run (an approval's deadline) does not keep it either.
    job = world.queue_job("hosts", HOSTS_CSV)
    world.store.update(job, next_check_at=job.created_at + timedelta(hours=1))
    report = poller.run()
    assert report.idle and report.processed == 0


def test_a_run_keeps_looping_while_a_job_is_in_flight(world: World, bigpanda_upstream: Upstream) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    assert world.service().start_upload(job.job_id) == "sent"  # in flight upstream, next check soon
    metrics = Metrics()
    service = world.service()
    poller = Poller(world.store, service, PollerSettings(run_seconds=20.0, idle_seconds=0.05), metrics=metrics)
    report = poller.run()
    assert report.steps["done"] == 1  # the run stayed until the upstream job ended and was told
    assert report.idle  # then it returned without waiting out its 20 s
    assert len(world.endings(job)) == 1
    # What the operators' alarms read: how late due jobs were picked up, the most overdue one.
    assert metrics.total("PollerLagSeconds") >= 0 and metrics.drain().keys() >= {
        ("PollerLagSeconds", ()),
        ("OldestWaitingSeconds", ()),
    }


def test_a_loop_with_a_stop_event_keeps_its_run(world: World) -> None:
    import threading

    stop = threading.Event()
    poller = world.poller(settings=PollerSettings(run_seconds=0.3, idle_seconds=0.05))
    report = poller.run(stop=stop)
    assert not report.idle and report.queries > 1


# -- caps on uploads in flight -----------------------------------------------------------------------


def test_caps_refuse_with_what_is_in_flight(world: World) -> None:
    caps = InFlightCaps(per_user=2, per_table=3)
    mine = [world.queue_job("hosts", HOSTS_CSV, file_name=f"hosts-{i}.csv") for i in range(2)]
    with pytest.raises(TooManyInFlight) as caught:
        check_in_flight(world.store, caps, user=ALICE, table="contacts")
    assert "You already have 2 uploads in flight (at most 2 at once)" in caught.value.message
    assert all(f"job `{j.job_id}`" in caught.value.message for j in mine)
    assert "`hosts-0.csv` → `hosts` (queued" in caught.value.message
    # Another person is refused by the table's cap only.
    check_in_flight(world.store, caps, user="U0BOB", table="hosts")
    world.queue_job("hosts", HOSTS_CSV)
    with pytest.raises(TooManyInFlight) as caught:
        check_in_flight(world.store, caps, user="U0BOB", table="hosts")
    assert "Table `hosts` already has 3 uploads in flight (at most 3 at once)" in caught.value.message
    # A delivery Slack sends again is never refused by its own job; a Retry not by itself.
    check_in_flight(world.store, caps, user=ALICE, table="hosts", delivery_key=mine[0].delivery_key)
    # Ended jobs are not in flight.
    for job in mine:
        world.store.transition(world.store.get_job(job.job_id), S.CANCELLED, actor="alice", reason="cancel")
    check_in_flight(world.store, caps, user=ALICE, table="contacts")


def test_a_retry_past_the_cap_is_refused(world: World, bigpanda_upstream: Upstream) -> None:
    from dataclasses import replace

    failed = world.queue_job("hosts", HOSTS_CSV, stage=False)  # nothing staged: the send fails
    run_until([world.poller()], all_ended(world.store, [failed]))
    assert world.store.get_job(failed.job_id).state is S.FAILED
    world.queue_job("contacts", CONTACTS_CSV)
    capped = world.service(settings=replace(FAST, caps=InFlightCaps(per_user=1)))
    with pytest.raises(TooManyInFlight):
        capped.retry_job(failed.job_id, ALICE)
    assert world.store.get_job(failed.job_id).state is S.FAILED
    assert world.service(settings=replace(FAST, caps=InFlightCaps(per_user=2))).retry_job(failed.job_id, ALICE)


def test_poll_settings_carry_the_caps_from_the_environment() -> None:
    from bot.settings import load_settings
    from bot.wiring import poll_settings

    settings = load_settings({"TABLEBOT_MAX_UPLOADS_PER_USER": "4", "TABLEBOT_MAX_UPLOADS_PER_TABLE": "0"})
    assert poll_settings(settings).caps == InFlightCaps(per_user=4, per_table=0)
    assert PollSettings().caps == InFlightCaps()  # no caps unless configured (tests, the library)
