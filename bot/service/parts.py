"""The parts of an upload as the job records them: their statuses and what they decide.

A BigPanda upload is one part; a D·engage upload may be several, sent one after another.
Part statuses (`UpstreamPart.status`): `sending`, `running`, `done`, `failed` (the upstream job
failed), `refused` (the upload request was refused: no upstream job), `unknown` (may have been
applied, not re-sent). They record the decided ending, so a later run can finish the job
without asking the upstream again.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.store import Job, JobState, UpstreamPart

S = JobState

SENDING = "sending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
REFUSED = "refused"
UNKNOWN = "unknown"
FAILED_STATUSES = frozenset({FAILED, REFUSED, UNKNOWN})
# The placeholder job id of a part whose request is in flight (the vendor has not named a job yet).
NO_JOB_ID = "-"


def part_label(index: int, count: int) -> str:
    """ "part 2 of 3", or "the upload" when there is only one part."""
    return f"part {index} of {count}" if count > 1 else "the upload"


def upstream_job_ids(parts: Sequence[UpstreamPart]) -> tuple[str, ...]:
    """The upstream job ids the vendor named (placeholders of parts in flight left out)."""
    return tuple(p.upstream_job_id for p in parts if p.upstream_job_id != NO_JOB_ID)


def decided_ending(job: Job) -> JobState | None:
    """The ending recorded in the job's parts, if one was decided: failed, done, or None."""
    parts = job.upstream_parts
    if any(p.status in FAILED_STATUSES for p in parts):
        return S.FAILED
    if parts and parts[-1].status == DONE and parts[-1].index == parts[-1].count:
        return S.DONE
    return None


def applied_note(parts: Sequence[UpstreamPart], failed_index: int, count: int) -> str:
    """Which parts of a multi-part upload were applied, for a failure message."""
    if count <= 1:
        return ""
    done = [p.index for p in parts if p.status == DONE]
    applied = (
        f"parts 1–{max(done)} were applied"
        if len(done) > 1
        else ("part 1 was applied" if done else "no part was applied")
    )
    rest = f"; parts {failed_index + 1}–{count} were not sent" if failed_index < count else ""
    return f" ({applied}{rest}; Retry sends part {failed_index} onwards)"
