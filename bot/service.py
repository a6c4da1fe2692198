"""Use cases behind the scheduled poller: carry queued and submitted jobs to their ending, once.

Nothing here knows Slack, boto3 or Lambda: the store, the staging, the upstream clients and the
notifier are passed in (`bot.wiring` builds them). `JobService.process(job)` does one step of one
due job under its lease; `bot.poller` calls it for every due job, many times a minute.

One worker does all upstream work
---------------------------------
`queued` → take the table gate (one upload in flight per upstream table, and D·engage's
one-call-a-minute spacing) → move to `uploading` BEFORE sending, with a placeholder part whose
status is `sending` → send the staged normalized file → record the upstream job id and move to
`submitted` (both in one conditional write). A multi-part D·engage upload sends part k+1 from
`submitted`, after part k is `done` and the gate's spacing allows, with the same placeholder
written before the request.

A crash between "request sent" and "job id recorded" leaves the placeholder `sending` behind.
The next worker (after the lease expired) finds it and decides by what a second send would do:
- BigPanda replaces the whole table, and a D·engage table with a primary key is upserted, so
  sending the same bytes again is idempotent in effect: it is re-sent.
- A D·engage table without a primary key is appended to: a second send could add the rows
  twice. It is NOT re-sent: the job fails with a message saying the part may have been applied,
  to check the table upstream, and to press Retry only deliberately.
A request that provably never reached the vendor (refused connection, `429`) removes the
placeholder again and is sent on a later run.

Part statuses (`UpstreamPart.status`): `sending`, `running`, `done`, `failed` (the upstream job
failed), `refused` (the upload request was refused: no upstream job), `unknown` (may have been
applied, not re-sent). They record the decided ending, so a later run can finish the job
without asking the upstream again.

Exactly-once notice
-------------------
The thread must always end with one clear done / failed / timed-out post: never none, never two.
The store keeps an ended job in the due index while its notice is pending (`Job.notice_pending`:
terminal, `notified` False, a next check time), so a notice that could not be posted is never
forgotten. The claim that wins the right to post is a conditional write, fenced by the job's
version (every lease write bumps it):

1. decide the ending (done / failed / timed_out) under the job's lease;
2. end the job AND claim its notice in the same conditional transition: the terminal state,
   the ending in `last_error` and the parts, `notice_claimed_by/at` = this worker, the lease
   kept, `next_check_at` = the lease's expiry. A worker whose lease was taken over loses this
   write with `JobConflict` and posts nothing;
3. post: update the status message in place, then post in the thread with Slack message
   metadata (`event_type` "tablebot_job_ending", payload job id, ending and attempt);
4a. posted: confirm (`notified` True), which takes the job out of the due index and drops the
    lease; the table gate is released at step 2 already;
4b. Slack failed (the notifier raised `NoticeFailed`): the job stays pending,
    `notice_retry_seconds` later, lease given back.

Any later attempt (after 4b, or after the claimer died between 2 and 4a and its lease expired)
is a job found due with an earlier claim. Its worker takes the lease (`notice_lease_seconds`),
claims the notice again (a conditional update), and FIRST looks in the thread
(`conversations.replies` with metadata) for the post of this job, ending and attempt: found,
it only confirms; absent, it posts, then confirms. So a notice is lost only if Slack keeps
failing, and doubled only if a post takes longer than a whole lease (the looker cannot see a
post still in flight). If the thread cannot be read for a lasting reason (missing
`channels:history` scope, say), the worker posts: a rare duplicate beats a missing ending.

No job is left before the poller's states
-----------------------------------------
The front end (`bot.intake`) works on `received`/`validating` jobs under its own lease
(`intake:<id>`, longer than the longest intake) and gives them a next check at that lease's
expiry. If it dies mid-way (Lambda timeout, crash, deploy), the lease runs out and the job is
found due here: it is ended `cancelled` ("the check stopped before it finished; nothing was
uploaded; share the file again") through the same claim-post-confirm as every other ending. A
job in those states that never had a lease (its intake never started) is ended once it has not
changed for `intake_lease_seconds`. A job whose intake still holds its lease is never touched: the
due index skips it and acquiring the lease is refused. An `awaiting_approval` job carries its
approval deadline as its next check (set by the intake); found due, it is cancelled with a
notice naming who could have approved. Taking the lease bumps the job's version, so an intake
or an Approve that writes after it loses its conditional write, and one that wrote before makes
the poller's write lose: either the front end or the poller ends the job, never both.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from bot.config import TableConfig, TablesFile
from bot.errors import (
    ConfigError,
    JobConflict,
    LeaseHeld,
    NoticeFailed,
    Refused,
    StagedKeyNotFound,
    StagingError,
    StoreError,
    UpstreamError,
)
from bot.staging import Staging
from bot.staging.layout import normalized_key, previous_version
from bot.store import Job, JobState, JobStore, NewJob, UpstreamPart
from bot.store.model import as_utc, utc_now
from bot.store.states import TERMINAL_STATES
from bot.targets import BigPandaClient, DengageClient, FileSource

log = logging.getLogger(__name__)

S = JobState
TargetClientFor = Callable[[TableConfig], BigPandaClient | DengageClient]

SENDING = "sending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
REFUSED = "refused"
UNKNOWN = "unknown"
_FAILED_STATUSES = frozenset({FAILED, REFUSED, UNKNOWN})
# The placeholder job id of a part whose request is in flight (the vendor has not named a job yet).
NO_JOB_ID = "-"

# States the poller works on; the others belong to the Slack front end (validation, approval).
POLLER_STATES = frozenset({S.QUEUED, S.UPLOADING, S.SUBMITTED})
# The front end's states the poller watches: it ends such a job when it is left behind (its
# intake died, or nobody answered the approval request in time). The intake keeps them out of
# the due index until then (its lease, its next check at the lease expiry or the deadline).
INTAKE_STATES = frozenset({S.RECEIVED, S.VALIDATING})
WATCHED_STATES = INTAKE_STATES | {S.AWAITING_APPROVAL}
# What the poller asks the due index for: its work states, left-behind front-end jobs, and
# endings whose notice is pending.
POLLER_DUE_STATES = POLLER_STATES | WATCHED_STATES | TERMINAL_STATES
# Slack message metadata on every ending post: how a later worker recognises it in the thread.
ENDING_EVENT_TYPE = "tablebot_job_ending"


def is_poller_work(job: Job) -> bool:
    """Does the poller have something to do for this job (a work state, a due front-end job it may
    have to end, or a pending notice)?"""
    return (
        job.state in POLLER_STATES
        or job.notice_pending
        or (job.state in WATCHED_STATES and job.next_check_at is not None)
    )


def intake_stranded(job: Job, now: datetime, intake_lease_seconds: float) -> bool:
    """Was this `received`/`validating` job left behind by its intake? Its lease expired, or it
    never had one and has not changed for `intake_lease_seconds`. Never while a lease runs."""
    if job.state not in INTAKE_STATES or job.lease_active(now):
        return False
    if job.lease_expires_at is not None:
        return True
    return job.updated_at + timedelta(seconds=intake_lease_seconds) <= now


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

TARGET_LABELS = {"bigpanda": "BigPanda", "dengage": "D·engage"}


@dataclass(frozen=True)
class Ending:
    """How a job ends, as told to the thread."""

    state: JobState  # DONE | FAILED | TIMED_OUT
    reason: str | None
    target_label: str  # "BigPanda" | "D·engage"
    upstream_job_ids: tuple[str, ...] = ()
    retryable: bool = False  # offer the Retry button (failed jobs)


class Notifier(Protocol):
    def progress(self, job: Job, text: str) -> None:
        """Show progress in the job's status message (best effort: never raises)."""
        ...

    def ending(self, job: Job, ending: Ending) -> None:
        """Post the ending in the job's thread (with the metadata of `ending_metadata`) and update
        its status message; `NoticeFailed` if it could not be posted now."""
        ...

    def ending_posted(self, job: Job, ending: Ending) -> bool:
        """Is this ending of this attempt of the job already in its thread (an earlier worker's
        post)? `NoticeFailed` if that cannot be told now; False if it can never be told."""
        ...


