"""The rendering boundary: values in, mrkdwn and Block Kit out. Nothing else in the bot writes
Slack markup.

Everything that came from a person or a file (file names, headers, cell values, table names
typed in a command, S3 addresses, message words) and every message another part of the bot
produced (an upstream's error, a source's reason) is data: it goes through `esc` (Slack's three
control characters `&`, `<`, `>`) or `code` (an inline code span that cannot be broken out of)
before it is placed in a message. Mentions are written only here, only from ids that look like
Slack ids (`who`, `mention`), so a header such as `<!channel>` or a file named
`<https://evil.example|Re-login>.csv` is shown, never obeyed.

Block Kit limits (a section's text 3,000 characters, 50 blocks, a button value 2,000, an
option's text 75) are kept by `fit`, which cuts before a code span, an entity or a `<...>` link
that would otherwise be left open. The `text` of every message (the notification, what screen
readers say) is built from the same escaped strings.

`report_csv` writes the full validation report as a CSV whose cells cannot run as spreadsheet
formulas (a cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bot.config import ANY, TableConfig
from bot.store import Job, JobState

if TYPE_CHECKING:
    from bot.intake import DryRun
    from bot.preview import ChangePreview
    from bot.service import Ending
    from bot.validation import Issue, Report

Blocks = list[dict[str, Any]]
Message = tuple[str, Blocks]

SECTION_TEXT_LIMIT = 3000
CONTEXT_TEXT_LIMIT = 2000
MAX_BLOCKS = 50
OPTION_TEXT_LIMIT = 75
MAX_OPTIONS = 100
INLINE_ISSUES = 10
VALUE_CHARS = 60  # a value shown inline (an example row, an offending cell)

RETRY_ACTION_ID = "retry_job"
APPROVE_ACTION_ID = "approve_job"
REJECT_ACTION_ID = "reject_job"
CONFIRM_ACTION_ID = "confirm_job"
CANCEL_ACTION_ID = "cancel_job"
CHOOSE_TABLE_ACTION_ID = "choose_table"
CHOOSE_TABLE_BLOCK_PREFIX = "choose_table:"

TARGET_LABELS = {"bigpanda": "BigPanda", "dengage": "D·engage"}
_SLACK_ID = re.compile(r"[UWBSCGD][A-Z0-9]{2,}")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# -- escaping ---------------------------------------------------------------------------------------


def esc(value: object) -> str:
    """Any value as text Slack shows literally: `&`, `<`, `>` become entities."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(value: object, limit: int = VALUE_CHARS * 2) -> str:
    """A value in an inline code span: escaped, one line, no backtick that could close the span,
    cut to `limit` characters."""
    text = str(value).replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎").replace("`", "ˋ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{esc(text) or ' '}`"


def mention(slack_id: str) -> str:
    """A mention of a user, user group or channel id; anything not shaped like an id is shown as text."""
    if not _SLACK_ID.fullmatch(slack_id):
        return code(slack_id)
    if slack_id.startswith("S"):
        return f"<!subteam^{slack_id}>"
    if slack_id.startswith(("C", "G")):
        return f"<#{slack_id}>"
    return f"<@{slack_id}>"


def who(user_id: str | None) -> str:
    """A person, as a mention when it is a Slack user id (else: the bot, the CLI, ...)."""
    if not user_id:
        return "someone"
    if _SLACK_ID.fullmatch(user_id) and user_id.startswith(("U", "W")):
        return f"<@{user_id}>"
    return code(user_id)


def mentions(ids: Iterable[str], fallback: str = "the bot's admins (the tables file)") -> str:
    found = [mention(i) for i in ids if i != ANY]
    return ", ".join(found) if found else fallback


