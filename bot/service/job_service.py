"""`JobService`: the one object the poller and the Slack front end hold. It picks the step a due
job needs and hands it to the step's module; Retry goes to `bot.service.retry`."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bot.config import TablesFile
from bot.errors import ConfigError, JobConflict, LeaseHeld
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

    # -- the poller's step -------------------------------------------------------------------------

    def process(self, seen: Job) -> Step:
        """One step of one due job, under its lease. Never raises for one job's trouble."""
        worker = self.worker
        if not is_poller_work(seen):
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
