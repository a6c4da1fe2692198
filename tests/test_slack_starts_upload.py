"""Through the Slack function (signed requests, lazy listeners re-invoked in-process): the bot
starts the upload itself right after the check and after Approve and Retry, with no poller
running; the poller only follows it to its ending. And a person past the cap on uploads in
flight is told what is in flight, with nothing created."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.store import JobStore, SqliteJobStore
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import Upstream
from tests.slack_support import ALICE, BOB, CAROL, DAVE, OPS, RANDOM, Front, S, build_front

HOSTS = b"host,service,owner\nweb-1,checkout,alice\nweb-2,search,bob\n"
AT_ONCE = {"TABLEBOT_START_UPLOAD_AT_ONCE": "true", "TABLEBOT_FOLLOW_SECONDS": "0"}


@pytest.fixture
def slack() -> Iterator[LocalSlackApi]:
    with LocalSlackApi() as api:
        api.add_channel(OPS, "ops")
        api.add_channel(RANDOM, "random")
        for user, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (DAVE, "dave")):
            api.add_user(user, name)
        api.add_usergroup("S0ONCALL1", [DAVE])
        api.add_usergroup("S0LEADS01", [BOB])
        yield api
        assert api.internal_errors == []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    sqlite = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield sqlite
    sqlite.close()


def _front(
    tmp_path: Path, store: JobStore, slack: LocalSlackApi, bigpanda: Upstream, dengage: Upstream, **env: str
) -> Iterator[Front]:
    built = build_front(tmp_path, store, slack, bigpanda.base_url, dengage.base_url, extra_env={**AT_ONCE, **env})
    yield built
    built.lambdas.join()
    built.http.close()


@pytest.fixture
def front(
    tmp_path: Path, store: JobStore, slack: LocalSlackApi, bigpanda_upstream: Upstream, dengage_upstream: Upstream
) -> Iterator[Front]:
    yield from _front(tmp_path, store, slack, bigpanda_upstream, dengage_upstream)


def test_a_valid_file_is_sent_upstream_by_the_slack_function(front: Front, bigpanda_upstream: Upstream) -> None:
    message = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
    job = front.job_in(message["ts"], S.SUBMITTED)  # no poller has run
    assert job.upstream_job_ids and len(bigpanda_upstream.admin.requests("/map")) == 1
    front.lambdas.join()
    assert "is applying the upload" in front.slack.message(OPS, str(job.status_ts))["text"]
    assert front.poll_until_ended(job).state is S.DONE
    assert "Done" in front.thread(message["ts"])[-1]["text"]
    assert len(bigpanda_upstream.admin.requests("/map")) == 1


def test_the_slack_function_follows_the_upload_it_started_to_its_ending(
    tmp_path: Path, store: JobStore, slack: LocalSlackApi, bigpanda_upstream: Upstream, dengage_upstream: Upstream
) -> None:
    built = _front(tmp_path, store, slack, bigpanda_upstream, dengage_upstream, TABLEBOT_FOLLOW_SECONDS="20")
    front = next(built)
    try:
        message = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
        front.lambdas.join(30)  # no poller at all: the listener started it, followed it, told it
        [job] = front.jobs()
        assert job.state is S.DONE and not job.notice_pending
        endings = [m for m in front.thread(message["ts"]) if m["ts"] != job.status_ts and "Done" in m["text"]]
        assert len(endings) == 1
    finally:
        next(built, None)


def test_approve_and_retry_start_the_upload_at_once(front: Front, bigpanda_upstream: Upstream) -> None:
    message = front.share(ALICE, "gated.csv", HOSTS, text="please load gated")
    front.job_in(message["ts"], S.AWAITING_APPROVAL)
    front.click(front.message_with(message["ts"], "approve_job"), "approve_job", BOB)
    job = front.job_in(message["ts"], S.SUBMITTED)
    assert job.approver == BOB
    assert front.poll_until_ended(job).state is S.DONE

    bigpanda_upstream.admin.fault("job_failed")
    failing = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
    failed = front.job_in(failing["ts"], S.SUBMITTED)
    assert front.poll_until_ended(failed).state is S.FAILED
    sent = len(bigpanda_upstream.admin.requests("/map"))
    front.click(front.message_with(failing["ts"], "retry_job"), "retry_job", ALICE)
    front.wait(lambda: len(bigpanda_upstream.admin.requests("/map")) == sent + 1)  # sent again, no poller
    assert front.store.get_job(failed.job_id).attempts == 2


def test_past_the_cap_the_person_is_told_what_is_in_flight(
    tmp_path: Path, store: JobStore, slack: LocalSlackApi, bigpanda_upstream: Upstream, dengage_upstream: Upstream
) -> None:
    built = _front(
        tmp_path,
        store,
        slack,
        bigpanda_upstream,
        dengage_upstream,
        TABLEBOT_START_UPLOAD_AT_ONCE="false",  # the first upload stays queued: in flight
        TABLEBOT_MAX_UPLOADS_PER_USER="1",
    )
    front = next(built)
    try:
        first = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
        job = front.job_in(first["ts"], S.QUEUED)
        second = front.share(ALICE, "hosts.csv", HOSTS, text="hosts")
        front.wait(lambda: any("uploads in flight" in t for t in front.ephemerals(ALICE)))
        told = next(t for t in front.ephemerals(ALICE) if "uploads in flight" in t)
        assert "at most 1 at once" in told and job.job_id in told
        front.lambdas.join()
        assert [j.job_id for j in front.jobs()] == [job.job_id], "nothing created for the refused upload"
        assert second["ts"] != first["ts"]
    finally:
        next(built, None)
