"""Block Kit for a job's progress and ending: pure functions from values to (text, blocks).

`text` is the notification fallback (and what screen readers say); blocks carry the layout.
Section text is cut to Slack's 3,000 characters; a message never has more than a few blocks.
"""

from __future__ import annotations

from typing import Any

from bot.service import Ending
from bot.store import Job, JobState

Blocks = list[dict[str, Any]]

RETRY_ACTION_ID = "retry_job"
SECTION_TEXT_LIMIT = 3000

_HEADLINES = {
    JobState.DONE: ":white_check_mark: *Done*",
    JobState.FAILED: ":x: *Failed*",
    JobState.TIMED_OUT: ":hourglass: *No ending in time*",
    JobState.CANCELLED: ":no_entry_sign: *Cancelled*",
}


def _cut(text: str, limit: int = SECTION_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(text)}]}


def retry_button(job_id: str) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": RETRY_ACTION_ID,
        "value": job_id,
        "text": {"type": "plain_text", "text": "Retry"},
        "style": "primary",
    }


def _what(job: Job) -> str:
    rows = f", {job.row_count:,} rows" if job.row_count is not None else ""
    return f"table `{job.table}` from `{job.file_name}`{rows}"


def _upstream_ids(ending: Ending) -> str:
    if not ending.upstream_job_ids:
        return ""
    ids = ", ".join(f"`{i}`" for i in ending.upstream_job_ids)
    return f"{ending.target_label} job{'s' if len(ending.upstream_job_ids) > 1 else ''} {ids}"


def ending_summary(job: Job, ending: Ending) -> str:
    """One line for the status message and the notification text."""
    if ending.state is JobState.DONE:
        return f"{_HEADLINES[JobState.DONE]}: {ending.target_label} updated {_what(job)}."
    if ending.state is JobState.TIMED_OUT:
        return f"{_HEADLINES[JobState.TIMED_OUT]}: {ending.target_label} has not finished {_what(job)}."
    if ending.state is JobState.CANCELLED:
        return f"{_HEADLINES[JobState.CANCELLED]}: nothing was uploaded to {ending.target_label} for {_what(job)}."
    return f"{_HEADLINES[JobState.FAILED]}: {ending.target_label} did not take {_what(job)}."


def ending_message(job: Job, ending: Ending) -> tuple[str, Blocks]:
    """The thread post for a job's ending: what happened, why, what to do; Retry on failures."""
    summary = ending_summary(job, ending)
    blocks: Blocks = [_section(summary)]
    if ending.reason:
        blocks.append(_section(ending.reason))
    footer = [f"job `{job.job_id}`"]
    ids = _upstream_ids(ending)
    if ids:
        footer.append(ids)
    blocks.append(_context(" · ".join(footer)))
    if ending.retryable and ending.state is JobState.FAILED:
        blocks.append({"type": "actions", "elements": [retry_button(job.job_id)]})
        blocks.append(_context("Retry sends the same validated file again."))
    text = summary if not ending.reason else f"{summary} {ending.reason}"
    return _cut(text.replace("*", ""), 3000), blocks


def status_message(job: Job, ending: Ending) -> tuple[str, Blocks]:
    """The status message, updated in place when the job ends."""
    summary = ending_summary(job, ending)
    return _cut(summary.replace("*", "")), [_section(summary), _context(f"job `{job.job_id}` · details in the thread")]


def progress_message(job: Job, text: str) -> tuple[str, Blocks]:
    """The status message while the upstream works (e.g. "part 2 of 3")."""
    line = f":arrows_counterclockwise: {_what(job)}: {text}"
    return _cut(text), [_section(line), _context(f"job `{job.job_id}`")]


# -- the front end: intake, buttons and commands ----------------------------------------------------
# (added with the Slack front end; the builders above belong to the poller's notices)

