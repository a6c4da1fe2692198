"""The job store interface the service uses; DynamoJobStore and SqliteJobStore both satisfy it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Protocol

from bot.store.model import DueJobs, GateDecision, HistoryEntry, Job, JobChanges, NewJob, TableGate
from bot.store.rules import UNSET, NextCheck
from bot.store.states import JobState


class JobStore(Protocol):
    """Where the bot keeps its jobs. Every write is one conditional write; none is ever blind.

    Writes return the job as written (version + 1); use the returned value for the next write.
    A write based on an old copy raises `JobConflict` carrying the current record.
    """

    def create_job(self, delivery_key: str, new: NewJob) -> tuple[Job, bool]:
        """Create the job for a delivery, once: a repeated delivery returns `(existing job, False)`."""
        ...

    def get_job(self, job_id: str) -> Job:
        """The job, read consistently; `JobNotFound` if there is none."""
        ...

    def transition(
        self,
        job: Job,
        to: JobState,
        *,
        actor: str,
        reason: str,
        changes: JobChanges | Mapping[str, Any] | None = None,
        next_check_at: NextCheck = UNSET,
        release_lease: bool = False,
    ) -> Job:
        """Move `job` (as the caller last saw it) to `to`, with its history line, in one write.

        `InvalidTransition` if the state table forbids it; `JobConflict` if the job is no longer at
        `job.state`/`job.version`. `next_check_at` not given: due now in a work state, not due in
        `awaiting_approval`. A terminal state gets its expiry time and leaves the due index (and
        drops the lease), unless `next_check_at` is given and the job is not `notified`: then it
        stays due, lease kept, until its ending notice is confirmed (`update(changes={"notified":
        True})` takes it out). Entering `uploading` counts an attempt and sets `upload_started_at`.
        """
        ...

    def update(
        self,
        job: Job,
        *,
        changes: JobChanges | Mapping[str, Any] | None = None,
        next_check_at: NextCheck = UNSET,
        release_lease: bool = False,
    ) -> Job:
        """Change fields without changing state (conditional on `job.version`); no history line.
        An ended job may only move its next check while its notice is pending; confirming the
        notice (`notified` True) takes it out of the due index and drops the lease."""
        ...

    def due_jobs(
        self, now: datetime | None = None, *, limit: int = 25, states: Collection[JobState] | None = None
    ) -> DueJobs:
        """Jobs whose next check time has come and whose lease is free or expired, earliest first;
        only jobs in `states` when given (the poller skips the front end's `received`/`validating`).
        Ended jobs appear only while their ending notice is pending (`Job.notice_pending`).
        A record that cannot be read is quarantined here (out of the due index, marked, logged
        once) and listed in `DueJobs.quarantined`; it never makes the call fail."""
        ...

    def next_due_at(self) -> datetime | None:
        """The earliest next check in the due index (leased jobs included), or None: nothing is
        in flight, nothing is waiting. The poller returns at once when it lies past its run."""
        ...

    def open_jobs(self, *, limit: int = 500) -> list[Job]:
        """Jobs not ended (every one of them is in the due index), earliest next check first;
        unreadable records are left out (and logged)."""
        ...

    def set_quarantine(self, job: Job, *, actor: str, reason: str | None) -> Job:
        """Take the job out of the poller's hands (`reason`), or give it back (None: `replay`,
        due now), with a history line; conditional on `job.version` like every write."""
        ...

    def acquire_lease(self, job: Job, owner: str, ttl_seconds: float) -> Job:
        """Take the job's lease if it is free, expired or already `owner`'s (conditional on that only,
        so a slightly old copy from `due_jobs` is fine). `LeaseHeld` if another worker holds it,
        `JobConflict` if the job has ended (unless its notice is pending). Returns the current job
        with the lease."""
        ...

    def renew_lease(self, job: Job, owner: str, ttl_seconds: float) -> Job:
        """Extend `owner`'s lease; same rules as acquire (`LeaseHeld` if it was lost to another)."""
        ...

    def release_lease(self, job: Job, owner: str) -> Job:
        """Drop `owner`'s lease; a no-op returning the current job if `owner` does not hold it."""
        ...

    def acquire_table_gate(
        self, table: str, job_id: str, *, min_spacing_seconds: float = 0.0, lease_seconds: float = 3600.0
    ) -> GateDecision:
        """Ask to make an upstream call for `table` now (one upload in flight per table, and at
        least `min_spacing_seconds` between calls). Re-entrant for the holder (each call counts)."""
        ...

    def renew_table_gate(self, table: str, job_id: str, *, lease_seconds: float = 3600.0) -> bool:
        """Extend the holder's gate lease (the poller does it while the upstream job runs)."""
        ...

    def release_table_gate(self, table: str, job_id: str) -> bool:
        """Free the gate if `job_id` holds it (True); keeps the last call time for the spacing."""
        ...

    def get_table_gate(self, table: str) -> TableGate | None: ...

    def reserve_rate_slot(self, key: str, *, limit: int, window_seconds: float) -> float:
        """Book the next start of a request under "at most `limit` starts in any `window_seconds`"
        for `key` (a BigPanda organization, a D·engage caller address or table), shared by every
        process using this store. Returns the booked start, epoch seconds on the store's clock (the
        caller sleeps until then by its own wall clock, so the write's own latency is not added).
        One conditional write (SQLite: one transaction); `StoreUnavailable` if it keeps colliding."""
        ...

    def history_for_job(self, job_id: str) -> list[HistoryEntry]:
        """Every state change of the job, oldest first."""
        ...

    def history_for_table(self, table: str, *, limit: int = 50) -> list[HistoryEntry]:
        """The latest `limit` state changes of jobs on `table`, oldest first."""
        ...

    def recent_jobs(self, table: str | None = None, *, limit: int = 20) -> list[Job]:
        """Latest jobs (of one table, or all), newest first, through an index."""
        ...

    def claim_once(self, key: str, value: str, *, ttl_seconds: float) -> tuple[bool, str]:
        """Record `value` under `key` unless something is recorded there already (one conditional
        write): `(True, value)` for the first caller, `(False, the first caller's value)` for every
        later one. Kept `ttl_seconds`. The Slack front end answers a delivery (an event, a
        command, a menu pick) once with it."""
        ...

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete rows past their expiry time; returns how many. DynamoDB's TTL does this by itself."""
        ...