def fit(text: str, limit: int = SECTION_TEXT_LIMIT) -> str:
    """`text` cut to `limit` characters (with "…") without leaving a code span, an entity or a
    `<...>` token open."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    angle = cut.rfind("<")
    if angle != -1 and ">" not in cut[angle:]:
        cut = cut[:angle]
    if cut.count("`") % 2:
        cut = cut[: cut.rfind("`")]
    return cut.rstrip() + "…"


def plain_text(text: str, limit: int = SECTION_TEXT_LIMIT) -> str:
    """The notification `text` of a message: the same escaped mrkdwn, without bold markers."""
    return fit(text.replace("*", ""), limit)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": fit(text)}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": fit(text, CONTEXT_TEXT_LIMIT)}]}


def button(action_id: str, text: str, value: str, style: str | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "value": value[:2000],
        "text": {"type": "plain_text", "text": text[:75]},
    }
    if style:
        element["style"] = style
    return element


def message(text: str, *more: dict[str, Any]) -> Message:
    """One section of `text` (already rendered) and any further blocks."""
    return plain_text(text), [section(text), *more][:MAX_BLOCKS]


def listing(title: str, lines: Sequence[str], per_block: int = 10) -> Message:
    """A title and many lines, over sections so no section or message goes past Slack's limits."""
    blocks: Blocks = [section(title)]
    for start in range(0, len(lines), per_block):
        if len(blocks) >= MAX_BLOCKS - 2:
            blocks.append(context(f"…{len(lines) - start:,} more not shown"))
            break
        blocks.append(section("\n".join(lines[start : start + per_block])))
    return plain_text(title), blocks


# -- a job's thread ---------------------------------------------------------------------------------


def _what(job: Job) -> str:
    rows = f", {job.row_count:,} rows" if job.row_count is not None else ""
    return f"table {code(job.table)} from {code(job.file_name)}{rows}"


def retry_button(job_id: str) -> dict[str, Any]:
    return button(RETRY_ACTION_ID, "Retry", job_id, "primary")


def cancel_button(job_id: str) -> dict[str, Any]:
    return button(CANCEL_ACTION_ID, "Cancel", job_id, "danger")


def job_footer(job: Job) -> str:
    return f"{who(job.requested_by)} · table {code(job.table)} · job {code(job.job_id)}"


def status(job: Job, line: str, *, icon: str = ":hourglass_flowing_sand:", cancellable: bool = True) -> Message:
    """The job's status message (one per upload, edited in place). `line` is rendered already."""
    text = f"{icon} {line}"
    blocks: Blocks = [section(text), context(job_footer(job))]
    if cancellable:
        blocks.append({"type": "actions", "elements": [cancel_button(job.job_id)]})
    return plain_text(line), blocks


def received(job: Job) -> Message:
    return status(job, f"Received {code(job.file_name)} for table {code(job.table)}…")


def progress_note(job: Job, note: str) -> Message:
    """The status message while the bot checks the file; `note` is the intake's text (data)."""
    return status(job, esc(note))


def progress_message(job: Job, note: str) -> Message:
    """The status message while the upstream works (the poller's "part 2 of 3"); `note` is data."""
    line = f":arrows_counterclockwise: {_what(job)}: {esc(note)}"
    return plain_text(esc(note)), [section(line), context(f"job {code(job.job_id)}")]


def _issue_line(issue: Issue) -> str:
    where = []
    if issue.line is not None:
        where.append(f"line {issue.line:,}")
    if issue.column:
        where.append(f"column {code(issue.column)}")
    value = getattr(issue, "value", None)
    shown = f" (value {code(value)})" if value is not None else ""
    return f"• *{', '.join(where) or 'file'}*: {esc(issue.message)}{shown}"


def issue_lines(issues: Sequence[Issue], limit: int) -> list[str]:
    return [_issue_line(i) for i in issues[:limit]]


