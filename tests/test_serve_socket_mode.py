"""`tablebot serve` end to end, as a process: Socket Mode from the local Slack
(devtools/socket_mode.py), the BigPanda and D·engage sandboxes, the embedded SQLite store and a
staging folder, all real, on 127.0.0.1. The test plays Slack and its people; the process is the
bot exactly as an operator starts it, and is stopped with SIGTERM as an operator stops it."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.slack.render import RETRY_ACTION_ID
from bot.store import Job, JobState, SqliteJobStore
from devtools.serve_process import ServeProcess
from devtools.slack_api import FILE_DOWNLOAD, LocalSlackApi, SlackRequestSigner
from tests.fixtures_upstream import SANDBOX_ENV, Upstream
from tests.slack_support import ALICE, OPS, write_slack_tables

S = JobState
WAIT = 20.0  # for one ending; each takes about a second
LATENCY = 4.0  # of BigPanda's answers, to keep an upload in flight while the test signals
HOSTS = b"host,service,owner\nweb-1,checkout,alice\nweb-2,search,bob\n"
HOSTS_UPDATE = b"host,service,owner\nweb-1,checkout,alice\nweb-2,search,bob\nweb-3,search,carol\n"
HOSTS_MORE = HOSTS_UPDATE + b"web-4,search,carol\n"  # adds a row: no confirmation needed
CONTACTS = b"contact_key,email,city\nc1,a@example.com,Izmir\nc2,b@example.com,Ankara\n"
CONTACTS_MORE = CONTACTS + b"c3,c@example.com,Bursa\n"


@dataclass
class World:
    tmp: Path
    slack: LocalSlackApi
    signer: SlackRequestSigner
    bigpanda: Upstream
    dengage: Upstream
    env: dict[str, str]
    _store: SqliteJobStore | None = None

    def serve(self, name: str = "serve") -> ServeProcess:
        process = ServeProcess(self.env, self.tmp / f"{name}.log").start()
        return process

    @property
    def store(self) -> SqliteJobStore:
        if self._store is None:  # opened once `serve` made the file
            self._store = SqliteJobStore(Path(self.env["TABLEBOT_STORE_PATH"]))
        return self._store

    def share(self, name: str, content: bytes, text: str) -> tuple[str, str]:
        """alice shares a CSV; the event goes over Socket Mode. (thread ts, envelope id)"""
        hosted = self.slack.register_file(name, content, user=ALICE, channel=OPS)
        message = self.slack.share_file(OPS, ALICE, hosted["id"], text=text)
        return str(message["ts"]), self.slack.deliver(self.signer.file_share_event(OPS, message))

    def command(self, text: str) -> tuple[str, str]:
        """alice types `/table TEXT`: (envelope id, the command's response_url)."""
        request = self.signer.slash_command("/table", text, user_id=ALICE, channel_id=OPS)
        return self.slack.deliver(request), str(request.payload["response_url"])

    def jobs_in(self, thread_ts: str) -> list[Job]:
        return [job for job in self.store.recent_jobs(limit=100) if job.thread_ts == thread_ts]

    def ended(self, thread_ts: str, *, after_version: int = 0, process: ServeProcess | None = None) -> Job:
        """The thread's job once ended with its notice posted (fails fast if the process died)."""

        def done() -> Job | None:
            if process is not None and not process.running:
                raise AssertionError(f"serve exited ({process.process.returncode}):\n{process.log()[-3000:]}")
            jobs = self.jobs_in(thread_ts)
            job = jobs[0] if jobs else None
            if job is None or job.version <= after_version or not job.is_terminal or job.notice_pending:
                return None
            return job

        job: Job = self.slack.wait_for(done, WAIT)
        return job

    def job_in_state(self, thread_ts: str, state: JobState) -> Job:
        def found() -> Job | None:
            return next((j for j in self.jobs_in(thread_ts) if j.state is state), None)

        job: Job = self.slack.wait_for(found, WAIT)
        return job

    def transcript(self, thread_ts: str) -> str:
        return self.slack.thread_transcript(OPS, thread_ts)

    def stored_hosts(self) -> list[tuple[str, ...]]:
        table = self.bigpanda.admin.table("demo")
        return sorted(tuple(str(v) for v in row) for row in table.get("rows", []))


@pytest.fixture
def world(tmp_path: Path, bigpanda_upstream: Upstream, dengage_upstream: Upstream) -> Iterator[World]:
    slack = LocalSlackApi(socket_ack_timeout=1.0, socket_retry_delays=(0.0, 0.5, 0.5))
    slack.start()
    slack.add_channel(OPS, "ops-tables")
    slack.add_user(ALICE, "alice")
    write_slack_tables(tmp_path / "tables.toml", bigpanda_upstream.base_url, dengage_upstream.base_url)
    env = {
        **SANDBOX_ENV,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_API_BASE_URL": slack.base_url,
        "TABLEBOT_CONFIG": str(tmp_path / "tables.toml"),
        "TABLEBOT_STORE_PATH": str(tmp_path / "jobs.sqlite3"),
        "TABLEBOT_STAGING_DIR": str(tmp_path / "staging"),
        "TABLEBOT_WORK_DIR": str(tmp_path),
        "TABLEBOT_SLACK_FILE_HOSTS": "127.0.0.1",
        "TABLEBOT_ALLOW_HTTP_DOWNLOADS": "1",
        "TABLEBOT_POLL_RUN_SECONDS": "5",
        "TABLEBOT_POLL_FIRST_CHECK_SECONDS": "0.1",
        "TABLEBOT_POLL_MAX_CHECK_SECONDS": "0.3",
        "TABLEBOT_NOTICE_RETRY_SECONDS": "0.3",
        "TABLEBOT_ERROR_RETRY_SECONDS": "0.3",
        # The poller thread starts the uploads here, so the stop scenario has exactly one upload
        # in flight and one checked file queued; starting at once from the listener is tested
        # through the Lambda handler (tests/test_slack_starts_upload.py).
        "TABLEBOT_START_UPLOAD_AT_ONCE": "false",
    }
    built = World(tmp_path, slack, slack.signer(), bigpanda_upstream, dengage_upstream, env)
    try:
        yield built
    finally:
        if built._store is not None:
            built._store.close()
        slack.stop()


def _posts(world: World, thread_ts: str, words: str) -> int:
    """How many messages the bot posted in the thread saying `words` (edits not counted)."""
    calls = world.slack.calls_to("chat.postMessage")
    return sum(1 for c in calls if c.params.get("thread_ts") == thread_ts and words in str(c.params.get("text", "")))


def _uploads(upstream: Upstream) -> int:
    """Files sent to BigPanda (POST .../map)."""
    return sum(1 for r in upstream.admin.requests("/map") if r["method"] == "POST" and r["path"].endswith("/map"))


def test_serve_answers_commands_uploads_files_handles_buttons_survives_refresh_and_stops_cleanly(
    world: World,
) -> None:
    slack, socket = world.slack, world.slack.socket_mode
    serve = world.serve()
    try:
        socket.wait_connected(timeout=WAIT)

        # A slash command answers (in its ack, shown to alice).
        ack = socket.wait_ack(world.command("help")[0])
        assert ack.payload and "/table upload" in str(ack.payload)
        assert any("/table upload" in str(m) for m in slack.ephemeral_messages(user=ALICE))
        # ... or later, through its response_url (the listener's work after the ack).
        envelope, response_url = world.command("tables")
        assert socket.wait_ack(envelope).payload is None
        (answer,) = slack.wait_for(lambda: slack.response_url_posts(response_url), WAIT)
        assert "hosts" in str(answer.payload.get("blocks")) and "contacts" in str(answer.payload.get("blocks"))

        # A shared CSV is checked and reaches done in its thread: the poller thread at work.
        hosts_ts, _ = world.share("hosts.csv", HOSTS, "hosts")
        done = world.ended(hosts_ts, process=serve)
        assert done.state is S.DONE, world.transcript(hosts_ts)
        assert "Done" in world.transcript(hosts_ts)
        assert world.stored_hosts() == [("web-1", "checkout", "alice"), ("web-2", "search", "bob")]

        # A failed upstream job, and the Retry button pressed in the thread.
        world.bigpanda.admin.fault("job_failed")
        update_ts, _ = world.share("hosts.csv", HOSTS_UPDATE, "hosts: web-3")
        failed = world.ended(update_ts, process=serve)
        assert failed.state is S.FAILED, world.transcript(update_ts)
        button = next(m for m in reversed(slack.thread(OPS, update_ts)) if RETRY_ACTION_ID in str(m.get("blocks")))
        slack.deliver(world.signer.click_button(button, RETRY_ACTION_ID, user_id=ALICE, channel_id=OPS))
        retried = world.ended(update_ts, after_version=failed.version, process=serve)
        assert retried.state is S.DONE and retried.attempts == 2, world.transcript(update_ts)
        assert "Retry by" in world.transcript(update_ts)
        assert len(world.stored_hosts()) == 3

        # Slack asks for a refresh and drops the socket; the next event still arrives.
        assert socket.disconnect("refresh_requested") == 1
        socket.wait_connected(hellos=2, timeout=WAIT)
        contacts_ts, envelope = world.share("contacts.csv", CONTACTS, "contacts")
        assert socket.wait_ack(envelope, timeout=WAIT).connection >= 2  # on a new connection
        assert world.ended(contacts_ts, process=serve).state is S.DONE, world.transcript(contacts_ts)

        # SIGTERM while an upload (the poller's step) and a file's check (a listener's work) are
        # in flight: both finish and are recorded, then exit 0.
        world.bigpanda.admin.settings(latency_seconds=2.5)
        last_ts, _ = world.share("hosts.csv", HOSTS_MORE, "hosts: web-4")
        world.job_in_state(last_ts, S.UPLOADING)
        slack.delay(FILE_DOWNLOAD, 2.0, times=1)
        checked_ts, _ = world.share("contacts.csv", CONTACTS_MORE, "contacts")
        file_id = slack.message(OPS, checked_ts)["files"][0]["id"]
        slack.wait_for(lambda: any(c.params["file_id"] == file_id for c in slack.calls_to(FILE_DOWNLOAD)), WAIT)
        assert world.jobs_in(checked_ts) and world.jobs_in(last_ts)[0].state is S.UPLOADING
        assert serve.stop(timeout=WAIT) == 0, serve.log()[-3000:]
    finally:
        serve.kill()
    log = serve.log()
    assert "stopping: no new deliveries; finishing the work in flight" in log and "bot.serve: stopped" in log
    assert "Traceback" not in log, log[-3000:]
    (job,) = world.jobs_in(last_ts)
    assert job.state is S.SUBMITTED and job.upstream_parts, job  # the upload went out and is recorded
    assert job.lease_owner is None  # released: the next process takes it at once
    (checked,) = world.jobs_in(checked_ts)
    assert checked.state is S.QUEUED, checked  # checked, valid, waiting for the poller
    assert "valid: 3 rows" in world.transcript(checked_ts)
    assert _uploads(world.bigpanda) == 4  # hosts, update, its retry, the last one: nothing sent twice
    assert socket.stray_messages == []

    # The next `serve` takes both to their endings; one notice each.
    world.bigpanda.admin.settings(latency_seconds=0.0)
    again = world.serve("serve-again")
    try:
        assert world.ended(last_ts, process=again).state is S.DONE
        assert world.ended(checked_ts, process=again).state is S.DONE
        assert again.stop(timeout=WAIT) == 0
    finally:
        again.kill()
    assert _posts(world, last_ts, "Done:") == 1 and _posts(world, checked_ts, "Done:") == 1


def test_an_event_not_acknowledged_in_time_is_redelivered_and_makes_no_second_job(world: World) -> None:
    socket = world.slack.socket_mode
    serve = world.serve()
    try:
        socket.wait_connected(timeout=WAIT)
        serve.signal(signal.SIGSTOP)  # the bot cannot acknowledge: Slack times out and redelivers
        try:
            thread_ts, first = world.share("hosts.csv", HOSTS, "hosts")
            socket.wait_for(lambda: len(socket.deliveries_of(first)) >= 2, timeout=WAIT)
        finally:
            serve.signal(signal.SIGCONT)
        job = world.ended(thread_ts, process=serve)
        socket.wait_for(lambda: all(d.ack for d in socket.deliveries_of(first) if d.sent_at), timeout=WAIT)
        assert serve.stop(timeout=WAIT) == 0
    finally:
        serve.kill()
    deliveries = socket.deliveries_of(first)
    assert [d.retry_attempt for d in deliveries][:2] == [0, 1]
    assert len([d for d in deliveries if d.ack]) >= 2  # both copies reached the bot and were acked
    assert job.state is S.DONE
    assert len(world.store.recent_jobs(limit=10)) == 1  # one job for the one file
    assert _uploads(world.bigpanda) == 1  # sent once
    assert _posts(world, thread_ts, "Received") == 1  # one status message
    assert _posts(world, thread_ts, "Done:") == 1  # one ending


def test_a_second_sigterm_stops_at_once_and_leaves_the_step_to_its_lease(world: World) -> None:
    world.bigpanda.admin.settings(latency_seconds=LATENCY)  # the upload stays in flight
    serve = world.serve()
    try:
        world.slack.socket_mode.wait_connected(timeout=WAIT)
        thread_ts, _ = world.share("hosts.csv", HOSTS, "hosts")
        world.job_in_state(thread_ts, S.UPLOADING)
        serve.signal(signal.SIGTERM)
        world.slack.wait_for(lambda: "stopping: no new deliveries" in serve.log(), WAIT)
        assert serve.stop(timeout=WAIT) == 130  # the second SIGTERM
    finally:
        serve.kill()
    assert "stopping now; a step cut short is taken over when its lease expires" in serve.log()
    (job,) = world.jobs_in(thread_ts)
    assert job.state is S.UPLOADING and job.lease_owner is not None  # the next run takes it over
    # If the upload's body reached the sandbox before the process died, the sandbox is still
    # answering it: let that finish (it is recorded then) before the sandbox is stopped.
    with contextlib.suppress(TimeoutError):
        world.slack.wait_for(lambda: _uploads(world.bigpanda) == 1, LATENCY + 1.0)
