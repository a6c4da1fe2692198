"""The poller carries queued jobs to their ending against the sandboxes, a real store and the
local Slack API, and posts every ending exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.config import TablesFile
from bot.errors import Refused
from bot.service import NO_JOB_ID, SENDING, Ending, JobService, PollSettings, ending_metadata
from bot.slack.notify import SlackNotifier
from bot.staging import FolderStaging
from bot.store import Job, JobStore, UpstreamPart
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import Upstream
from tests.poller_support import (
    ALICE,
    CHANNEL,
    CONTACTS_CSV,
    FAST,
    HOSTS_CSV,
    S,
    World,
    all_ended,
    run_until,
)
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


def test_jobs_on_both_targets_end_done_with_one_notice_each(
    world: World, bigpanda_upstream: Upstream, dengage_upstream: Upstream
) -> None:
    jobs = [world.queue_job("hosts", HOSTS_CSV), world.queue_job("contacts", CONTACTS_CSV)]
    run_until([world.poller()], all_ended(world.store, jobs))

    for job in jobs:
        final = world.store.get_job(job.job_id)
        assert final.state is S.DONE and final.notified
        assert len(final.upstream_parts) == 1 and final.upstream_parts[0].status == "done"
        endings = world.endings(job)
        assert len(endings) == 1
        assert "Done" in endings[0]["text"] and job.table in endings[0]["text"]
        assert "Done" in world.status_text(job)
        assert [h.to_state for h in world.store.history_for_job(job.job_id)][-4:] == [
            S.QUEUED,
            S.UPLOADING,
            S.SUBMITTED,
            S.DONE,
        ]
    assert len(bigpanda_upstream.admin.requests("/map")) == 1
    rows = dengage_upstream.admin.table("demo_contacts")
    assert "c2" in str(rows)


def test_failed_job_offers_retry_and_retry_posts_the_new_ending(world: World, bigpanda_upstream: Upstream) -> None:
    bigpanda_upstream.admin.fault("job_failed")
    job = world.queue_job("hosts", HOSTS_CSV)
    run_until([world.poller()], all_ended(world.store, [job]))

    failed = world.store.get_job(job.job_id)
    assert failed.state is S.FAILED and failed.notified
    [post] = world.endings(job)
    assert "Failed" in post["text"] and "no partial success" in post["text"]
    buttons = [e for b in post["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"]) for b in buttons] == [("retry_job", job.job_id)]

    service = world.service()
    queued = service.retry_job(job.job_id, ALICE)
    assert queued.state is S.QUEUED and not queued.notified and queued.upstream_parts == ()
    with pytest.raises(Refused, match="not failed"):
        service.retry_job(job.job_id, ALICE)
    run_until([world.poller(service)], all_ended(world.store, [job]))

    assert world.store.get_job(job.job_id).state is S.DONE
    assert [("Failed" in m["text"], "Done" in m["text"]) for m in world.endings(job)] == [(True, False), (False, True)]
    assert len(bigpanda_upstream.admin.requests("/map")) == 2  # the same staged file, sent again


def test_stuck_job_times_out_and_says_what_to_check(world: World, dengage_upstream: Upstream) -> None:
    dengage_upstream.admin.fault("job_stuck")
    world.settings = PollSettings(**{**FAST.__dict__, "job_timeout_seconds": 1.0})
    job = world.queue_job("contacts", CONTACTS_CSV)
    run_until([world.poller()], all_ended(world.store, [job]))

    final = world.store.get_job(job.job_id)
    assert final.state is S.TIMED_OUT and final.notified
    upstream_id = final.upstream_parts[0].upstream_job_id
    [post] = world.endings(job)
    assert "No ending in time" in post["text"]
    assert upstream_id in post["text"] and "D·engage" in post["text"] and "may still finish" in post["text"]
    assert not [b for b in post["blocks"] if b["type"] == "actions"], "no Retry on a job that may still finish"


def test_transient_upstream_errors_are_retried_and_one_failure_does_not_stop_others(
    world: World, bigpanda_upstream: Upstream
) -> None:
    bigpanda_upstream.admin.fault("429", count=2, path="/map")
    bigpanda_upstream.admin.fault("500", count=8, path="/alert-enrichments-jobs/")
    good = world.queue_job("hosts", HOSTS_CSV)
    lost = world.queue_job("contacts", CONTACTS_CSV, stage=False)
    run_until([world.poller()], all_ended(world.store, [good, lost]))

    assert world.store.get_job(good.job_id).state is S.DONE
    failed = world.store.get_job(lost.job_id)
    assert failed.state is S.FAILED
    [post] = world.endings(lost)
    assert "staged file" in post["text"] and "share the file again" in post["text"]
    statuses = [r["status"] for r in bigpanda_upstream.admin.requests("/alert-enrichments-jobs/")]
    assert statuses.count(500) == 8 and statuses[-1] == 200


def test_two_pollers_at_once_post_each_ending_exactly_once(world: World, tmp_path: Path) -> None:
    jobs = [world.queue_job("hosts", HOSTS_CSV) for _ in range(3)] + [
        world.queue_job("contacts", CONTACTS_CSV) for _ in range(2)
    ]
    pollers = [world.poller(world.service(worker_id=f"racer-{i}")) for i in range(3)]
    run_until(pollers, all_ended(world.store, jobs), timeout=60)

    for job in jobs:
        assert world.store.get_job(job.job_id).state is S.DONE
        assert len(world.endings(job)) == 1, world.slack.thread_transcript(CHANNEL, job.thread_ts or "")
        terminal = [h for h in world.store.history_for_job(job.job_id) if h.to_state is S.DONE]
        assert len(terminal) == 1


def test_abandoned_lease_is_left_until_it_expires_then_finished(world: World, bigpanda_upstream: Upstream) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    world.store.acquire_lease(job, "killed-worker", 1.5)  # it took the job and died
    poller = world.poller()
    poller.run(0.3)
    assert world.store.get_job(job.job_id).state is S.QUEUED
    assert bigpanda_upstream.admin.requests("/map") == []

    run_until([poller], all_ended(world.store, [job]))
    assert world.store.get_job(job.job_id).state is S.DONE
    assert len(world.endings(job)) == 1


def _interrupted(world: World, table: str, data: bytes) -> Any:
    """A job whose worker moved it to `uploading`, started sending and died before the job id."""
    job = world.queue_job(table, data)
    sending = UpstreamPart(index=1, count=1, upstream_job_id=NO_JOB_ID, status=SENDING)
    job = world.store.transition(
        job, S.UPLOADING, actor="killed-worker", reason="sending", changes={"upstream_parts": (sending,)}
    )
    world.store.acquire_lease(job, "killed-worker", 0.5)
    return job


def test_interrupted_send_to_appended_dengage_table_is_not_resent(world: World, dengage_upstream: Upstream) -> None:
    job = _interrupted(world, "events", b"event,happened_at,amount\nlogin,2024-05-01 10:00:00,1.5\n")
    run_until([world.poller()], all_ended(world.store, [job]))

    final = world.store.get_job(job.job_id)
    assert final.state is S.FAILED
    assert dengage_upstream.admin.requests("/async/upsert", method="POST") == []
    [post] = world.endings(job)
    assert "may have been applied" in post["text"] and "no primary key" in post["text"]
    assert any(b["type"] == "actions" for b in post["blocks"]), "a deliberate Retry stays possible"


def test_interrupted_send_to_bigpanda_is_resent(world: World, bigpanda_upstream: Upstream) -> None:
    job = _interrupted(world, "hosts", HOSTS_CSV)
    run_until([world.poller()], all_ended(world.store, [job]))
    assert world.store.get_job(job.job_id).state is S.DONE
    assert len(bigpanda_upstream.admin.requests("/map")) == 1
    assert len(world.endings(job)) == 1


def test_slack_down_the_notice_is_posted_by_a_later_run_once(world: World, slack: LocalSlackApi) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    slack.server_error("chat.postMessage", times=2, status=503)
    run_until([world.poller()], all_ended(world.store, [job]))

    final = world.store.get_job(job.job_id)
    assert final.state is S.DONE and final.notified
    assert len(world.endings(job)) == 1
    failed_posts = [c for c in slack.calls_to("chat.postMessage") if c.status == 503]
    assert len(failed_posts) == 2
    assert [h.to_state for h in world.store.history_for_job(job.job_id)].count(S.DONE) == 1


class WorkerDied(BaseException):
    """The worker's process ends here (a Lambda timeout, an out-of-memory kill): nothing after runs."""