def _repairs(report: Report, limit: int = 5) -> str:
    fixes = report.fixes
    if not fixes:
        return ""
    more = max(len(fixes), int(report.severity_counts.get("fixed", 0))) - limit
    extra = f"\n…and {more:,} more" if more > 0 else ""
    lines = "\n".join(issue_lines(fixes, limit))
    return f"*Repaired automatically* (the repaired file is what gets uploaded):\n{lines}{extra}"


def _summary(report: Report, file_name: str) -> str:
    from bot.validation import summary_line

    return esc(summary_line(report, file_name))


def needs_full_report(report: Report, inline: int = INLINE_ISSUES) -> bool:
    return len(report.errors) > inline or bool(report.truncated) or len(report.issues) > inline + 5


def invalid(file_name: str, report: Report, *, report_attached: bool = False, dry_run: bool = False) -> Message:
    """Why a file cannot be uploaded: the first issues inline (line, column, value, what to do)."""
    summary = _summary(report, file_name)
    head = "Dry run" if dry_run else "*Not uploaded*"
    blocks: Blocks = [section(f":x: {head}: {summary}. Fix these and share the file again.")]
    blocks.append(section("\n".join(issue_lines(report.errors, INLINE_ISSUES)) or "(no details)"))
    if report_attached:
        total = len(report.issues)
        blocks.append(context(f"The full report ({total:,} issues listed, counts complete) is attached as a CSV."))
    elif len(report.errors) > INLINE_ISSUES:
        blocks.append(context(f"…and {len(report.errors) - INLINE_ISSUES:,} more errors."))
    if report.warnings:
        blocks.append(section("*Warnings*:\n" + "\n".join(issue_lines(report.warnings, 3))))
    repairs = _repairs(report)
    if repairs:
        blocks.append(section(repairs))
    if dry_run:
        blocks.append(context("Dry run: nothing was uploaded."))
    return plain_text(f"Not uploaded: {summary}"), blocks


def _neutral(cell: object) -> str:
    text = "" if cell is None else str(cell)
    return "'" + text if text.startswith(_FORMULA_START) else text


def report_csv(report: Report) -> bytes:
    """The full report as a CSV (line, column, code, severity, message, value); no cell can run
    as a formula when the file is opened in a spreadsheet."""
    from bot.validation import CSV_REPORT_HEADER

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*CSV_REPORT_HEADER, "value"])
    for issue in report.issues:
        row = (issue.line, issue.column, issue.code, issue.severity.value, issue.message, getattr(issue, "value", None))
        writer.writerow([_neutral(v) for v in row])
    return buffer.getvalue().encode("utf-8")


def report_file_name(file_name: str) -> str:
    stem = file_name.rsplit("/", 1)[-1]
    stem = stem[:-4] if stem.lower().endswith(".csv") else stem
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "file"
    return f"{safe[:80]}-report.csv"


def _example(row: dict[str, str]) -> str:
    return code(", ".join(f"{k}={v}" for k, v in row.items()), VALUE_CHARS * 2)


