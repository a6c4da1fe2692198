"""Endings and their notice: every job's thread ends with one done / failed / timed-out /
cancelled post, never none, never two.

Exactly-once notice
-------------------
The store keeps an ended job in the due index while its notice is pending (`Job.notice_pending`:
terminal, `notified` False, a next check time), so a notice that could not be posted is never
forgotten. The claim that wins the right to post is a conditional write, fenced by the job's
version (every lease write bumps it):

1. decide the ending (done / failed / timed_out) under the job's lease;
2. end the job AND claim its notice in the same conditional transition: the terminal state,
   the ending in `last_error` and the parts, `notice_claimed_by/at` = this worker, the lease
   kept, `next_check_at` = the lease's expiry. A worker whose lease was taken over loses this
   write with `JobConflict` and posts nothing;
3. post: update the status message in place, then post in the thread with Slack message
   metadata (`event_type` "tablebot_job_ending", payload job id, ending and attempt);
4a. posted: confirm (`notified` True), which takes the job out of the due index and drops the
    lease; the table gate is released at step 2 already;
4b. Slack failed (the notifier raised `NoticeFailed`): the job stays pending,
    `notice_retry_seconds` later, lease given back.

Any later attempt (after 4b, or after the claimer died between 2 and 4a and its lease expired)
is a job found due with an earlier claim. Its worker takes the lease (`notice_lease_seconds`),
claims the notice again (a conditional update), and FIRST looks in the thread
(`conversations.replies` with metadata) for the post of this job, ending and attempt: found,
it only confirms; absent, it posts, then confirms. So a notice is lost only if Slack keeps
failing, and doubled only if a post takes longer than a whole lease (the looker cannot see a
post still in flight). If the thread cannot be read for a lasting reason (missing
`channels:history` scope, say), the worker posts: a rare duplicate beats a missing ending.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Protocol

from bot.config import TableConfig
from bot.errors import ConfigError, NoticeFailed, StoreError
from bot.observability import METRICS
from bot.schema import TARGET_KINDS
from bot.service.gate import gate_key
from bot.service.parts import upstream_job_ids
from bot.service.worker import Step, Worker
from bot.store import Job, JobState, JobStore, UpstreamPart
from bot.targets import label_of

log = logging.getLogger(__name__)

S = JobState

# Slack message metadata on every ending post: how a later worker recognises it in the thread.
ENDING_EVENT_TYPE = "tablebot_job_ending"

# The vendors' names for people, by target kind (the clients' `label`).
TARGET_LABELS: dict[str, str] = {kind: label_of(kind) for kind in TARGET_KINDS}


@dataclass(frozen=True)
class Ending:
    """How a job ends, as told to the thread."""

    state: JobState  # DONE | FAILED | TIMED_OUT
    reason: str | None
    target_label: str  # "BigPanda" | "D·engage"
    upstream_job_ids: tuple[str, ...] = ()
    retryable: bool = False  # offer the Retry button (failed jobs)


class Notifier(Protocol):
    def progress(self, job: Job, text: str) -> None:
        """Show progress in the job's status message (best effort: never raises)."""
        ...

    def ending(self, job: Job, ending: Ending) -> None:
        """Post the ending in the job's thread (with the metadata of `ending_metadata`) and update
        its status message; `NoticeFailed` if it could not be posted now."""
        ...

    def ending_posted(self, job: Job, ending: Ending) -> bool:
        """Is this ending of this attempt of the job already in its thread (an earlier worker's
        post)? `NoticeFailed` if that cannot be told now; False if it can never be told."""
        ...


def ending_metadata(job: Job, state: JobState) -> dict[str, object]:
    """The Slack message metadata of an ending post: event type, job id, ending and attempt (a
    Retry's ending is another notice than the first attempt's)."""
    return {
        "event_type": ENDING_EVENT_TYPE,
        "event_payload": {"job_id": job.job_id, "ending": str(state), "attempt": job.attempts},
    }


def ending_for(job: Job, table: TableConfig, state: JobState, reason: str | None) -> Ending:
    """The ending a worker decided for a job of this table (failed ones offer Retry)."""
    return Ending(
        state=state,
        reason=reason,
        target_label=TARGET_LABELS[table.kind],
        upstream_job_ids=upstream_job_ids(job.upstream_parts),
        retryable=state is S.FAILED,
    )


