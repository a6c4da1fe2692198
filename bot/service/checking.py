"""Status checks: ask the vendor about the last part sent, until it ends or the job times out.

Checks back off with the job's age (`first_check_seconds`, then `backoff_share` of the age, at
most `max_check_seconds`) and renew the table gate. A part done sends the next part; the last
part done ends the job done; an upstream failure ends it failed; no ending within
`job_timeout_seconds` of the upload start ends it timed out.

The vendor's last status word is kept verbatim on the job (`upstream_status`). A word the bot
does not know (`bot.targets.statuses`) is logged at every read and, after the target's
`unknown_status_reads` reads in a row, told in the thread once ("BigPanda answers status X, which
the bot does not know; still checking until HH:MM UTC"). A status that cannot be read (404, 5xx,
`code != 0`, an HTML page: `status_unreadable`) is tolerated for the target's
`status_grace_seconds` from the first such read in a row (`status_unreadable_since` on the job),
then the job fails saying what was seen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta

from bot.config import TableConfig
from bot.errors import UpstreamError
from bot.observability import METRICS
from bot.service.gate import gate_key
from bot.service.notices import TARGET_LABELS, ending_for, finish
from bot.service.parts import DONE, FAILED, NO_JOB_ID, part_label
from bot.service.sending import fail_part, later_after_error, send_next
from bot.service.worker import Step, Worker
from bot.store import Job, JobState, UpstreamPart
from bot.targets.base import TargetClient

log = logging.getLogger(__name__)

S = JobState


def upload_started(worker: Worker, job: Job) -> datetime:
    """When the current attempt entered `uploading` (the job's clock for backoff and timeout).
    The store keeps it on the job; a job written before it did is looked up in its history."""
    if job.upload_started_at is not None:
        return job.upload_started_at
    entries = [h for h in worker.store.history_for_job(job.job_id) if h.to_state is S.UPLOADING]
    return entries[-1].at if entries else job.created_at


def check_status(
    worker: Worker, job: Job, table: TableConfig, client: TargetClient, parts: tuple[UpstreamPart, ...]
) -> Step:
    """One status check of the last part sent."""
    last = parts[-1]
    started = upload_started(worker, job)
    now = worker.now()
    deadline = started + timedelta(seconds=worker.settings.job_timeout_seconds)
    called = time.monotonic()
    try:
        status = client.job_status(last.upstream_job_id)
    except UpstreamError as exc:
        METRICS.add("UpstreamCallSeconds", time.monotonic() - called, Call="status")
        if now >= deadline:
            return time_out(worker, job, table, parts, started=started, detail=exc.message)
        if exc.kind == "status_unreadable":
            return unreadable(worker, job, table, client, parts, exc=exc)
        return later_after_error(worker, job, parts, exc.message, retry_after=exc.retry_after)
    METRICS.add("UpstreamCallSeconds", time.monotonic() - called, Call="status")
    job = record_status(worker, job, client, status.raw_status, known=status.known, deadline=deadline)
    worker.store.renew_table_gate(
        job.gate_key or gate_key(table), job.job_id, lease_seconds=worker.settings.gate_lease_seconds
    )
    if status.state == "done":
        parts = (*parts[:-1], replace(last, status=DONE))
        if last.index < last.count:
            worker.notifier.progress(
                job,
                f"Part {last.index} of {last.count} applied; sending part {last.index + 1} when the table allows…",
            )
            return send_next(worker, job, table, client, parts)
        return finish(worker, job, ending_for(job, table, S.DONE, None), parts)
    if status.state == "failed":
        return fail_part(
            worker,
            job,
            table,
            parts,
            index=last.index,
            count=last.count,
            status=FAILED,
            reason=status.reason or f"{client.label} reported the job failed",
        )
    if now >= deadline:
        return time_out(worker, job, table, parts, started=started, detail=status.reason)
    age = (now - started).total_seconds()
    wait = min(
        worker.settings.max_check_seconds, max(worker.settings.first_check_seconds, age * worker.settings.backoff_share)
    )
    worker.store.update(
        job,
        changes={"last_error": status.reason} if status.reason != job.last_error else None,
        next_check_at=min(now + timedelta(seconds=wait), deadline),
        release_lease=True,
    )
    return "running"


def record_status(worker: Worker, job: Job, client: TargetClient, raw: str, *, known: bool, deadline: datetime) -> Job:
    """Keep the vendor's word on the job; count and tell an unknown one (module docstring)."""
    reads = 0 if known else (job.unknown_status_reads + 1 if job.upstream_status == raw else 1)
    if not known:
        log.warning(
            "job %s: %s answers status %r, which the bot does not know (read %d)", job.job_id, client.label, raw, reads
        )
    if raw == job.upstream_status and reads == job.unknown_status_reads and job.status_unreadable_since is None:
        return job
    job = worker.store.update(
        job,
        changes={"upstream_status": raw, "unknown_status_reads": reads, "status_unreadable_since": None},
    )
    if not known and reads == client.unknown_status_reads:
        worker.notifier.progress(
            job,
            f"{client.label} answers status “{raw}”, which the bot does not know; "
            f"still checking until {deadline:%H:%M} UTC",
        )
    return job


def unreadable(
    worker: Worker,
    job: Job,
    table: TableConfig,
    client: TargetClient,
    parts: tuple[UpstreamPart, ...],
    *,
    exc: UpstreamError,
) -> Step:
    """A status read that failed transiently: tolerated for the grace period, then the job fails."""
    now = worker.now()
    since = job.status_unreadable_since or now
    waited = (now - since).total_seconds()
    if waited >= client.status_grace_seconds:
        last = parts[-1]
        reason = (
            f"the status of {client.label} job `{last.upstream_job_id}` could not be read for {waited:.0f} s "
            f"(the bot waits {client.status_grace_seconds:g} s); last answer: {exc.message}. The job may still "
            f"have run: check the table in {client.label} before uploading again"
        )
        return fail_part(worker, job, table, parts, index=last.index, count=last.count, status=FAILED, reason=reason)
    wait = min(worker.settings.error_retry_seconds, max(0.0, client.status_grace_seconds - waited))
    worker.store.update(
        job,
        changes={"upstream_parts": parts, "last_error": exc.message, "status_unreadable_since": since},
        next_check_at=worker.later(max(wait, worker.settings.first_check_seconds)),
        release_lease=True,
    )
    return "retry_later"


def time_out(
    worker: Worker,
    job: Job,
    table: TableConfig,
    parts: tuple[UpstreamPart, ...],
    *,
    started: datetime,
    detail: str | None,
) -> Step:
    """End the job timed out, naming the upstream jobs to check by hand."""
    label = TARGET_LABELS[table.kind]
    minutes = worker.settings.job_timeout_seconds / 60
    ids = ", ".join(f"`{p.upstream_job_id}`" for p in parts if p.upstream_job_id != NO_JOB_ID)
    last = parts[-1]
    where = f"{part_label(last.index, last.count)} " if last.count > 1 else ""
    reason = (
        f"{label} did not finish {where}within {minutes:g} minutes of the upload start "
        f"({started:%H:%M} UTC). It may still finish: check job {ids} in {label}"
        + (f" (last answer: {detail})" if detail else "")
        + ", and upload again only if the table was not changed"
    )
    return finish(worker, job, ending_for(job, table, S.TIMED_OUT, reason), parts)
