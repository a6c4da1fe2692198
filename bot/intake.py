"""Intake: a new upload from a Slack file or an S3 object, up to the point the poller takes over.

    open(upload)  → the job, created once per delivery (file id + channel, or the command's
                    trigger): a retried Slack event or a second delivery path finds the same job
    run(job, ...) → received → validating → stage the file → validate (the repaired file goes to
                    staging as `normalized.csv`) → change preview (BigPanda) →
                    `invalid` | `awaiting_approval` (approver, or a Confirm of many removals) | `queued`
    approve / reject / cancel: the buttons' state changes, each one conditional write

Nothing here imports Slack: results are values (`IntakeResult`) that the Slack layer renders, and
permissions are decided by the caller (which passes `approval`/`max_removed_share` in).

A job is never left behind: `run` holds the job's lease (`intake:<id>`, `IntakeSettings.
lease_seconds`, longer than Lambda's 15 minutes) while it works, renews it between steps, and
gives the job a next check at the lease's expiry; a job waiting for approval gets its deadline as
its next check. If this process dies, the poller finds the job due once the lease or deadline
has passed and ends it with a notice (`bot.service.left_behind`).

Its settings (`TABLEBOT_INTAKE_LEASE_SECONDS`, `TABLEBOT_APPROVAL_TIMEOUT_SECONDS`) are in `bot.settings`.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx

from bot.config import TableConfig, TablesFile
from bot.errors import (
    ConfigError,
    InvalidTransition,
    JobConflict,
    Refused,
    SourceError,
    StagingError,
    StoreError,
    UpstreamError,
)
from bot.limits import NO_CAPS, InFlightCaps, check_in_flight
from bot.observability import in_job_context, record_check
from bot.preview import ChangePreview, diff_versions
from bot.schema import TableSchema
from bot.settings import Settings
from bot.sources import SourceSettings, StagedFile, stage_s3_object, stage_slack_file
from bot.staging import Staging
from bot.staging.layout import job_prefix, normalized_key, original_key, previous_version
from bot.store import Job, JobChanges, JobState, JobStore, NewJob
from bot.store.model import utc_now
from bot.targets import identity_json, replaces_table
from bot.validation import Report, ValidationOptions, summary_line, validate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
S = JobState
ACTOR = "tablebot"

# States a Cancel may end: nothing has been sent upstream yet.
CANCELLABLE = frozenset({S.RECEIVED, S.VALIDATING, S.AWAITING_APPROVAL, S.QUEUED})

SchemaFor = Callable[[TableConfig], TableSchema]
Progress = Callable[[Job, str], None]
# Called once a file is valid, before the job moves on (to `queued` the poller may take it at once,
# so whatever the thread should show before the upload starts is posted here).
OnValid = Callable[[Job, Report, "ChangePreview | None", bool], None]


@dataclass(frozen=True)
class IntakeSettings:
    # Longer than the longest intake (Lambda stops a listener at 15 minutes): the poller ends a
    # job whose intake lease ran out, so it must never run out under a live intake.
    lease_seconds: float = 960.0
    approval_timeout_seconds: float = 86400.0  # awaiting approval/confirmation, then cancelled
    caps: InFlightCaps = NO_CAPS  # uploads in flight per person / per table (`bot.limits`)

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeSettings:
        return cls(
            lease_seconds=settings.intake_lease_seconds,
            approval_timeout_seconds=settings.approval_timeout_seconds,
            caps=InFlightCaps.from_settings(settings),
        )


@dataclass(frozen=True)
class SlackFileRef:
    file_id: str
    url: str  # url_private_download
    name: str
    size: int | None = None


@dataclass(frozen=True)
class S3Ref:
    uri: str

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1] or self.uri


@dataclass(frozen=True)
class StagedRef:
    """A file already in staging: a table's earlier version, uploaded again by a restore."""

    key: str
    name: str
    from_job_id: str


FileRef = SlackFileRef | S3Ref | StagedRef


@dataclass(frozen=True)
class Upload:
    table: str
    requested_by: str
    file: FileRef
    delivery_key: str  # one job per key: "file:<id>:<channel>" or "command:<trigger id>"
    channel_id: str | None = None
    thread_ts: str | None = None


Kind = Literal["invalid", "unreadable", "awaiting_approval", "awaiting_confirmation", "queued", "stopped", "skipped"]


def source_of(file: FileRef) -> str:
    """What a job records as its source: the Slack file id, the S3 URI, or `restore:<job id>`."""
    if isinstance(file, SlackFileRef):
        return file.file_id
    if isinstance(file, StagedRef):
        return f"restore:{file.from_job_id}"
    return file.uri