def finish(worker: Worker, job: Job, ending: Ending, parts: tuple[UpstreamPart, ...]) -> Step:
    """End the job and claim its notice in one write, post it, confirm it (steps 2 to 4 above)."""
    summary = (ending.reason or ending.state.value)[:300]
    now = worker.now()
    claimed = worker.store.transition(
        job,
        ending.state,
        actor=worker.worker_id,
        reason=summary,
        changes={
            "last_error": ending.reason,
            "upstream_parts": parts,
            "notified": False,
            "notice_claimed_by": worker.worker_id,
            "notice_claimed_at": now,
        },
        # Due again when the lease runs out: if this worker dies before confirming, the next looks.
        next_check_at=max(job.lease_expires_at or now, now),
    )
    release_gates(worker, job)
    METRICS.add("UploadsEnded", Ending=str(ending.state))
    if job.upload_started_at is not None and ending.state is not S.CANCELLED:
        METRICS.add("UpstreamSeconds", max(0.0, (now - job.upload_started_at).total_seconds()))
    log.info("job %s ended %s: %s", job.job_id, ending.state, summary)
    return post_notice(worker, claimed, replace(ending, upstream_job_ids=upstream_job_ids(parts)), look_first=False)


def release_gates(worker: Worker, job: Job) -> None:
    """Free the table gate an ending job holds, whatever its table is now: the key the job
    recorded when it took the gate, and its table's current key (a job that ends before
    sending may hold it without having recorded it). Best effort: an ended holder's gate is
    taken over by the next job anyway."""
    keys = {job.gate_key} if job.gate_key else set()
    with suppress(ConfigError):  # the table left the tables file: the recorded key is all there is
        keys.add(gate_key(worker.tables.table(job.table)))
    release_gate_keys(worker.store, job, keys)


def release_gate_keys(store: JobStore, job: Job, keys: Iterable[str]) -> list[str]:
    """Release the gates among `keys` that `job` holds; the keys released."""
    freed = []
    for key in sorted(keys):
        try:
            if store.release_table_gate(key, job.job_id):
                freed.append(key)
                log.info("job %s: table gate %s released", job.job_id, key)
        except StoreError as exc:
            log.warning("job %s: table gate %s not released (%s); taken over later", job.job_id, key, exc)
    return freed


def notice_again(worker: Worker, job: Job) -> Step:
    """A pending notice found due: an earlier attempt failed or its worker died. Claim it
    again, look in the thread first, post only if it is not there."""
    ending = recorded_ending(worker, job)
    claimed = worker.store.update(
        job,
        changes={"notice_claimed_by": worker.worker_id, "notice_claimed_at": worker.now()},
        next_check_at=max(job.lease_expires_at or worker.now(), worker.now()),
    )
    return post_notice(worker, claimed, ending, look_first=job.notice_claimed_by is not None)


def recorded_ending(worker: Worker, job: Job) -> Ending:
    """The ending of an ended job, as recorded by the worker that decided it."""
    try:
        label = TARGET_LABELS[worker.tables.table(job.table).kind]
    except ConfigError:
        label = job.target
    return Ending(
        state=job.state,
        reason=job.last_error,
        target_label=label,
        upstream_job_ids=upstream_job_ids(job.upstream_parts),
        retryable=job.state is S.FAILED,
    )


def post_notice(worker: Worker, claimed: Job, ending: Ending, *, look_first: bool) -> Step:
    """Post a claimed notice (after looking in the thread, on a later attempt) and confirm it,
    or give it back for a later run when Slack fails."""
    try:
        if look_first and worker.notifier.ending_posted(claimed, ending):
            log.info("job %s: the %s notice is already in the thread; not posted again", claimed.job_id, ending.state)
            worker.store.update(claimed, changes={"notified": True}, release_lease=True)
            return "already_posted"
        worker.notifier.ending(claimed, ending)
    except NoticeFailed as exc:
        log.warning("job %s: the %s notice was not posted (%s); trying again later", claimed.job_id, ending.state, exc)
        worker.store.update(
            claimed, next_check_at=worker.later(worker.settings.notice_retry_seconds), release_lease=True
        )
        return "notice_retry"
    worker.store.update(claimed, changes={"notified": True}, release_lease=True)
    return step_for(ending.state)


def step_for(state: JobState) -> Step:
    """The poller's word for a job that ended in this state."""
    if state is S.DONE:
        return "done"
    if state is S.TIMED_OUT:
        return "timed_out"
    if state is S.CANCELLED:
        return "cancelled"
    return "failed"