APPROVE_ACTION_ID = "approve_job"
REJECT_ACTION_ID = "reject_job"
CONFIRM_ACTION_ID = "confirm_job"
CANCEL_ACTION_ID = "cancel_job"
CHOOSE_TABLE_ACTION_ID = "choose_table"
CHOOSE_TABLE_BLOCK_PREFIX = "choose_table:"
INLINE_ISSUES = 10
EXAMPLE_VALUE_CHARS = 60


def _button(action_id: str, text: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "value": value,
        "text": {"type": "plain_text", "text": text},
    }
    if style:
        button["style"] = style
    return button


def cancel_button(job_id: str) -> dict[str, Any]:
    return _button(CANCEL_ACTION_ID, "Cancel", job_id, "danger")


def intake_status(
    job: Job, text: str, *, icon: str = ":hourglass_flowing_sand:", cancellable: bool = True
) -> tuple[str, Blocks]:
    """The job's status message (one per upload, edited in place) while the bot handles it."""
    line = f"{icon} {text}"
    blocks: Blocks = [_section(line), _context(f"<@{job.requested_by}> · table `{job.table}` · job `{job.job_id}`")]
    if cancellable:
        blocks.append({"type": "actions", "elements": [cancel_button(job.job_id)]})
    return _cut(text.replace("*", "")), blocks


def _where(line: int | None, column: str | None) -> str:
    parts = []
    if line is not None:
        parts.append(f"line {line}")
    if column:
        parts.append(f"column `{column}`")
    return ", ".join(parts) or "file"


def issue_lines(issues: list[Any], limit: int) -> list[str]:
    return [f"• *{_where(i.line, i.column)}*: {i.message}" for i in issues[:limit]]


def _repairs(report: Any) -> str:
    fixes = report.fixes
    if not fixes:
        return ""
    lines = issue_lines(fixes, 5)
    more = max(len(fixes), int(report.severity_counts.get("fixed", 0)))
    extra = f"\n…and {more - 5:,} more" if more > 5 else ""
    return "*Repaired automatically* (the repaired file is what gets uploaded):\n" + "\n".join(lines) + extra


def invalid_message(
    file_name: str, report: Any, *, inline: int = INLINE_ISSUES, report_attached: bool = False
) -> tuple[str, Blocks]:
    """Why a file cannot be uploaded: the first issues inline (line, column, what to do)."""
    from bot.validation import summary_line

    errors = report.errors
    summary = summary_line(report, file_name)
    blocks: Blocks = [_section(f":x: *Not uploaded*: {summary}. Fix these and share the file again.")]
    blocks.append(_section("\n".join(issue_lines(errors, inline)) or "(no details)"))
    total = sum(1 for _ in report.issues)
    if report_attached:
        blocks.append(
            _context(f"The full report ({total:,} issues listed, counts complete) is attached below as a CSV.")
        )
    elif len(errors) > inline:
        blocks.append(_context(f"…and {len(errors) - inline:,} more errors."))
    warnings = report.warnings
    if warnings:
        blocks.append(_section("*Warnings*:\n" + "\n".join(issue_lines(warnings, 3))))
    repairs = _repairs(report)
    if repairs:
        blocks.append(_section(repairs))
    return _cut(f"Not uploaded: {summary}"), blocks


def needs_full_report(report: Any, inline: int = INLINE_ISSUES) -> bool:
    return len(report.errors) > inline or bool(report.truncated) or len(report.issues) > inline + 5


def report_csv(report: Any) -> bytes:
    """The full report as a CSV file (line, column, code, severity, message)."""
    import csv
    import io

    from bot.validation import CSV_REPORT_HEADER

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_REPORT_HEADER)
    for row in report.rows_for_csv():
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue().encode("utf-8")


def _example(row: dict[str, str]) -> str:
    shown = ", ".join(
        f"{k}={v if len(v) <= EXAMPLE_VALUE_CHARS else v[: EXAMPLE_VALUE_CHARS - 1] + '…'}" for k, v in row.items()
    )
    return f"`{shown}`"


