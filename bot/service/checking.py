"""Status checks: ask the vendor about the last part sent, until it ends or the job times out.

Checks back off with the job's age (`first_check_seconds`, then `backoff_share` of the age, at
most `max_check_seconds`) and renew the table gate. A part done sends the next part; the last
part done ends the job done; an upstream failure ends it failed; no ending within
`job_timeout_seconds` of the upload start ends it timed out.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from bot.config import TableConfig
from bot.errors import UpstreamError
from bot.service.gate import gate_key
from bot.service.notices import TARGET_LABELS, ending_for, finish
from bot.service.parts import DONE, FAILED, NO_JOB_ID, part_label
from bot.service.sending import fail_part, later_after_error, send_next
from bot.service.worker import Step, TargetClient, Worker
from bot.store import Job, JobState, UpstreamPart

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
    try:
        status = client.job_status(last.upstream_job_id)
    except UpstreamError as exc:
        if now >= deadline:
            return time_out(worker, job, table, parts, started=started, detail=exc.message)
        return later_after_error(worker, job, parts, exc.message)
    worker.store.renew_table_gate(gate_key(table), job.job_id, lease_seconds=worker.settings.gate_lease_seconds)
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
            reason=status.reason or f"{TARGET_LABELS[table.kind]} reported the job failed",
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