def preview_text(preview: ChangePreview | None, max_share: float) -> str:
    """What replacing the table changes, against the last version uploaded through the bot."""
    if preview is None:
        return "No earlier version of this table was uploaded through the bot, so there is nothing to compare with."
    key = ", ".join(code(k) for k in preview.key_columns) if preview.key_columns else "whole rows"
    lines = [
        f"*Change preview* against job {code(preview.previous_job_id or '?')} (rows matched by {key}): "
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


def valid(job: Job, report: Report, preview_line: str | None) -> Message:
    """The file is valid: rows, the change preview (BigPanda), repairs and warnings."""
    lines = [f":white_check_mark: {code(job.file_name)} is valid: {report.rows:,} rows."]
    if preview_line:
        lines.append(preview_line)
    notes = [*report.fixes, *report.warnings]
    if notes:
        lines.append("*Repairs and warnings*:\n" + "\n".join(issue_lines(notes, 5)))
    return message("\n".join(lines))


def decision_request(job: Job, approvers: Sequence[str]) -> Message:
    """What the job waits for: an approver's Approve/Reject, a Confirm of many removals, or both."""
    rows = f"{job.row_count:,} valid rows" if job.row_count is not None else "valid"
    head = f":white_check_mark: {code(job.file_name)} is valid ({rows}) for table {code(job.table)}."
    asks: list[str] = []
    buttons: list[dict[str, Any]] = []
    if job.needs_approval and not job.approver:
        asks.append(f"Waiting for approval from {mentions(approvers)} (not the uploader).")
        buttons += [
            button(APPROVE_ACTION_ID, "Approve", job.job_id, "primary"),
            button(REJECT_ACTION_ID, "Reject", job.job_id, "danger"),
        ]
    if job.needs_confirmation and not job.confirmed_by:
        asks.append(
            f"This upload removes many rows: {who(job.requested_by)} (or an approver) presses *Confirm* to replace "
            "the table, or *Cancel*."
        )
        buttons.append(button(CONFIRM_ACTION_ID, "Confirm", job.job_id, "primary"))
    buttons.append(cancel_button(job.job_id))
    ask = " ".join(asks) + f" {who(job.requested_by)} can still cancel."
    blocks: Blocks = [section(head), section(ask)]
    blocks.append({"type": "actions", "block_id": f"decide:{job.job_id}", "elements": buttons})
    return plain_text(f"{head} {ask}"), blocks


def waiting_line(job: Job, approvers: Sequence[str]) -> str:
    wants = []
    if job.needs_approval and not job.approver:
        wants.append(f"approval from {mentions(approvers)}")
    if job.needs_confirmation and not job.confirmed_by:
        wants.append(f"{who(job.requested_by)} to confirm the removals")
    return f"Valid; waiting for {' and '.join(wants) or 'a decision'}."


def decided(kept_blocks: Blocks, note: str) -> Message:
    """A decision message once decided: its buttons go, a line says who decided what."""
    blocks = [b for b in kept_blocks if b.get("type") != "actions"]
    return plain_text(note), [*blocks, section(note)][:MAX_BLOCKS]


def choose_table(file_id: str, file_name: str, tables: Sequence[str], *, asked_by: str) -> Message:
    """Ask which table a shared CSV is for, with a menu of the tables the person may use here."""
    text = f"{who(asked_by)}, which table is {code(file_name)} for? Pick one and I will check and upload it."
    options = [
        {"text": {"type": "plain_text", "text": t[:OPTION_TEXT_LIMIT]}, "value": t} for t in tables[:MAX_OPTIONS]
    ]
    block = {
        "type": "section",
        "block_id": f"{CHOOSE_TABLE_BLOCK_PREFIX}{file_id}",
        "text": {"type": "mrkdwn", "text": fit(text)},
        "accessory": {
            "type": "static_select",
            "action_id": CHOOSE_TABLE_ACTION_ID,
            "placeholder": {"type": "plain_text", "text": "Table"},
            "options": options,
        },
    }
    return plain_text(text), [block]


def table_chosen(file_name: str, table: str, chooser: str) -> Message:
    return message(f"{code(file_name)} → table {code(table)} (chosen by {who(chooser)})")


def already_chosen(table: str, chooser: str) -> str:
    return f"This file already went to table {code(table)}: {who(chooser)} chose first, so your pick was not used."


# -- a file share, file by file --------------------------------------------------------------------

ACCEPTED = "I take CSV files (comma-separated, UTF-8, a header row; `.csv`)"


def file_lines(lines: Sequence[str]) -> Message:
    """One reply for the files of a message that were not started (each with its own line)."""
    return message("\n".join(f"• {line}" for line in lines))


def not_csv(file_name: str, pretty_type: str | None) -> str:
    kind = f" ({esc(pretty_type)})" if pretty_type else ""
    return (
        f"{code(file_name)}{kind} is not a CSV file: {ACCEPTED}. "
        "Save it as CSV (in a spreadsheet: File → Download → CSV) and share that."
    )


def deleted_file() -> str:
    return "A file of this message was deleted before I could read it; share it again if it was meant for a table."


def external_file(file_name: str, external_type: str | None) -> str:
    where = f" ({esc(external_type)})" if external_type else ""
    return (
        f"{code(file_name)} is a link to a file outside Slack{where}, which I cannot read: download it as CSV and "
        "share the file itself."
    )


def no_access(file_name: str) -> str:
    return (
        f"I cannot read {code(file_name)} (Slack did not give me access to it). Share it again in this channel, "
        "or upload it here from your computer."
    )


def refused_file(file_name: str, reason: str) -> str:
    return f"{code(file_name)} was not uploaded. {reason}"


def no_table_here(is_dm: bool) -> str:
    if is_dm:
        return "No table takes files through direct messages: share the file in the table's channel."
    return "No table may be uploaded from this channel: share the file in the table's channel."


def unreadable(job: Job, reason: str) -> Message:
    return message(f":x: {esc(reason)}")


# -- dry runs ---------------------------------------------------------------------------------------


def dry_run(table: str, outcome: DryRun) -> Message:
    if outcome.report is None:
        return message(f":x: Dry run of {code(outcome.file_name)} for {code(table)}: {esc(outcome.message or '')}")
    report = outcome.report
    if report.valid:
        lines = [f":white_check_mark: Dry run: {_summary(report, outcome.file_name)}. Nothing was uploaded."]
        lines += issue_lines([*report.fixes, *report.warnings], 10)
        return message("\n".join(lines))
    return invalid(outcome.file_name, report, dry_run=True)


# -- endings (the poller's notices) ----------------------------------------------------------------

_HEADLINES = {
    JobState.DONE: ":white_check_mark: *Done*",
    JobState.FAILED: ":x: *Failed*",
    JobState.TIMED_OUT: ":hourglass: *No ending in time*",
    JobState.CANCELLED: ":no_entry_sign: *Cancelled*",
}


def _upstream_ids(ending: Ending) -> str:
    if not ending.upstream_job_ids:
        return ""
    ids = ", ".join(code(i) for i in ending.upstream_job_ids)
    return f"{esc(ending.target_label)} job{'s' if len(ending.upstream_job_ids) > 1 else ''} {ids}"


def ending_summary(job: Job, ending: Ending) -> str:
    """One line for the status message, the notification text and the team channels."""
    label = esc(ending.target_label)
    if ending.state is JobState.DONE:
        return f"{_HEADLINES[JobState.DONE]}: {label} updated {_what(job)}."
    if ending.state is JobState.TIMED_OUT:
        return f"{_HEADLINES[JobState.TIMED_OUT]}: {label} has not finished {_what(job)}."
    if ending.state is JobState.CANCELLED:
        return f"{_HEADLINES[JobState.CANCELLED]}: nothing was uploaded to {label} for {_what(job)}."
    return f"{_HEADLINES[JobState.FAILED]}: {label} did not take {_what(job)}."


def ending_message(job: Job, ending: Ending, approvers: Sequence[str] = ()) -> Message:
    """The thread post for a job's ending: what happened, why, what to do; Retry on failures.
    `approvers`: who could have approved a wait that was cancelled (the table's, from the notifier)."""
    summary = ending_summary(job, ending)
    blocks: Blocks = [section(summary)]
    reason = esc(ending.reason) if ending.reason else ""
    if ending.state is JobState.CANCELLED and job.needs_approval and not job.approver and approvers:
        reason = f"{reason} Approvers: {mentions(approvers)}.".strip()
    if reason:
        blocks.append(section(reason))
    footer = [f"job {code(job.job_id)}", f"asked by {who(job.requested_by)}"]
    ids = _upstream_ids(ending)
    if ids:
        footer.append(ids)
    blocks.append(context(" · ".join(footer)))
    if ending.retryable and ending.state is JobState.FAILED:
        blocks.append({"type": "actions", "elements": [retry_button(job.job_id)]})
        blocks.append(context("Retry sends the same validated file again."))
    return plain_text(f"{summary} {reason}".strip()), blocks


def status_message(job: Job, ending: Ending) -> Message:
    """The status message, updated in place when the job ends."""
    summary = ending_summary(job, ending)
    return plain_text(summary), [section(summary), context(f"job {code(job.job_id)} · details in the thread")]


def announcement(job: Job, summary: str, permalink: str | None) -> Message:
    """One line in a table's team channel: the ending (`summary`, rendered), who asked, a link
    to the thread."""
    link = f" <{permalink}|Open the thread>" if permalink and _safe_link(permalink) else ""
    line = f"{summary} Asked by {who(job.requested_by)}.{link}"
    return plain_text(line), [section(line)]


def front_ending_summary(job: Job, how: str) -> str:
    """An ending the front end decides (invalid file, rejected, cancelled): `how` is rendered."""
    icon = ":x:" if job.state is JobState.INVALID else ":no_entry_sign:"
    return f"{icon} *Not uploaded*: {_what(job)}: {how}"


def _safe_link(url: str) -> bool:
    return url.startswith(("https://", "http://")) and not any(c in url for c in "<>| \n")


# -- commands ---------------------------------------------------------------------------------------


def help_message(command: str, usage: Sequence[tuple[str, str]], note: str | None = None) -> Message:
    lines = [f"• `{esc(command)} {esc(u)}`: {esc(what)}" for u, what in usage]
    head = (f"{esc(note)}\n\n" if note else "") + "*What I can do*"
    tail = (
        "To upload a file from your computer, share the CSV in an upload channel (or with me in a direct message, "
        "where a table allows it) and name the table in the message, or let the file name match it."
    )
    return listing(head, [*lines, "", tail], per_block=20)


def table_line(table: TableConfig) -> str:
    access = table.access
    schema = table.configured_schema()
    if schema is None:
        columns = f"columns read from {TARGET_LABELS[table.kind]} at upload"
    else:
        columns = ", ".join(
            code(c.name) + (" (key)" if c.role == "query_tag" or c.primary else "") for c in schema.columns
        )
    upstream = table.enrichment_id or table.table_name or table.table_id or ""
    uploaders = mentions([*access.users, *access.usergroups], "nobody yet")
    if ANY in access.users:
        uploaders = "anyone here" + (f", {uploaders}" if uploaders != "nobody yet" else "")
    approval = f"; approval by {mentions(access.approvers)}" if access.approval else ""
    how = "replaced" if table.kind == "bigpanda" else "upserted"
    return (
        f"• *{esc(table.alias)}* → {TARGET_LABELS[table.kind]} {code(upstream)} ({how}): {columns}. "
        f"Uploaders: {uploaders}{approval}."
    )


def job_line(job: Job, state_words: str) -> str:
    rows = f", {job.row_count:,} rows" if job.row_count is not None else ""
    when = job.created_at.strftime("%Y-%m-%d %H:%M UTC")
    ended_badly = job.state in (JobState.FAILED, JobState.INVALID, JobState.CANCELLED, JobState.TIMED_OUT)
    why = f" — {esc(job.last_error)}" if job.last_error and ended_badly else ""
    return (
        f"{code(job.job_id)} {when} · {code(job.table)} · {code(job.file_name)}{rows} · {who(job.requested_by)} · "
        f"*{esc(state_words)}*{why}"
    )


def history_line(entry: Any) -> str:
    actor = who(entry.actor)
    return (
        f"• {entry.at:%Y-%m-%d %H:%M} · {code(entry.job_id)} · {actor} · {esc(entry.from_state or 'new')} → "
        f"*{esc(entry.to_state)}* · {esc(str(entry.reason)[:150])}"
    )
