"""One upload in its thread: the job is created once per delivery, a status message is posted
and edited in place, the file is checked, and every outcome the intake returns is rendered.

Used by every way an upload starts: a shared file, a menu pick, `/table upload` from S3 and
`/table restore` (an earlier version from staging). Permissions were checked by the caller.
"""

from __future__ import annotations

import logging

from bot.errors import ConfigError
from bot.intake import IntakeResult, StagedRef, Upload
from bot.preview import ChangePreview
from bot.slack import render
from bot.slack.context import SLACK_ERRORS, Replies, SlackDeps
from bot.store import Job, StoreError
from bot.validation import Report, Severity

log = logging.getLogger(__name__)


def start_upload(deps: SlackDeps, replies: Replies, upload: Upload) -> IntakeResult | None:
    """Create the job (once per delivery key), post its status in the thread, check the file.
    None when the delivery's job existed already (a second pick, a repeated command)."""
    job, created = deps.intake.open(upload)
    if not created:
        log.info("delivery %s is job %s already; nothing more to do", upload.delivery_key, job.job_id)
        return None
    channel = upload.channel_id or ""
    first = render.received(job)
    if isinstance(upload.file, StagedRef):
        first = render.status(
            job,
            f"Restoring table {render.code(job.table)} to the version of job {render.code(upload.file.from_job_id)}…",
            icon=":rewind:",
        )
    status = replies.post(channel, upload.thread_ts, first)
    try:
        job = deps.intake.attach_status(job, thread_ts=upload.thread_ts, status_ts=status.get("ts"))
    except StoreError:  # cancelled in the instant between: its status message says so already
        return None
    table = deps.tables.table(job.table)
    access = table.access

    def progress(current: Job, note: str) -> None:
        replies.status(current, render.progress_note(current, note))

    def on_valid(current: Job, report: Report, preview: ChangePreview | None, waits: bool) -> None:
        # Posted before the job is queued: once queued, the poller may report at any moment.
        preview_line = render.preview_text(preview, access.max_removed_share) if table.kind == "bigpanda" else None
        replies.post(channel, upload.thread_ts, render.valid(current, report, preview_line))
        if not waits:
            label = render.TARGET_LABELS[table.kind]
            line = f"Valid ({report.rows:,} rows); queued for upload to {label}…"
            replies.status(current, render.status(current, line, icon=":inbox_tray:"))

    result = deps.intake.run(
        job,
        upload.file,
        approval=access.approval,
        max_removed_share=access.max_removed_share,
        progress=progress,
        on_valid=on_valid,
    )
    show_result(deps, replies, result, channel, upload.thread_ts)
    if result.kind == "queued":
        deps.service.start_upload(result.job.job_id)  # issue 14: the bot starts the upload
    return result


def announce(deps: SlackDeps, replies: Replies, job: Job, how: str) -> None:
    """An ending decided here (invalid, unreadable, rejected, cancelled), announced in the table's
    `notify_channels` as the poller announces its endings (`bot.slack.notify`): one line each."""
    try:
        channels = deps.tables.table(job.table).access.notify_channels
    except ConfigError:
        return
    if not channels:
        return
    permalink = None
    anchor = job.thread_ts or job.status_ts
    if job.channel_id and anchor:
        try:
            permalink = str(deps.client.chat_getPermalink(channel=job.channel_id, message_ts=anchor)["permalink"])
        except SLACK_ERRORS as exc:
            log.warning("job %s: no link to its thread (%s)", job.job_id, type(exc).__name__)
    rendered = render.announcement(job, render.front_ending_summary(job, how), permalink)
    for channel in channels:
        try:
            replies.post(channel, None, rendered)
        except SLACK_ERRORS as exc:
            log.error("job %s: the ending cannot be announced in %s (%s)", job.job_id, channel, type(exc).__name__)


def show_result(deps: SlackDeps, replies: Replies, result: IntakeResult, channel: str, thread: str | None) -> None:
    job = result.job
    if result.kind == "invalid" and result.report is not None:
        report = result.report
        full = render.needs_full_report(report)
        line = f"*Not uploaded*: {render.code(job.file_name)} has problems (details below)."
        replies.status(job, render.status(job, line, icon=":x:", cancellable=False))
        replies.post(channel, thread, render.invalid(job.file_name, report, report_attached=full))
        if full:
            try:
                deps.client.files_upload_v2(
                    channel=channel,
                    thread_ts=thread,
                    content=render.report_csv(report),
                    filename=render.report_file_name(job.file_name),
                    title="Validation report",
                    initial_comment="The full validation report (line, column, code, severity, message, value).",
                )
            except SLACK_ERRORS as exc:
                log.warning("job %s: report file not posted (%s)", job.job_id, type(exc).__name__)
        announce(deps, replies, job, f"the file has problems ({report.count(Severity.ERROR):,} errors)")
    elif result.kind in ("unreadable", "stopped"):
        line = f"*Not uploaded*: {render.code(job.file_name)} could not be checked."
        replies.status(job, render.status(job, line, icon=":x:", cancellable=False))
        replies.post(channel, thread, render.unreadable(job, result.message or ""))
        announce(deps, replies, job, "the file could not be checked")
    elif result.kind in ("awaiting_approval", "awaiting_confirmation"):
        approvers = deps.tables.table(job.table).access.approvers
        replies.status(job, render.status(job, render.waiting_line(job, approvers), icon=":raised_hand:"))
        replies.post(channel, thread, render.decision_request(job, approvers))
