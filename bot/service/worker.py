"""Who does a poller step: one worker's parts, pacing and clock, and the guard around a step.

Nothing in `bot.service` knows Slack, boto3 or Lambda: the store, the staging, the upstream clients
and the notifier are passed in (`bot.wiring` builds them). Every step module takes a `Worker`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bot.config import TableConfig, TablesFile
from bot.errors import JobConflict, StoreError
from bot.limits import NO_CAPS, InFlightCaps
from bot.staging import Staging
from bot.store import Job, JobStore
from bot.store.model import as_utc
from bot.targets.base import TargetClient

if TYPE_CHECKING:
    from bot.service.notices import Notifier

log = logging.getLogger(__name__)

TargetClientFor = Callable[[TableConfig], TargetClient]

Step = Literal[
    "skipped",  # not a poller state
    "busy",  # another worker holds the lease
    "lost",  # the job changed under us (our lease was taken over): nothing more done
    "waiting",  # table gate held or spacing: checked again later
    "sent",  # an upload (or a part) started upstream
    "running",  # upstream job still running
    "retry_later",  # transient upstream or staging error
    "notice_retry",  # ended, Slack failed: the notice is posted (or found) on a later run
    "already_posted",  # a later attempt found the ending in the thread: confirmed, not posted again
    "done",
    "failed",
    "timed_out",
    "cancelled",  # a front-end job left behind (intake died, no approver answered), ended with a notice
    "error",  # a bug: logged, the job is checked again later
]


@dataclass(frozen=True)
class PollSettings:
    """How the poller paces its work (environment names in `bot.wiring`)."""

    lease_seconds: float = 600.0  # longer than the longest upload of one part
    first_check_seconds: float = 2.0  # first status check after an upload starts
    max_check_seconds: float = 30.0  # checks of long jobs back off up to this interval
    backoff_share: float = 0.2  # next check after this share of the job's age
    job_timeout_seconds: float = 3600.0  # from the upload start to `timed_out`
    error_retry_seconds: float = 30.0  # after a transient upstream or staging error
    notice_retry_seconds: float = 30.0  # after Slack failed to take the notice
    notice_lease_seconds: float = 120.0  # a worker's hold on a notice it picked up (then another may look)
    gate_recheck_seconds: float = 5.0  # a queued job waiting for another job's table gate
    gate_lease_seconds: float = 3600.0  # renewed at every check of the holder
    # A received/validating job with no lease is ended after this long without a write; the
    # intake's own lease (`bot.intake.IntakeSettings`, same default) covers the jobs it works on.
    # Longer than Lambda's 15-minute limit, so a running intake is never taken for a dead one.
    intake_lease_seconds: float = 960.0
    # Only for the notice's wording when a job's history does not show when its wait began; the
    # deadline itself is the job's next check, set by the intake.
    approval_timeout_seconds: float = 86400.0
    # Uploads in flight per person / per table: a Retry or a restore is refused past them.
    caps: InFlightCaps = NO_CAPS
    # `JobService.start_upload` sends at once (the Slack function); False: the poller does it all.
    start_at_once: bool = True
    # After it started an upload, the Slack function follows it this long (`JobService.follow`):
    # a short upstream job is told in its thread within seconds, not at the next scheduled run.
    follow_seconds: float = 0.0


@dataclass(frozen=True)
class Worker:
    """One poller worker: what it works with, how it paces, who it is in leases and history."""

    store: JobStore
    staging: Staging
    tables: TablesFile
    client_for: TargetClientFor
    notifier: Notifier
    settings: PollSettings
    worker_id: str
    clock: Callable[[], datetime]
    work_dir: Path | None = None

    def now(self) -> datetime:
        return as_utc(self.clock())

    def later(self, seconds: float) -> datetime:
        return self.now() + timedelta(seconds=seconds)

    def guarded(self, job: Job, step: Callable[[], Step]) -> Step:
        """Run one step of a leased job: a lost lease or an unexpected error never reaches the poller."""
        try:
            return step()
        except JobConflict:
            log.info("job %s changed under worker %s; left to its new owner", job.job_id, self.worker_id)
            return "lost"
        except Exception:
            log.exception("job %s: unexpected error in worker %s; checked again later", job.job_id, self.worker_id)
            self._park_after_error(job.job_id)
            return "error"

    def _park_after_error(self, job_id: str) -> None:
        try:
            current = self.store.get_job(job_id)
            if current.lease_owner == self.worker_id and (not current.is_terminal or current.notice_pending):
                self.store.update(
                    current, next_check_at=self.later(self.settings.error_retry_seconds), release_lease=True
                )
        except StoreError:
            log.warning("job %s: could not park it after an error; its lease expires by itself", job_id)