@dataclass(frozen=True)
class IntakeResult:
    """How intake left the job. `message` says what happened when there is no report."""

    kind: Kind
    job: Job
    report: Report | None = None
    preview: ChangePreview | None = None
    message: str | None = None


@dataclass(frozen=True)
class DryRun:
    file_name: str
    report: Report | None = None
    message: str | None = None  # the file could not be read or checked


class Fetcher:
    """Streams a Slack file or an S3 object into staging (see `bot.sources`)."""

    def __init__(
        self,
        http: httpx.Client,
        bot_token: str,
        settings: SourceSettings,
        s3_client: S3Client | None = None,
    ) -> None:
        self.http = http
        self.bot_token = bot_token
        self.settings = settings
        self.s3_client = s3_client

    def stage(self, staging: Staging, file: FileRef, key: str) -> StagedFile:
        if isinstance(file, SlackFileRef):
            return stage_slack_file(
                self.http,
                staging,
                url=file.url,
                token=self.bot_token,
                key=key,
                file_name=file.name,
                declared_size=file.size,
                settings=self.settings,
            )
        if isinstance(file, StagedRef):
            return self._copy_staged(staging, file, key)
        if self.s3_client is None:
            raise SourceError(
                "not_allowed", "Reading files from S3 is not set up for this bot. Share the CSV in Slack."
            )
        return stage_s3_object(self.s3_client, staging, uri=file.uri, key=key, settings=self.settings)

    @staticmethod
    def _copy_staged(staging: Staging, file: StagedRef, key: str) -> StagedFile:
        try:
            with staging.open(file.key) as source:
                put = staging.put(key, source)
        except StagingError as exc:
            raise SourceError(
                "not_found", f"The earlier version (job {file.from_job_id}) is no longer in staging ({exc})."
            ) from None
        return StagedFile(key=put.key, size=put.size, sha256=put.sha256, file_name=file.name)


