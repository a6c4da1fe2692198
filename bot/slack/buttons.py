"""The buttons on a job: Approve, Reject, Confirm, Cancel, Retry. One function each; every one
runs behind the guard, which checks who pressed it (and answers a click once).

Approve and Confirm are separate: Approve is an approver's (never the requester's), Confirm is
the requester's or an approver's and only accepts a large removal. A job that needs both waits
for both; each is recorded on the job and in its history.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.slack import render
from bot.slack.guard import Request
from bot.slack.uploads import announce
from bot.store import Job, JobState, StoreError

S = JobState


def _without_icon(note: str) -> str:
    return note.split(" ", 1)[1] if note.startswith(":") else note


def _job(req: Request) -> Job | None:
    job_id = str(req.body["actions"][0]["value"])
    try:
        job = req.deps.store.get_job(job_id)
    except StoreError:
        req.tell(f"There is no upload {render.code(job_id)} any more.")
        return None
    return job


def _decided(req: Request, note: str) -> None:
    """The decision message loses its buttons and says who decided."""
    message = req.body.get("message") or {}
    if message.get("ts"):
        req.replies.edit(req.channel, message["ts"], render.decided(message.get("blocks") or [], note))


def _after_decision(req: Request, job: Job, note: str) -> None:
    _decided(req, note)
    if job.state is S.AWAITING_APPROVAL:  # one of two decisions: ask again for the other
        approvers = req.deps.tables.table(job.table).access.approvers
        req.replies.status(job, render.status(job, render.waiting_line(job, approvers), icon=":raised_hand:"))
        req.replies.post(req.channel, job.thread_ts or req.thread_ts, render.decision_request(job, approvers))
    else:
        req.replies.status(job, render.status(job, _without_icon(note), icon=":inbox_tray:"))


def approve(req: Request) -> None:
    job = _job(req)
    if job is None:
        return
    decision = req.can_approve(job.table, job.requested_by)
    if not decision:
        req.tell(f":no_entry: {decision.reason}")
        return
    job = req.deps.intake.approve(job.job_id, req.user)
    _after_decision(req, job, f":white_check_mark: Approved by {render.who(req.user)}" + _queued(job))
    if job.state is S.QUEUED:
        req.deps.service.start_upload(job.job_id)  # issue 14: the bot starts the upload


def confirm(req: Request) -> None:
    job = _job(req)
    if job is None:
        return
    decision = req.can_confirm(job.table, job.requested_by)
    if not decision:
        req.tell(f":no_entry: {decision.reason}")
        return
    job = req.deps.intake.confirm(job.job_id, req.user)
    _after_decision(req, job, f":white_check_mark: Removals confirmed by {render.who(req.user)}" + _queued(job))
    if job.state is S.QUEUED:
        req.deps.service.start_upload(job.job_id)  # issue 14: the bot starts the upload


def _queued(job: Job) -> str:
    return "; queued for upload." if job.state is S.QUEUED else "."


def reject(req: Request) -> None:
    job = _job(req)
    if job is None:
        return
    decision = req.can_approve(job.table, job.requested_by)
    if not decision:
        req.tell(f":no_entry: {decision.reason}")
        return
    job = req.deps.intake.reject(job.job_id, req.user)
    note = f":no_entry_sign: Rejected by {render.who(req.user)}; nothing was uploaded."
    _decided(req, note)
    req.replies.status(job, render.status(job, _without_icon(note), icon=":no_entry_sign:", cancellable=False))
    announce(req.deps, req.replies, job, f"rejected by {render.who(req.user)}")


def cancel(req: Request) -> None:
    job = _job(req)
    if job is None:
        return
    decision = req.can_manage(job.table, job.requested_by)
    if not decision:
        req.tell(f":no_entry: {decision.reason}")
        return
    job = req.deps.intake.cancel(job.job_id, req.user)
    note = f":no_entry_sign: Cancelled by {render.who(req.user)}; nothing was uploaded."
    req.replies.status(job, render.status(job, _without_icon(note), icon=":no_entry_sign:", cancellable=False))
    req.replies.post(req.channel, job.thread_ts or req.thread_ts, render.message(note))
    announce(req.deps, req.replies, job, f"cancelled by {render.who(req.user)}")


def retry(req: Request) -> None:
    job = _job(req)
    if job is None:
        return
    decision = req.can_manage(job.table, job.requested_by)
    if not decision:
        req.tell(f":no_entry: {decision.reason}")
        return
    job = req.deps.service.retry_job(job.job_id, req.user)
    note = f":repeat: Retry by {render.who(req.user)}: the same validated file is queued again."
    req.replies.status(job, render.status(job, f"Retry by {render.who(req.user)}; queued for upload…", icon=":repeat:"))
    req.replies.post(req.channel, job.thread_ts or req.thread_ts, render.message(note))
    req.deps.service.start_upload(job.job_id)  # issue 14: the bot starts the upload


BUTTONS: dict[str, Callable[[Request], None]] = {
    render.APPROVE_ACTION_ID: approve,
    render.REJECT_ACTION_ID: reject,
    render.CONFIRM_ACTION_ID: confirm,
    render.CANCEL_ACTION_ID: cancel,
    render.RETRY_ACTION_ID: retry,
}