def preview_text(preview: Any, max_share: float) -> str:
    """What replacing the table changes, against the last version uploaded through the bot."""
    if preview is None:
        return "No earlier version of this table was uploaded through the bot, so there is nothing to compare with."
    key = ", ".join(f"`{k}`" for k in preview.key_columns) if preview.key_columns else "whole rows"
    lines = [
        f"*Change preview* against job `{preview.previous_job_id}` (rows matched by {key}): "
        f"{preview.old_rows:,} → {preview.new_rows:,} rows; "
        f"*{preview.added:,} added*, *{preview.removed:,} removed*, *{preview.changed:,} changed*."
    ]
    for title, rows in (("Added", preview.added_examples), ("Removed", preview.removed_examples)):
        if rows:
            lines.append(f"{title}, e.g.: " + "; ".join(_example(r) for r in rows))
    if preview.changed_examples:
        lines.append(
            "Changed, e.g.: " + "; ".join(f"{_example(o)} → {_example(n)}" for o, n in preview.changed_examples)
        )
    if preview.old_rows and preview.removed_share > max_share:
        lines.append(
            f":warning: {preview.removed_share:.0%} of the table's rows would be removed (more than {max_share:.0%})."
        )
    return "\n".join(lines)


def decision_request(job: Job, *, approvers: str, confirm: bool) -> tuple[str, Blocks]:
    """The thread post asking for Approve/Reject (an approver) or Confirm/Cancel (the uploader)."""
    if confirm:
        ask = (
            f"<@{job.requested_by}>, this upload removes many rows: press *Confirm* to replace the table, or *Cancel*."
        )
        buttons = [_button(CONFIRM_ACTION_ID, "Confirm", job.job_id, "primary"), cancel_button(job.job_id)]
    else:
        ask = f"Waiting for approval from {approvers} (not the uploader). <@{job.requested_by}> can still cancel."
        buttons = [
            _button(APPROVE_ACTION_ID, "Approve", job.job_id, "primary"),
            _button(REJECT_ACTION_ID, "Reject", job.job_id, "danger"),
        ]
    rows = f"{job.row_count:,} valid rows" if job.row_count is not None else "valid"
    head = f":white_check_mark: `{job.file_name}` is valid ({rows}) for table `{job.table}`."
    blocks: Blocks = [_section(head), _section(ask)]
    blocks.append({"type": "actions", "block_id": f"decide:{job.job_id}", "elements": buttons})
    return _cut(f"{head} {ask}".replace("*", "")), blocks


def choose_table_message(file_id: str, file_name: str, tables: list[str]) -> tuple[str, Blocks]:
    """Ask which table a shared CSV is for, with a menu of the tables this channel may use."""
    text = f"Which table is `{file_name}` for? Pick one and I will check and upload it."
    options = [{"text": {"type": "plain_text", "text": t[:75]}, "value": t} for t in tables[:100]]
    return _cut(text), [
        {
            "type": "section",
            "block_id": f"{CHOOSE_TABLE_BLOCK_PREFIX}{file_id}",
            "text": {"type": "mrkdwn", "text": text},
            "accessory": {
                "type": "static_select",
                "action_id": CHOOSE_TABLE_ACTION_ID,
                "placeholder": {"type": "plain_text", "text": "Table"},
                "options": options,
            },
        }
    ]


def plain(text: str) -> tuple[str, Blocks]:
    """A message of one section (slash command answers, refusals)."""
    return _cut(text.replace("*", "")), [_section(text)]


def sections(title: str, lines: list[str], per_block: int = 20) -> tuple[str, Blocks]:
    """A title and many lines, split over sections so no section goes past Slack's limit."""
    blocks: Blocks = [_section(title)]
    for start in range(0, len(lines), per_block):
        if len(blocks) >= 45:
            blocks.append(_context(f"…{len(lines) - start:,} more not shown"))
            break
        blocks.append(_section("\n".join(lines[start : start + per_block])))
    return _cut(title.replace("*", "")), blocks