class Intake:
    def __init__(
        self,
        store: JobStore,
        staging: Staging,
        tables: TablesFile,
        schema_for: SchemaFor,
        fetcher: Fetcher,
        *,
        options: ValidationOptions | None = None,
        work_dir: Path | None = None,
        settings: IntakeSettings | None = None,
    ) -> None:
        self.store = store
        self.staging = staging
        self.tables = tables
        self.schema_for = schema_for
        self.fetcher = fetcher
        self.options = options or ValidationOptions(max_bytes=fetcher.settings.max_bytes)
        self.work_dir = work_dir
        self.settings = settings or IntakeSettings()

    # -- a new upload ----------------------------------------------------------------------------

    def open(self, upload: Upload) -> tuple[Job, bool]:
        """The job for this delivery, created once: `(job, False)` when it already existed.
        `TooManyInFlight` when the person or the table has as many uploads in flight as allowed."""
        table = self.tables.table(upload.table)
        check_in_flight(
            self.store,
            self.settings.caps,
            user=upload.requested_by,
            table=table.alias,
            delivery_key=upload.delivery_key,
        )
        new = NewJob(
            table=table.alias,
            target=table.target.name,
            requested_by=upload.requested_by,
            source=source_of(upload.file),
            file_name=upload.file.name,
            channel_id=upload.channel_id,
            thread_ts=upload.thread_ts,
            size_bytes=upload.file.size if isinstance(upload.file, SlackFileRef) else None,
            # Not due before an intake could have finished: `run` takes the lease well before then,
            # and a job whose `run` never starts is ended by the poller after this.
            next_check_at=utc_now() + timedelta(seconds=self.settings.lease_seconds),
        )
        return self.store.create_job(upload.delivery_key, new)

    def attach_status(self, job: Job, *, thread_ts: str | None, status_ts: str | None) -> Job:
        """Record where the job's thread and status message are (for the poller's notices)."""
        return self.store.update(job, changes={"thread_ts": thread_ts, "status_ts": status_ts})

    @in_job_context
    def run(
        self,
        job: Job,
        file: FileRef,
        *,
        approval: bool = False,
        max_removed_share: float = 0.2,
        progress: Progress = lambda job, text: None,
        on_valid: OnValid = lambda job, report, preview, waits: None,
    ) -> IntakeResult:
        """Stage, validate and decide. Never raises for the upload's own trouble: a file that cannot
        be read or checked ends the job with a message that says what to do."""
        if job.state is not S.RECEIVED:
            return IntakeResult("skipped", job, message=f"job {job.job_id} is already {job.state}")
        owner = f"intake:{uuid.uuid4().hex}"
        try:
            job = self.store.acquire_lease(job, owner, self.settings.lease_seconds)
            if job.state is not S.RECEIVED:
                self.store.release_lease(job, owner)
                return IntakeResult("skipped", job, message=f"job {job.job_id} is already {job.state}")
            job = self.store.transition(
                job, S.VALIDATING, actor=ACTOR, reason="checking the file", next_check_at=job.lease_expires_at
            )
        except JobConflict as exc:  # another intake holds it (a re-invoked listener), or it ended
            return IntakeResult("skipped", exc.current, message=f"job {job.job_id} is being checked or has ended")
        try:
            return self._run(job, file, approval, max_removed_share, owner, progress=progress, on_valid=on_valid)
        except JobConflict as exc:  # cancelled meanwhile (Cancel button): leave it as it is now
            return IntakeResult("skipped", exc.current, message=f"job {job.job_id} changed meanwhile")
        except Exception:
            log.exception("job %s: intake failed", job.job_id)
            return self._stop(
                job,
                "Something went wrong on the bot's side while checking the file, so nothing was uploaded. "
                "Share the file again; if this repeats, tell the bot's admins (they will find the details "
                f"in the logs under job {job.job_id}).",
            )

    def _heartbeat(self, job: Job, owner: str) -> Job:
        """Renew the intake's lease before a long step. `LeaseHeld` (a `JobConflict`) if it ran out
        and the poller took the job over: then this intake stops."""
        return self.store.renew_lease(job, owner, self.settings.lease_seconds)

    def _run(
        self,
        job: Job,
        file: FileRef,
        approval: bool,
        max_share: float,
        owner: str,
        *,
        progress: Progress,
        on_valid: OnValid,
    ) -> IntakeResult:
        table = self.tables.table(job.table)
        progress(job, f"Reading `{file.name}`…")
        try:
            staged = self.fetcher.stage(self.staging, file, original_key(table.alias, job.job_id))
        except SourceError as exc:
            job = self.store.transition(
                job, S.INVALID, actor=ACTOR, reason=f"file not read: {exc.code}", changes={"last_error": exc.message}
            )
            return IntakeResult("unreadable", job, message=exc.message)
        job = self.store.update(
            job, changes={"size_bytes": staged.size, "sha256": staged.sha256, "file_name": staged.file_name}
        )
        try:
            schema = self.schema_for(table)
        except (UpstreamError, ConfigError) as exc:
            detail = exc.message
            return self._stop(
                job,
                f"The bot could not read the columns of `{table.alias}` from {table.target.name} ({detail}), "
                "so the file was not checked or uploaded. Try again in a few minutes (share the file again).",
            )
        progress(job, f"Validating `{staged.file_name}` against `{table.alias}`…")
        job = self._heartbeat(job, owner)
        with tempfile.TemporaryDirectory(prefix="tablebot-intake-", dir=self.work_dir) as tmp:
            normalized = Path(tmp) / "normalized.csv"
            checking = time.monotonic()
            with self.staging.open(staged.key) as source, normalized.open("wb") as out:
                report = validate(source, schema, self.options, out)
            record_check(report.valid, time.monotonic() - checking)
            if not report.valid:
                job = self.store.transition(
                    job,
                    S.INVALID,
                    actor=ACTOR,
                    reason=summary_line(report)[:300],
                    changes={"row_count": report.rows, "last_error": summary_line(report, staged.file_name)},
                )
                return IntakeResult("invalid", job, report=report)
            key = normalized_key(table.alias, job.job_id)
            with normalized.open("rb") as fh:
                self.staging.put(key, fh)
            # What the file was checked against: the sender refuses anything else (bot.targets.identity).
            identity = identity_json(table, schema)
            job = self.store.update(
                job, changes={"staging_key": key, "row_count": report.rows, "target_identity": identity}
            )
            preview = None
            if replaces_table(table.kind):  # a change preview only means something for a whole table
                progress(job, "Comparing with the table's last version…")
                job = self._heartbeat(job, owner)
                preview = self._preview(table, schema, job, normalized)
        many_removed = preview is not None and preview.old_rows > 0 and preview.removed_share > max_share
        on_valid(job, report, preview, approval or many_removed)
        if approval or many_removed:
            removed = f"confirmation: {preview.removed if preview else 0:,} rows removed"
            why = " and ".join(w for w, needed in (("approval", approval), (removed, many_removed)) if needed)
            # The deadline is the job's next check: the poller cancels it then if nobody answered.
            deadline = utc_now() + timedelta(seconds=self.settings.approval_timeout_seconds)
            job = self.store.transition(
                job,
                S.AWAITING_APPROVAL,
                actor=ACTOR,
                reason=f"valid; waiting for {why}",
                changes={"needs_approval": approval, "needs_confirmation": many_removed},
                next_check_at=deadline,
                release_lease=True,
            )
            kind: Kind = "awaiting_approval" if approval else "awaiting_confirmation"
            return IntakeResult(kind, job, report=report, preview=preview)
        job = self.store.transition(
            job, S.QUEUED, actor=ACTOR, reason=f"valid: {report.rows:,} rows", release_lease=True
        )
        return IntakeResult("queued", job, report=report, preview=preview)

    def _preview(self, table: TableConfig, schema: TableSchema, job: Job, new_file: Path) -> ChangePreview | None:
        def was_done(job_id: str) -> bool:
            try:
                return self.store.get_job(job_id).state is S.DONE
            except StoreError:
                return False

        previous = previous_version(self.staging, table.alias, job.job_id, accept=was_done)
        if previous is None:
            return None
        keys = [c.name for c in schema.columns if c.role == "query_tag"]
        try:
            with self.staging.open(previous.key) as old, new_file.open("rb") as new:
                return diff_versions(
                    old,
                    new,
                    keys,
                    reopen_old=lambda: self.staging.open(previous.key),
                    previous_job_id=previous.job_id,
                )
        except StagingError as exc:
            log.warning("job %s: no change preview (%s)", job.job_id, exc)
            return None

    def _stop(self, job: Job, message: str) -> IntakeResult:
        try:
            current = self.store.get_job(job.job_id)
            if current.state in CANCELLABLE:
                current = self.store.transition(
                    current,
                    S.CANCELLED,
                    actor=ACTOR,
                    reason="stopped: could not be checked",
                    changes={"last_error": message},
                )
            return IntakeResult("stopped", current, message=message)
        except StoreError:
            log.exception("job %s: could not record the stop", job.job_id)
            return IntakeResult("stopped", job, message=message)

    # -- a restore -------------------------------------------------------------------------------

    def restore_source(self, table_alias: str) -> StagedRef:
        """The version a restore sends: the newest earlier good version (the normalized file of the
        `done` job before the latest `done` one). `Refused` says why there is none, or why this
        table cannot be restored (a D·engage table is upserted, not replaced)."""
        table = self.tables.table(table_alias)
        if table.kind != "bigpanda":
            raise Refused(
                f"Table {table.alias} is a D·engage table: uploads are upserted into it, so sending an old file "
                "again would not take the table back (rows added since would stay, and a table without a "
                "primary key would get the old rows a second time). Fix its rows with a new upload instead."
            )
        done = [j for j in self.store.recent_jobs(table.alias, limit=100) if j.state is S.DONE]
        if not done:
            raise Refused(f"Table {table.alias} has no successful upload through the bot to go back from.")

        def was_done(job_id: str) -> bool:
            try:
                return self.store.get_job(job_id).state is S.DONE
            except StoreError:
                return False

        version = previous_version(self.staging, table.alias, done[0].job_id, accept=was_done)
        if version is None:
            raise Refused(
                f"Table {table.alias} has no earlier successful version still kept (files are kept for a limited "
                "time): upload the file you want instead."
            )
        source = self.store.get_job(version.job_id)
        return StagedRef(key=version.key, name=source.file_name, from_job_id=version.job_id)

    # -- a dry run -------------------------------------------------------------------------------

    def dry_run(self, table_alias: str, file: FileRef) -> DryRun:
        """Validate without a job and without keeping the file."""
        table = self.tables.table(table_alias)
        scratch = f"{job_prefix(table.alias, 'dry-' + secrets.token_hex(6))}{'original.csv'}"
        try:
            staged = self.fetcher.stage(self.staging, file, scratch)
        except SourceError as exc:
            return DryRun(file.name, message=exc.message)
        try:
            schema = self.schema_for(table)
            with self.staging.open(staged.key) as source:
                return DryRun(staged.file_name, report=validate(source, schema, self.options))
        except (UpstreamError, ConfigError) as exc:
            detail = exc.message
            return DryRun(file.name, message=f"The bot could not read the columns of `{table.alias}` ({detail}).")
        finally:
            self.staging.delete(staged.key)

    # -- buttons ---------------------------------------------------------------------------------

    def _job(self, job_id: str) -> Job:
        try:
            return self.store.get_job(job_id)
        except StoreError:
            raise Refused(f"There is no upload `{job_id}`.") from None

    def approve(self, job_id: str, actor: str) -> Job:
        """An approver's Approve (the caller checked who may): `queued`, unless a large removal
        still waits for its Confirm."""
        return self._decide(job_id, actor, "approved")

    def confirm(self, job_id: str, actor: str) -> Job:
        """The Confirm of a large removal (the requester or an approver): `queued`, unless the
        table's approval is still to come. Never stands in for an approval."""
        return self._decide(job_id, actor, "confirmed")

    def _decide(self, job_id: str, actor: str, how: Literal["approved", "confirmed"]) -> Job:
        job = self._job(job_id)
        for _ in range(3):  # again if only a lease moved the version (the poller at the deadline)
            if job.state is not S.AWAITING_APPROVAL:
                raise Refused(_already(job))
            if how == "approved" and not job.needs_approval:
                raise Refused(f"Upload `{job.job_id}` needs no approval; it waits for a Confirm of its removals.")
            if how == "confirmed" and not job.needs_confirmation:
                raise Refused(f"Upload `{job.job_id}` has nothing to confirm; it waits for an approver.")
            if (how == "approved" and job.approver) or (how == "confirmed" and job.confirmed_by):
                raise Refused(f"Upload `{job.job_id}` was {how} already; it waits for the other decision.")
            changes: JobChanges = {"approver": actor} if how == "approved" else {"confirmed_by": actor}
            approved = how == "approved" or bool(job.approver) or not job.needs_approval
            confirmed = how == "confirmed" or bool(job.confirmed_by) or not job.needs_confirmation
            try:
                if not (approved and confirmed):  # one of the two: recorded, the deadline kept
                    return self.store.transition(
                        job,
                        S.AWAITING_APPROVAL,
                        actor=actor,
                        reason=f"{how} by {actor}; waiting for the {'confirmation' if approved else 'approval'}",
                        changes=changes,
                        next_check_at=job.next_check_at,
                    )
                # The lease goes too: a poller that took it to end the wait has lost the job.
                return self.store.transition(
                    job, S.QUEUED, actor=actor, reason=f"{how} by {actor}", changes=changes, release_lease=True
                )
            except JobConflict as exc:
                job = exc.current
        raise Refused(_already(job))

    def reject(self, job_id: str, actor: str) -> Job:
        job = self._job(job_id)
        if job.state is not S.AWAITING_APPROVAL:
            raise Refused(_already(job))
        try:
            return self.store.transition(
                job,
                S.CANCELLED,
                actor=actor,
                reason=f"rejected by {actor}",
                changes={"approver": actor, "last_error": f"rejected by {actor}"},
            )
        except JobConflict as exc:
            raise Refused(_already(exc.current)) from None

    def cancel(self, job_id: str, actor: str) -> Job:
        job = self._job(job_id)
        if job.state not in CANCELLABLE:
            raise Refused(_already(job) + " Only an upload not yet sent upstream can be cancelled.")
        try:
            return self.store.transition(
                job,
                S.CANCELLED,
                actor=actor,
                reason=f"cancelled by {actor}",
                changes={"last_error": f"cancelled by {actor}"},
            )
        except (JobConflict, InvalidTransition) as exc:
            current = exc.current if isinstance(exc, JobConflict) else self._job(job_id)
            raise Refused(_already(current) + " Only an upload not yet sent upstream can be cancelled.") from None


_STATE_WORDS = {
    S.RECEIVED: "just received",
    S.VALIDATING: "being checked",
    S.INVALID: "invalid (not uploaded)",
    S.AWAITING_APPROVAL: "waiting for approval",
    S.QUEUED: "queued for upload",
    S.UPLOADING: "being uploaded",
    S.SUBMITTED: "uploaded; the upstream job is running",
    S.DONE: "done",
    S.FAILED: "failed",
    S.TIMED_OUT: "without an ending in time",
    S.CANCELLED: "cancelled",
}


def state_words(state: JobState) -> str:
    return _STATE_WORDS.get(state, str(state))


def _already(job: Job) -> str:
    who = f" (by {job.approver})" if job.approver and job.state in (S.QUEUED, S.CANCELLED) else ""
    return f"Upload `{job.job_id}` is already {state_words(job.state)}{who}."
