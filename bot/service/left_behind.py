"""Front-end jobs left behind: an intake that died, an approval nobody answered, ended `cancelled`.

No job is left before the poller's states
-----------------------------------------
The front end (`bot.intake`) works on `received`/`validating` jobs under its own lease
(`intake:<id>`, longer than the longest intake) and gives them a next check at that lease's
expiry. If it dies mid-way (Lambda timeout, crash, deploy), the lease runs out and the job is
found due here: it is ended `cancelled` ("the check stopped before it finished; nothing was
uploaded; share the file again") through the same claim-post-confirm as every other ending
(`bot.service.notices`). A job in those states that never had a lease (its intake never started)
is ended once it has not changed for `intake_lease_seconds`. A job whose intake still holds its
lease is never touched: the due index skips it and acquiring the lease is refused. An
`awaiting_approval` job carries its approval deadline as its next check (set by the intake);
found due, it is cancelled with a notice naming who could have approved. Taking the lease bumps
the job's version, so an intake or an Approve that writes after it loses its conditional write,
and one that wrote before makes the poller's write lose: either the front end or the poller ends
the job, never both.
"""

from __future__ import annotations

import logging

from bot.errors import ConfigError, JobConflict, LeaseHeld
from bot.service.due import INTAKE_STATES, intake_stranded
from bot.service.notices import TARGET_LABELS, Ending, finish
from bot.service.worker import Step, Worker
from bot.store import Job, JobState

log = logging.getLogger(__name__)

S = JobState


def end_left_behind(worker: Worker, seen: Job) -> Step:
    """End a `received`/`validating` job whose intake died, or an approval wait past its
    deadline: `cancelled`, with one notice (module docstring)."""
    now = worker.now()
    if seen.state in INTAKE_STATES and not intake_stranded(seen, now, worker.settings.intake_lease_seconds):
        return "busy" if seen.lease_active(now) else "skipped"
    try:
        job = worker.store.acquire_lease(seen, worker.worker_id, worker.settings.notice_lease_seconds)
    except (LeaseHeld, JobConflict):
        return "busy"
    # Only the write we just made may lie between `seen` (judged above) and `job`: anything
    # else (the intake renewed or moved on, an Approve) means `seen` is no longer the truth.
    if job.version != seen.version + 1 or job.next_check_at is None or job.next_check_at > worker.now():
        worker.store.release_lease(job, worker.worker_id)
        return "busy"

    def cancel() -> Step:
        ending = Ending(S.CANCELLED, left_behind_reason(worker, job), target_label(worker, job), (), retryable=False)
        return finish(worker, job, ending, job.upstream_parts)

    return worker.guarded(job, cancel)


def target_label(worker: Worker, job: Job) -> str:
    """The job's target as told to users, from its table (or the job, if the table is gone)."""
    try:
        return TARGET_LABELS[worker.tables.table(job.table).kind]
    except ConfigError:
        return TARGET_LABELS.get(job.target, job.target)


def left_behind_reason(worker: Worker, job: Job) -> str:
    """The notice's text: what stopped, that nothing was uploaded, what to do. Plain text: the
    Slack notifier renders it (escaped) and adds who could have approved, from the table."""
    file = f"`{job.file_name}`"
    if job.state in INTAKE_STATES:
        log.warning("job %s: its intake stopped in %s; ending it", job.job_id, job.state)
        return (
            f"The check of {file} stopped before it finished (the bot was interrupted), so nothing was "
            "uploaded. Share the file again."
        )
    entered = [h for h in worker.store.history_for_job(job.job_id) if h.to_state is S.AWAITING_APPROVAL]
    waited = worker.settings.approval_timeout_seconds
    if entered and job.next_check_at is not None:
        waited = max((job.next_check_at - entered[-1].at).total_seconds(), 0.0)
    within = f"within {duration_text(waited)}"
    # Jobs recorded before approval and confirmation were kept apart say it in their history.
    legacy_confirmation = bool(entered) and entered[-1].reason.startswith("valid; waiting for confirmation")
    waits_for_approval = job.needs_approval or not (job.needs_confirmation or legacy_confirmation)
    if waits_for_approval and not job.approver:
        return (
            f"No approver answered {within}, so nothing was uploaded. Share the file again, "
            f"or ask the approvers of `{job.table}` to look at it when you do."
        )
    return (
        f"The removals of {file} were not confirmed {within}, so nothing was uploaded. "
        "Share the file again to start over."
    )


def duration_text(seconds: float) -> str:
    """24 h, 1.5 h, 10 min, 45 s: the wording of a wait in a notice."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"