def ending_metadata(job: Job, state: JobState) -> dict[str, object]:
    """The Slack message metadata of an ending post: event type, job id, ending and attempt (a
    Retry's ending is another notice than the first attempt's)."""
    return {
        "event_type": ENDING_EVENT_TYPE,
        "event_payload": {"job_id": job.job_id, "ending": str(state), "attempt": job.attempts},
    }


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


def _part_label(index: int, count: int) -> str:
    return f"part {index} of {count}" if count > 1 else "the upload"


def decided_ending(job: Job) -> JobState | None:
    """The ending recorded in the job's parts, if one was decided: failed, done, or None."""
    parts = job.upstream_parts
    if any(p.status in _FAILED_STATUSES for p in parts):
        return S.FAILED
    if parts and parts[-1].status == DONE and parts[-1].index == parts[-1].count:
        return S.DONE
    return None


def applied_note(parts: Sequence[UpstreamPart], failed_index: int, count: int) -> str:
    """Which parts of a multi-part upload were applied, for a failure message."""
    if count <= 1:
        return ""
    done = [p.index for p in parts if p.status == DONE]
    applied = (
        f"parts 1–{max(done)} were applied"
        if len(done) > 1
        else ("part 1 was applied" if done else "no part was applied")
    )
    rest = f"; parts {failed_index + 1}–{count} were not sent" if failed_index < count else ""
    return f" ({applied}{rest}; Retry sends part {failed_index} onwards)"


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
        self.store = store
        self.staging = staging
        self.tables = tables
        self.client_for = client_for
        self.notifier = notifier
        self.settings = settings or PollSettings()
        self.worker_id = worker_id or f"poller-{secrets.token_hex(4)}"
        self._clock = clock
        self.work_dir = work_dir

    def _now(self) -> datetime:
        return as_utc(self._clock())

    def _later(self, seconds: float) -> datetime:
        return self._now() + timedelta(seconds=seconds)

    # -- use cases for the Slack front end ------------------------------------------------------

    def retry_job(self, job_id: str, actor: str) -> Job:
        """The Retry button: a failed job goes back to `queued` with the same staged file. Parts
        already applied (a multi-part D·engage upload) are kept; sending resumes after them."""
        job = self.store.get_job(job_id)
        if job.state is not S.FAILED:
            raise Refused(f"job {job_id} is {job.state}, not failed: only a failed upload can be retried")
        keep: list[UpstreamPart] = []
        for part in sorted(job.upstream_parts, key=lambda p: p.index):
            if part.status != DONE or part.index != len(keep) + 1:
                break
            keep.append(part)
        try:
            return self.store.transition(
                job,
                S.QUEUED,
                actor=actor,
                reason=f"Retry by {actor}",
                changes={"upstream_parts": tuple(keep), "last_error": None},
            )
        except JobConflict as exc:
            raise Refused(f"job {job_id} was changed meanwhile (now {exc.current.state}); it was not retried") from None

    def restore_previous(
        self, table: str, actor: str, *, channel_id: str | None = None, thread_ts: str | None = None
    ) -> Job:
        """Queue an upload of the table's previous successful version (the normalized file of the
        newest `done` job before the latest `done` one). Raises Refused when there is none."""
        self.tables.table(table)  # ConfigError for an unknown table
        done_jobs = [j for j in self.store.recent_jobs(table, limit=100) if j.state is S.DONE]
        if not done_jobs:
            raise Refused(f"table {table} has no successful upload to go back from")
        current = done_jobs[0]

        def was_done(job_id: str) -> bool:
            try:
                return self.store.get_job(job_id).state is S.DONE
            except StoreError:
                return False

        version = previous_version(self.staging, table, current.job_id, accept=was_done)
        if version is None:
            raise Refused(f"table {table} has no earlier successful version still in staging")
        source = self.store.get_job(version.job_id)
        new = NewJob(
            table=table,
            target=source.target,
            requested_by=actor,
            source=f"restore:{version.job_id}",
            file_name=source.file_name,
            channel_id=channel_id,
            thread_ts=thread_ts,
            size_bytes=version.size,
            sha256=source.sha256,
            staging_key=version.key,
        )
        job, _ = self.store.create_job(f"restore:{table}:{current.job_id}:{version.job_id}", new)
        if job.state is S.RECEIVED:
            job = self.store.transition(job, S.VALIDATING, actor=actor, reason=f"restore {version.job_id}")
        if job.state is S.VALIDATING:
            job = self.store.transition(
                job, S.QUEUED, actor=actor, reason=f"restore of job {version.job_id}: validated when first uploaded"
            )
        return job

    # -- the poller's step -------------------------------------------------------------------------

    def process(self, seen: Job) -> Step:
        """One step of one due job, under its lease. Never raises for one job's trouble."""
        if not is_poller_work(seen):
            return "skipped"
        if seen.state in WATCHED_STATES:
            return self._end_left_behind(seen)
        lease = self.settings.notice_lease_seconds if seen.is_terminal else self.settings.lease_seconds
        try:
            job = self.store.acquire_lease(seen, self.worker_id, lease)
        except (LeaseHeld, JobConflict):
            return "busy"
        if job.next_check_at is None or job.next_check_at > self._now():
            # `seen` was a stale copy: another worker stepped the job meanwhile and set its next check.
            self.store.release_lease(job, self.worker_id)
            return "busy"
        if job.is_terminal:
            return self._guarded(job, lambda: self._notice_again(job))
        return self._guarded(job, lambda: self._advance(job))

    def _guarded(self, job: Job, step: Callable[[], Step]) -> Step:
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
                    current, next_check_at=self._later(self.settings.error_retry_seconds), release_lease=True
                )
        except StoreError:
            log.warning("job %s: could not park it after an error; its lease expires by itself", job_id)

    def _advance(self, job: Job) -> Step:
        try:
            table = self.tables.table(job.table)
            client = self.client_for(table)
        except ConfigError as exc:
            return self._config_failure(job, str(exc))
        if job.state is S.QUEUED:
            return self._send_next(job, table, client, job.upstream_parts)
        ending = decided_ending(job)
        if ending is not None:  # decided earlier; its notice is still to be posted
            return self._finish(job, self._ending(job, table, ending, job.last_error), job.upstream_parts)
        parts = job.upstream_parts
        last = parts[-1] if parts else None
        if last is None:
            # `uploading` without a part: a send that provably never reached the vendor; send now.
            return self._send_next(job, table, client, parts)
        if last.status == SENDING:
            return self._recover_interrupted_send(job, table, client, parts)
        if last.status == DONE:  # part k done, part k+1 not yet sent (gate spacing)
            return self._send_next(job, table, client, parts)
        return self._check_status(job, table, client, parts)

    # -- sending ---------------------------------------------------------------------------------

    def _gate_key(self, table: TableConfig) -> str:
        upstream = table.enrichment_id or table.table_id or table.table_name or table.alias
        return f"{table.target.name}:{upstream}"

    def _spacing(self, client: BigPandaClient | DengageClient) -> float:
        return client.settings.part_spacing_seconds if isinstance(client, DengageClient) else 0.0

    def _send_next(
        self, job: Job, table: TableConfig, client: BigPandaClient | DengageClient, parts: tuple[UpstreamPart, ...]
    ) -> Step:
        index = len(parts) + 1
        decision = self.store.acquire_table_gate(
            self._gate_key(table),
            job.job_id,
            min_spacing_seconds=self._spacing(client),
            lease_seconds=self.settings.gate_lease_seconds,
        )
        if not decision.acquired:
            retry_at = decision.retry_at or self._later(self.settings.gate_recheck_seconds)
            if decision.reason == "held":
                retry_at = min(retry_at, self._later(self.settings.gate_recheck_seconds))
            self.store.update(job, changes={"upstream_parts": parts}, next_check_at=retry_at, release_lease=True)
            return "waiting"
        with tempfile.TemporaryDirectory(prefix="tablebot-send-", dir=self.work_dir) as tmp:
            path = Path(tmp) / "normalized.csv"
            key = job.staging_key or normalized_key(job.table, job.job_id)
            try:
                with self.staging.open(key) as src, path.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
            except StagedKeyNotFound:
                reason = (
                    f"the staged file of this upload is gone ({key}: expired or deleted), so nothing was sent; "
                    "share the file again"
                )
                return self._refuse(job, table, parts, index=index, count=index, reason=reason)
            except (StagingError, OSError) as exc:
                return self._later_after_error(job, parts, f"staging could not be read: {exc}")
            try:
                sources = (
                    client.plan(table, path).sources() if isinstance(client, DengageClient) else [FileSource(path)]
                )
            except UpstreamError as exc:
                return self._refuse(job, table, parts, index=index, count=index, reason=exc.message)
            count = len(sources)
            if index > count:  # cannot happen with the same file and settings; do not send past the end
                return self._refuse(
                    job, table, parts, index=index, count=count, reason=f"the file now has {count} parts, not {index}"
                )
            placeholder = UpstreamPart(index=index, count=count, upstream_job_id=NO_JOB_ID, status=SENDING)
            marked = (*parts, placeholder)
            # Written BEFORE the request: a crash after it leaves `sending` for the next worker to judge.
            if job.state is S.QUEUED:
                job = self.store.transition(
                    job,
                    S.UPLOADING,
                    actor=self.worker_id,
                    reason=f"sending {_part_label(index, count)} to {table.target.name}",
                    changes={"upstream_parts": marked, "last_error": None},
                )
            else:
                job = self.store.update(job, changes={"upstream_parts": marked})
            self.notifier.progress(job, f"Sending {_part_label(index, count)} to {TARGET_LABELS[table.kind]}…")
            try:
                started = client.start_upload(table, sources[index - 1], part=index, parts=count)
            except UpstreamError as exc:
                if exc.may_have_started:
                    reason = (
                        f"{exc.message}. {_part_label(index, count).capitalize()} may have been applied: "
                        f"check the table in {TARGET_LABELS[table.kind]} before sending it again"
                    )
                    return self._fail_part(job, table, marked, index=index, count=count, status=UNKNOWN, reason=reason)
                if exc.retryable:
                    return self._later_after_error(job, parts, exc.message)
                return self._fail_part(job, table, marked, index=index, count=count, status=REFUSED, reason=exc.message)
        sent = (*parts, UpstreamPart(index=index, count=count, upstream_job_id=started.job_id, status=RUNNING))
        first_check = self._later(self.settings.first_check_seconds)
        if job.state is S.UPLOADING:
            job = self.store.transition(
                job,
                S.SUBMITTED,
                actor=self.worker_id,
                reason=f"upstream job {started.job_id} started ({_part_label(index, count)})",
                changes={"upstream_parts": sent, "last_error": None},
                next_check_at=first_check,
                release_lease=True,
            )
        else:
            job = self.store.update(
                job, changes={"upstream_parts": sent}, next_check_at=first_check, release_lease=True
            )
        self.notifier.progress(job, self._progress_text(table, sent))
        return "sent"

    def _progress_text(self, table: TableConfig, parts: Sequence[UpstreamPart]) -> str:
        last = parts[-1]
        label = TARGET_LABELS[table.kind]
        if last.count > 1:
            return f"{label} is applying part {last.index} of {last.count} (job `{last.upstream_job_id}`)…"
        return f"{label} is applying the upload (job `{last.upstream_job_id}`)…"

    def _resend_is_safe(self, table: TableConfig) -> bool:
        """Would sending the same bytes again leave the table as one send would? (module docstring)"""
        if table.kind == "bigpanda":
            return True
        schema = table.configured_schema()
        return schema is not None and bool(schema.primary_key)

    def _recover_interrupted_send(
        self, job: Job, table: TableConfig, client: BigPandaClient | DengageClient, parts: tuple[UpstreamPart, ...]
    ) -> Step:
        last = parts[-1]
        before = parts[:-1]
        if self._resend_is_safe(table):
            log.info(
                "job %s: %s was interrupted while sending; sending it again",
                job.job_id,
                _part_label(last.index, last.count),
            )
            return self._send_next(job, table, client, before)
        reason = (
            f"the worker sending {_part_label(last.index, last.count)} stopped before "
            f"{TARGET_LABELS[table.kind]} named its job, so it may have been applied. It was not sent again "
            "because this table has no primary key and its rows would be added twice: check the table in "
            f"{TARGET_LABELS[table.kind]}, and press Retry only if the rows are not there"
        )
        return self._fail_part(job, table, parts, index=last.index, count=last.count, status=UNKNOWN, reason=reason)

    def _refuse(
        self, job: Job, table: TableConfig, parts: tuple[UpstreamPart, ...], *, index: int, count: int, reason: str
    ) -> Step:
        marked = (*parts, UpstreamPart(index=index, count=max(count, index), upstream_job_id=NO_JOB_ID, status=REFUSED))
        if job.state is S.QUEUED:  # `queued` cannot end directly: the state table goes through `uploading`
            job = self.store.transition(
                job, S.UPLOADING, actor=self.worker_id, reason="failed before sending", changes={"last_error": None}
            )
        return self._fail_part(job, table, marked, index=index, count=max(count, index), status=REFUSED, reason=reason)

    def _fail_part(
        self,
        job: Job,
        table: TableConfig,
        parts: tuple[UpstreamPart, ...],
        *,
        index: int,
        count: int,
        status: str,
        reason: str,
    ) -> Step:
        parts = tuple(replace(p, status=status) if p.index == index else p for p in parts)
        prefix = f"Part {index} of {count}: " if count > 1 else ""
        message = f"{prefix}{reason}{applied_note(parts, index, count)}"
        return self._finish(job, self._ending(job, table, S.FAILED, message), parts)

    def _later_after_error(self, job: Job, parts: tuple[UpstreamPart, ...], message: str) -> Step:
        self.store.update(
            job,
            changes={"upstream_parts": parts, "last_error": message},
            next_check_at=self._later(self.settings.error_retry_seconds),
            release_lease=True,
        )
        return "retry_later"

    def _config_failure(self, job: Job, message: str) -> Step:
        if job.state is S.QUEUED:
            job = self.store.transition(
                job, S.UPLOADING, actor=self.worker_id, reason="failed before sending", changes={"last_error": None}
            )
        reason = f"the bot's configuration does not allow this upload: {message}. Ask the bot's operators to fix it"
        ending = Ending(S.FAILED, reason, TARGET_LABELS.get(job.target, job.target), job.upstream_job_ids, True)
        return self._finish(job, ending, job.upstream_parts)

    # -- checking ---------------------------------------------------------------------------------

    def _upload_started(self, job: Job) -> datetime:
        """When the current attempt entered `uploading` (the job's clock for backoff and timeout).
        The store keeps it on the job; a job written before it did is looked up in its history."""
        if job.upload_started_at is not None:
            return job.upload_started_at
        entries = [h for h in self.store.history_for_job(job.job_id) if h.to_state is S.UPLOADING]
        return entries[-1].at if entries else job.created_at

    def _check_status(
        self, job: Job, table: TableConfig, client: BigPandaClient | DengageClient, parts: tuple[UpstreamPart, ...]
    ) -> Step:
        last = parts[-1]
        started = self._upload_started(job)
        now = self._now()
        deadline = started + timedelta(seconds=self.settings.job_timeout_seconds)
        try:
            status = client.job_status(last.upstream_job_id)
        except UpstreamError as exc:
            if now >= deadline:
                return self._time_out(job, table, parts, started, exc.message)
            return self._later_after_error(job, parts, exc.message)
        self.store.renew_table_gate(self._gate_key(table), job.job_id, lease_seconds=self.settings.gate_lease_seconds)
        if status.state == "done":
            parts = (*parts[:-1], replace(last, status=DONE))
            if last.index < last.count:
                self.notifier.progress(
                    job,
                    f"Part {last.index} of {last.count} applied; sending part {last.index + 1} when the table allows…",
                )
                return self._send_next(job, table, client, parts)
            return self._finish(job, self._ending(job, table, S.DONE, None), parts)
        if status.state == "failed":
            return self._fail_part(
                job,
                table,
                parts,
                index=last.index,
                count=last.count,
                status=FAILED,
                reason=status.reason or f"{TARGET_LABELS[table.kind]} reported the job failed",
            )
        if now >= deadline:
            return self._time_out(job, table, parts, started, status.reason)
        age = (now - started).total_seconds()
        wait = min(
            self.settings.max_check_seconds, max(self.settings.first_check_seconds, age * self.settings.backoff_share)
        )
        self.store.update(
            job,
            changes={"last_error": status.reason} if status.reason != job.last_error else None,
            next_check_at=min(now + timedelta(seconds=wait), deadline),
            release_lease=True,
        )
        return "running"

    def _time_out(
        self, job: Job, table: TableConfig, parts: tuple[UpstreamPart, ...], started: datetime, detail: str | None
    ) -> Step:
        label = TARGET_LABELS[table.kind]
        minutes = self.settings.job_timeout_seconds / 60
        ids = ", ".join(f"`{p.upstream_job_id}`" for p in parts if p.upstream_job_id != NO_JOB_ID)
        last = parts[-1]
        where = f"{_part_label(last.index, last.count)} " if last.count > 1 else ""
        reason = (
            f"{label} did not finish {where}within {minutes:g} minutes of the upload start "
            f"({started:%H:%M} UTC). It may still finish: check job {ids} in {label}"
            + (f" (last answer: {detail})" if detail else "")
            + ", and upload again only if the table was not changed"
        )
        return self._finish(job, self._ending(job, table, S.TIMED_OUT, reason), parts)

    # -- front-end jobs left behind ---------------------------------------------------------------

    def _end_left_behind(self, seen: Job) -> Step:
        """End a `received`/`validating` job whose intake died, or an approval wait past its
        deadline: `cancelled`, with one notice (module docstring, "No job is left...")."""
        now = self._now()
        if seen.state in INTAKE_STATES and not intake_stranded(seen, now, self.settings.intake_lease_seconds):
            return "busy" if seen.lease_active(now) else "skipped"
        try:
            job = self.store.acquire_lease(seen, self.worker_id, self.settings.notice_lease_seconds)
        except (LeaseHeld, JobConflict):
            return "busy"
        # Only the write we just made may lie between `seen` (judged above) and `job`: anything
        # else (the intake renewed or moved on, an Approve) means `seen` is no longer the truth.
        if job.version != seen.version + 1 or job.next_check_at is None or job.next_check_at > self._now():
            self.store.release_lease(job, self.worker_id)
            return "busy"

        def cancel() -> Step:
            ending = Ending(S.CANCELLED, self._left_behind_reason(job), self._target_label(job), (), retryable=False)
            return self._finish(job, ending, job.upstream_parts)

        return self._guarded(job, cancel)

    def _target_label(self, job: Job) -> str:
        try:
            return TARGET_LABELS[self.tables.table(job.table).kind]
        except ConfigError:
            return TARGET_LABELS.get(job.target, job.target)

    def _left_behind_reason(self, job: Job) -> str:
        file = f"`{job.file_name}`"
        if job.state in INTAKE_STATES:
            log.warning("job %s: its intake stopped in %s; ending it", job.job_id, job.state)
            return (
                f"The check of {file} stopped before it finished (the bot was interrupted), so nothing was "
                "uploaded. Share the file again."
            )
        entered = [h for h in self.store.history_for_job(job.job_id) if h.to_state is S.AWAITING_APPROVAL]
        waited = self.settings.approval_timeout_seconds
        if entered and job.next_check_at is not None:
            waited = max((job.next_check_at - entered[-1].at).total_seconds(), 0.0)
        within = f"within {_duration(waited)}"
        if entered and entered[-1].reason.startswith("valid; waiting for confirmation"):
            return (
                f"<@{job.requested_by}> did not confirm the upload of {file} {within}, so nothing was "
                "uploaded. Share the file again to start over."
            )
        return (
            f"No approver answered {within}, so nothing was uploaded. Share the file again, "
            f"or ask {self._approvers(job)} to look at it when you do."
        )

    def _approvers(self, job: Job) -> str:
        try:
            ids = self.tables.table(job.table).extra.get("approvers", [])
        except ConfigError:
            ids = []
        if isinstance(ids, str):
            ids = [ids]
        found = (
            [_mention(str(i)) for i in ids if isinstance(i, str) and i and i != "*"] if isinstance(ids, list) else []
        )
        return ", ".join(found) if found else f"the approvers of `{job.table}`"

    # -- endings ----------------------------------------------------------------------------------

    def _ending(self, job: Job, table: TableConfig, state: JobState, reason: str | None) -> Ending:
        ids = tuple(p.upstream_job_id for p in job.upstream_parts if p.upstream_job_id != NO_JOB_ID)
        return Ending(
            state=state,
            reason=reason,
            target_label=TARGET_LABELS[table.kind],
            upstream_job_ids=ids,
            retryable=state is S.FAILED,
        )

    def _finish(self, job: Job, ending: Ending, parts: tuple[UpstreamPart, ...]) -> Step:
        """End the job and claim its notice in one write, post it, confirm it (module docstring,
        "Exactly-once notice")."""
        summary = (ending.reason or ending.state.value)[:300]
        now = self._now()
        claimed = self.store.transition(
            job,
            ending.state,
            actor=self.worker_id,
            reason=summary,
            changes={
                "last_error": ending.reason,
                "upstream_parts": parts,
                "notified": False,
                "notice_claimed_by": self.worker_id,
                "notice_claimed_at": now,
            },
            # Due again when the lease runs out: if this worker dies before confirming, the next looks.
            next_check_at=max(job.lease_expires_at or now, now),
        )
        try:
            table = self.tables.table(job.table)
            self.store.release_table_gate(self._gate_key(table), job.job_id)
        except (ConfigError, StoreError):
            pass  # an ended holder's gate is taken over by the next job anyway
        ids = tuple(p.upstream_job_id for p in parts if p.upstream_job_id != NO_JOB_ID)
        return self._post_notice(claimed, replace(ending, upstream_job_ids=ids), look_first=False)

    def _notice_again(self, job: Job) -> Step:
        """A pending notice found due: an earlier attempt failed or its worker died. Claim it
        again, look in the thread first, post only if it is not there."""
        ending = self._recorded_ending(job)
        claimed = self.store.update(
            job,
            changes={"notice_claimed_by": self.worker_id, "notice_claimed_at": self._now()},
            next_check_at=max(job.lease_expires_at or self._now(), self._now()),
        )
        return self._post_notice(claimed, ending, look_first=job.notice_claimed_by is not None)

    def _recorded_ending(self, job: Job) -> Ending:
        """The ending of an ended job, as recorded by the worker that decided it."""
        try:
            label = TARGET_LABELS[self.tables.table(job.table).kind]
        except ConfigError:
            label = job.target
        ids = tuple(p.upstream_job_id for p in job.upstream_parts if p.upstream_job_id != NO_JOB_ID)
        return Ending(
            state=job.state,
            reason=job.last_error,
            target_label=label,
            upstream_job_ids=ids,
            retryable=job.state is S.FAILED,
        )

    def _post_notice(self, claimed: Job, ending: Ending, *, look_first: bool) -> Step:
        try:
            if look_first and self.notifier.ending_posted(claimed, ending):
                log.info(
                    "job %s: the %s notice is already in the thread; not posted again", claimed.job_id, ending.state
                )
                self.store.update(claimed, changes={"notified": True}, release_lease=True)
                return "already_posted"
            self.notifier.ending(claimed, ending)
        except NoticeFailed as exc:
            log.warning(
                "job %s: the %s notice was not posted (%s); trying again later", claimed.job_id, ending.state, exc
            )
            self.store.update(
                claimed, next_check_at=self._later(self.settings.notice_retry_seconds), release_lease=True
            )
            return "notice_retry"
        self.store.update(claimed, changes={"notified": True}, release_lease=True)
        return _step_for(ending.state)


def _step_for(state: JobState) -> Step:
    if state is S.DONE:
        return "done"
    if state is S.TIMED_OUT:
        return "timed_out"
    if state is S.CANCELLED:
        return "cancelled"
    return "failed"


def _mention(slack_id: str) -> str:
    """A Slack mention of a user or a user group (`S...`), as the front end writes them."""
    return f"<!subteam^{slack_id}>" if slack_id.startswith("S") else f"<@{slack_id}>"


def _duration(seconds: float) -> str:
    """24 h, 90 min, 45 s: the wording of a wait in a notice."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"
