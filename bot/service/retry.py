"""Retry, for the Slack front end: a failed job queued again with the same staged file; the
poller then sends it like any queued job. (A restore is not here: it is an upload of an earlier
version through the intake, `bot.intake.Intake.restore_source`, with its checks and approvals.)"""

from __future__ import annotations

from bot.errors import JobConflict, Refused
from bot.limits import check_in_flight
from bot.service.parts import DONE
from bot.service.worker import Worker
from bot.store import Job, JobState, UpstreamPart

S = JobState


def retry_job(worker: Worker, job_id: str, actor: str) -> Job:
    """The Retry button: a failed job goes back to `queued` with the same staged file. Parts
    already applied (a multi-part D·engage upload) are kept; sending resumes after them."""
    job = worker.store.get_job(job_id)
    if job.state is not S.FAILED:
        raise Refused(f"job {job_id} is {job.state}, not failed: only a failed upload can be retried")
    check_in_flight(worker.store, worker.settings.caps, user=actor, table=job.table, job_id=job.job_id)
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