@dataclass
class DiesAfterPosting:
    """The real Slack notifier, in a worker that dies right after its ending post went out."""

    inner: SlackNotifier

    def progress(self, job: Job, text: str) -> None:
        self.inner.progress(job, text)

    def ending(self, job: Job, ending: Ending) -> None:
        self.inner.ending(job, ending)
        raise WorkerDied

    def ending_posted(self, job: Job, ending: Ending) -> bool:
        return self.inner.ending_posted(job, ending)


def _step_until_it_dies(service: JobService, store: JobStore, job: Job, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = store.get_job(job.job_id)
        if current.next_check_at is not None and current.next_check_at <= datetime.now(UTC):
            try:
                service.process(current)
            except WorkerDied:
                return
        time.sleep(0.02)
    raise TimeoutError("the worker never reached its ending post")


def test_worker_dying_after_its_post_the_next_finds_the_post_and_does_not_post_again(
    world: World, slack: LocalSlackApi
) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    dying = world.service(
        settings=replace(FAST, lease_seconds=1.0),
        notifier=DiesAfterPosting(SlackNotifier(world.web_client())),
        worker_id="dies-after-posting",
    )
    _step_until_it_dies(dying, world.store, job)
    orphan = world.store.get_job(job.job_id)
    assert orphan.state is S.DONE and orphan.notice_pending and orphan.notice_claimed_by == "dies-after-posting"
    assert len(world.endings(job)) == 1

    run_until([world.poller(world.service(worker_id="next"))], all_ended(world.store, [job]))
    final = world.store.get_job(job.job_id)
    assert final.notified and final.notice_claimed_by == "next" and final.next_check_at is None
    [post] = world.endings(job)
    assert post["metadata"] == ending_metadata(final, S.DONE)
    looks = slack.calls_to("conversations.replies")
    assert looks and all(c.params.get("include_all_metadata") in ("1", "true", True, 1) for c in looks)
    assert [h.to_state for h in world.store.history_for_job(job.job_id)].count(S.DONE) == 1


def _with_team_channel(tables: TablesFile, team: str) -> TablesFile:
    hosts = tables.table("hosts")
    announced = replace(hosts, access=replace(hosts.access, notify_channels=(team,)))
    return TablesFile(tables.path, tables.targets, {**tables.tables, "hosts": announced})


def test_team_channel_announcements_are_posted_once_when_a_worker_dies(world: World, slack: LocalSlackApi) -> None:
    team = "C0TEAM001"
    slack.add_channel(team, "hosts-team")
    tables = _with_team_channel(world.tables, team)
    # A worker posts the ending in the thread but dies before its announcement (it runs without
    # the team channel); the next worker finds the thread post and posts only the announcement.
    job = world.queue_job("hosts", HOSTS_CSV)
    dying = world.service(
        settings=replace(FAST, lease_seconds=1.0),
        notifier=DiesAfterPosting(SlackNotifier(world.web_client())),
        worker_id="dies-before-announcing",
    )
    _step_until_it_dies(dying, world.store, job)
    assert slack.messages(team) == []
    run_until(
        [world.poller(world.service(worker_id="next", notifier=SlackNotifier(world.web_client(), tables)))],
        all_ended(world.store, [job]),
    )
    assert len(world.endings(job)) == 1 and len(slack.messages(team)) == 1
    # A worker that dies after posting both: the next one posts neither again.
    second = world.queue_job("hosts", HOSTS_CSV)
    dying = world.service(
        settings=replace(FAST, lease_seconds=1.0),
        notifier=DiesAfterPosting(SlackNotifier(world.web_client(), tables)),
        worker_id="dies-after-announcing",
    )
    _step_until_it_dies(dying, world.store, second)
    assert len(slack.messages(team)) == 2
    run_until(
        [world.poller(world.service(worker_id="last", notifier=SlackNotifier(world.web_client(), tables)))],
        all_ended(world.store, [second]),
    )
    assert world.store.get_job(second.job_id).notified
    assert len(world.endings(second)) == 1 and len(slack.messages(team)) == 2
    assert "Done" in slack.messages(team)[-1]["text"]


def test_worker_dying_between_claim_and_post_the_next_posts_once(world: World) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    service = world.service()
    assert service.process(job) == "sent"
    # A worker decided "done", ended the job with the notice claimed in one write, and died.
    current = world.store.get_job(job.job_id)
    leased = world.store.acquire_lease(current, "killed-worker", 0.5)
    part = leased.upstream_parts[0]
    world.store.transition(
        leased,
        S.DONE,
        actor="killed-worker",
        reason="upstream done",
        changes={
            "upstream_parts": (UpstreamPart(1, 1, part.upstream_job_id, "done"),),
            "notice_claimed_by": "killed-worker",
            "notice_claimed_at": datetime.now(UTC),
        },
        next_check_at=leased.lease_expires_at,
    )
    run_until([world.poller(service)], all_ended(world.store, [job]))

    final = world.store.get_job(job.job_id)
    assert final.state is S.DONE and final.notified
    [post] = world.endings(job)
    assert "Done" in post["text"] and part.upstream_job_id in str(post["blocks"])
    assert "Done" in world.status_text(job)


def test_a_post_that_timed_out_but_landed_is_found_and_not_posted_twice(world: World, slack: LocalSlackApi) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    slack.delay("chat.postMessage", 1.5, times=1)  # Slack takes the post, answers after we gave up
    impatient = WebClient(token=slack.bot_token, base_url=slack.base_url, timeout=0.5)
    service = world.service(settings=replace(FAST, notice_retry_seconds=3.0), notifier=SlackNotifier(impatient))
    run_until([world.poller(service)], all_ended(world.store, [job]))

    assert world.store.get_job(job.job_id).notified
    assert len(world.endings(job)) == 1, world.slack.thread_transcript(CHANNEL, job.thread_ts or "")
    assert len(slack.calls_to("chat.postMessage")) == 2  # the status message, then the one ending post
    assert len(slack.calls_to("conversations.replies")) == 1  # the second attempt looked, found it


def test_status_message_edit_refused_for_a_while_the_notice_still_comes_once(
    world: World, slack: LocalSlackApi
) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    slack.api_error("chat.update", "service_unavailable", seconds=1.0)
    run_until([world.poller()], all_ended(world.store, [job]))

    assert world.store.get_job(job.job_id).state is S.DONE
    assert len(world.endings(job)) == 1
    assert "Done" in world.status_text(job)
    assert any(c.response is not None and c.response.get("ok") is False for c in slack.calls_to("chat.update"))
