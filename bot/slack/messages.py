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
