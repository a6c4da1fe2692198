"""Retry and restore, for the Slack front end: a failed job queued again, or a table's previous
successful version queued as a new job. The poller then sends them like any queued job."""

from __future__ import annotations

from bot.errors import JobConflict, Refused, StoreError
from bot.service.parts import DONE
from bot.service.worker import Worker
from bot.staging.layout import previous_version
from bot.store import Job, JobState, NewJob, UpstreamPart

S = JobState


def retry_job(worker: Worker, job_id: str, actor: str) -> Job:
    """The Retry button: a failed job goes back to `queued` with the same staged file. Parts
    already applied (a multi-part D·engage upload) are kept; sending resumes after them."""
    job = worker.store.get_job(job_id)
    if job.state is not S.FAILED:
        raise Refused(f"job {job_id} is {job.state}, not failed: only a failed upload can be retried")
    keep: list[UpstreamPart] = []
    for part in sorted(job.upstream_parts, key=lambda p: p.index):
        if part.status != DONE or part.index != len(keep) + 1:
            break
        keep.append(part)
    try:
        return worker.store.transition(
            job,
            S.QUEUED,
            actor=actor,
            reason=f"Retry by {actor}",
            changes={"upstream_parts": tuple(keep), "last_error": None},
        )
    except JobConflict as exc:
        raise Refused(f"job {job_id} was changed meanwhile (now {exc.current.state}); it was not retried") from None


def restore_previous(
    worker: Worker, table: str, actor: str, *, channel_id: str | None = None, thread_ts: str | None = None
) -> Job:
    """Queue an upload of the table's previous successful version (the normalized file of the
    newest `done` job before the latest `done` one). Raises Refused when there is none."""
    worker.tables.table(table)  # ConfigError for an unknown table
    done_jobs = [j for j in worker.store.recent_jobs(table, limit=100) if j.state is S.DONE]
    if not done_jobs:
        raise Refused(f"table {table} has no successful upload to go back from")
    current = done_jobs[0]

    def was_done(job_id: str) -> bool:
        try:
            return worker.store.get_job(job_id).state is S.DONE
        except StoreError:
            return False

    version = previous_version(worker.staging, table, current.job_id, accept=was_done)
    if version is None:
        raise Refused(f"table {table} has no earlier successful version still in staging")
    source = worker.store.get_job(version.job_id)
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
    job, _ = worker.store.create_job(f"restore:{table}:{current.job_id}:{version.job_id}", new)
    if job.state is S.RECEIVED:
        job = worker.store.transition(job, S.VALIDATING, actor=actor, reason=f"restore {version.job_id}")
    if job.state is S.VALIDATING:
        job = worker.store.transition(
            job, S.QUEUED, actor=actor, reason=f"restore of job {version.job_id}: validated when first uploaded"
        )
    return job
