"""`JobService`: the one object the poller and the Slack front end hold. It picks the step a due
job needs and hands it to the step's module; Retry goes to `bot.service.retry`."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bot.config import TablesFile
from bot.errors import ConfigError, JobConflict, LeaseHeld, StoreError
from bot.observability import METRICS, job_context
from bot.service.checking import check_status
from bot.service.due import WATCHED_STATES, is_poller_work
from bot.service.left_behind import end_left_behind
from bot.service.notices import Notifier, ending_for, finish, notice_again
from bot.service.parts import DONE, SENDING, decided_ending
from bot.service.retry import retry_job
from bot.service.sending import config_failure, recover_interrupted_send, send_next
from bot.service.worker import PollSettings, Step, TargetClientFor, Worker
from bot.staging import Staging
from bot.store import Job, JobState, JobStore
from bot.store.model import utc_now

log = logging.getLogger(__name__)

S = JobState


class JobService:
    def __init__(
        self,
        store: JobStore,
        staging: Staging,
        tables: TablesFile,
        client_for: TargetClientFor,
        notifier: Notifier,
        *,
        settings: PollSettings | None = None,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        work_dir: Path | None = None,
    ) -> None:
        self.worker = Worker(
            store=store,
            staging=staging,
            tables=tables,
            client_for=client_for,
            notifier=notifier,
            settings=settings or PollSettings(),
            worker_id=worker_id or f"poller-{secrets.token_hex(4)}",
            clock=clock,
            work_dir=work_dir,
        )

    @property
    def store(self) -> JobStore:
        return self.worker.store

    @property
    def staging(self) -> Staging:
        return self.worker.staging

    @property
    def tables(self) -> TablesFile:
        return self.worker.tables

    @property
    def client_for(self) -> TargetClientFor:
        return self.worker.client_for

    @property
    def notifier(self) -> Notifier:
        return self.worker.notifier

    @property
    def settings(self) -> PollSettings:
        return self.worker.settings

    @property
    def worker_id(self) -> str:
        return self.worker.worker_id

    @property
    def work_dir(self) -> Path | None:
        return self.worker.work_dir

    # -- use cases for the Slack front end ------------------------------------------------------

    def retry_job(self, job_id: str, actor: str) -> Job:
        """The Retry button (`bot.service.retry.retry_job`)."""
        return retry_job(self.worker, job_id, actor)

    # -- the first upload step, run at once by the Slack function ---------------------------------

    def start_upload(self, job_id: str) -> Step:
        """Start a queued job's upload now: the same first step the poller would run (the job's
        lease, the table gate, the target's shared rate limit), called by the Slack function right
        after a file is valid and needs no approval, and after Approve, Confirm or Retry; then it
        follows the upload for `follow_seconds` (`follow`). What cannot start now (gate busy,
        D·engage's next minute, a crash) stays due for the poller. Never raises: the upload is the
        poller's to finish whatever happens here. Off (`TABLEBOT_START_UPLOAD_AT_ONCE=false`):
        "skipped", the poller starts it."""
        if not self.settings.start_at_once:
            return "skipped"
        try:
            job = self.store.get_job(job_id)
        except StoreError as exc:
            log.warning("job %s: not started at once (%s); the poller will", job_id, exc)
            return "skipped"
        with job_context(job):
            if job.state is not S.QUEUED or job.quarantined is not None:
                return "skipped"
            step = self._step(job)
            if step == "sent":
                METRICS.add("UploadsStarted", By="slack")
            log.info("job %s: first upload step at once: %s", job.job_id, step)
        if step == "sent" and self.settings.follow_seconds > 0:
            self.follow(job_id, self.settings.follow_seconds)
        return step

    def follow(self, job_id: str, seconds: float, *, sleep: Callable[[float], None] = time.sleep) -> Step | None:
        """Step the job whenever it is due, for up to `seconds`: status checks, then its ending
        and notice, exactly as the poller would (same lease, same claim). Returns the last step,
        or None if none was due. Stops early when the job has ended and is told, when its next
        check lies beyond `seconds`, or when another worker holds it (the poller has it)."""
        deadline = time.monotonic() + seconds
        last: Step | None = None
        while True:
            try:
                job = self.store.get_job(job_id)
            except StoreError as exc:
                log.warning("job %s: not followed further (%s); the poller will", job_id, exc)
                return last
            if job.quarantined is not None or job.next_check_at is None or not is_poller_work(job):
                return last  # ended and told (or taken out of our hands)
            wait = (job.next_check_at - self.worker.now()).total_seconds()
            left = deadline - time.monotonic()
            if wait > left:
                return last  # the next look is the poller's
            if wait > 0:
                sleep(wait)
                continue
            with job_context(job):
                last = self._step(job)
            if last in ("busy", "lost", "skipped", "error"):
                return last

    # -- the poller's step -------------------------------------------------------------------------

    def process(self, seen: Job) -> Step:
        """One step of one due job, under its lease. Never raises for one job's trouble."""
        with job_context(seen):
            step = self._step(seen)
            if step == "sent" and seen.state is S.QUEUED:
                METRICS.add("UploadsStarted", By="poller")
            return step

    def _step(self, seen: Job) -> Step:
        worker = self.worker
        if not is_poller_work(seen) or seen.quarantined is not None:
            return "skipped"
        if seen.state in WATCHED_STATES:
            return end_left_behind(worker, seen)
        lease = worker.settings.notice_lease_seconds if seen.is_terminal else worker.settings.lease_seconds
        try:
            job = worker.store.acquire_lease(seen, worker.worker_id, lease)
        except (LeaseHeld, JobConflict):
            return "busy"
        if job.next_check_at is None or job.next_check_at > worker.now():
            # `seen` was a stale copy: another worker stepped the job meanwhile and set its next check.
            worker.store.release_lease(job, worker.worker_id)
            return "busy"
        if job.is_terminal:
            return worker.guarded(job, lambda: notice_again(worker, job))
        return worker.guarded(job, lambda: self._advance(job))

    def _advance(self, job: Job) -> Step:
        """The step a leased, unended job needs: send, recover an interrupted send, check, or end."""
        worker = self.worker
        try:
            table = worker.tables.table(job.table)
            client = worker.client_for(table)
        except ConfigError as exc:
            return config_failure(worker, job, str(exc))
        if job.state is S.QUEUED:
            return send_next(worker, job, table, client, job.upstream_parts)
        ending = decided_ending(job)
        if ending is not None:  # decided earlier; its notice is still to be posted
            return finish(worker, job, ending_for(job, table, ending, job.last_error), job.upstream_parts)
        parts = job.upstream_parts
        last = parts[-1] if parts else None
        if last is None:
            # `uploading` without a part: a send that provably never reached the vendor; send now.
            return send_next(worker, job, table, client, parts)
        if last.status == SENDING:
            return recover_interrupted_send(worker, job, table, client, parts)
        if last.status == DONE:  # part k done, part k+1 not yet sent (gate spacing)
            return send_next(worker, job, table, client, parts)
        return check_status(worker, job, table, client, parts)
