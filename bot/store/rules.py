"""What every write does to a job, gate and history, as pure functions both stores call.

A store only decides *how* to make the result durable with one conditional write; *what* the
result is (new version, times, due time, expiry, lease) is computed here, once, so the SQLite
and DynamoDB stores cannot drift apart.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Final, Literal

from bot.errors import InvalidTransition, JobConflict, LeaseHeld
from bot.store.model import (
    CHANGEABLE_FIELDS,
    GateDecision,
    HistoryEntry,
    Job,
    JobChanges,
    NewJob,
    TableGate,
    UpstreamPart,
    as_utc,
    to_micros,
)
from bot.store.states import ALLOWED_TRANSITIONS, JobState, is_terminal

DEFAULT_RETENTION = timedelta(days=400)


class _Unset(Enum):
    UNSET = "unset"


# "Not given": a transition then picks the due time from the target state, an update keeps it.
UNSET: Final = _Unset.UNSET
NextCheck = datetime | None | Literal[_Unset.UNSET]

# States where a machine has work to do next; entering one makes the job due now unless told.
_WORK_STATES = frozenset(
    {JobState.RECEIVED, JobState.VALIDATING, JobState.QUEUED, JobState.UPLOADING, JobState.SUBMITTED}
)


def new_job_id(now: datetime) -> str:
    """Sortable by creation time, short enough to read out in Slack, 48 random bits."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(6)}"


def expiry_epoch(at: datetime, retention: timedelta) -> int:
    return math.ceil((at + retention).timestamp())


def plan_create(delivery_key: str, new: NewJob, *, now: datetime, job_id: str) -> tuple[Job, HistoryEntry]:
    if not delivery_key:
        raise ValueError("a job needs a delivery key (Slack event id, file id + channel, or trigger id)")
    job = Job(
        job_id=job_id,
        delivery_key=delivery_key,
        state=JobState.RECEIVED,
        version=1,
        table=new.table,
        target=new.target,
        requested_by=new.requested_by,
        source=new.source,
        file_name=new.file_name,
        created_at=now,
        updated_at=now,
        channel_id=new.channel_id,
        thread_ts=new.thread_ts,
        status_ts=new.status_ts,
        size_bytes=new.size_bytes,
        sha256=new.sha256,
        staging_key=new.staging_key,
        next_check_at=now if new.next_check_at is None else new.next_check_at,
    )
    entry = HistoryEntry(
        job_id=job_id,
        table=new.table,
        seq=1,
        at=now,
        actor=new.requested_by,
        from_state=None,
        to_state=JobState.RECEIVED,
        reason=f"received ({delivery_key})",
    )
    return job, entry


def _checked_changes(changes: JobChanges | Mapping[str, Any] | None) -> dict[str, Any]:
    if not changes:
        return {}
    unknown = sorted(set(changes) - CHANGEABLE_FIELDS)
    if unknown:
        raise ValueError(
            f"job field(s) {', '.join(unknown)} cannot be changed this way "
            f"(changeable: {', '.join(sorted(CHANGEABLE_FIELDS))})"
        )
    out = dict(changes)
    if "upstream_parts" in out:
        parts = tuple(out["upstream_parts"])
        if not all(isinstance(p, UpstreamPart) for p in parts):
            raise ValueError("upstream_parts must be UpstreamPart values")
        out["upstream_parts"] = parts
    if out.get("notice_claimed_at") is not None:
        out["notice_claimed_at"] = as_utc(out["notice_claimed_at"])
    return out


def _due_after_ending(job: Job, next_check_at: NextCheck) -> datetime | None:
    """Where a terminal job stands in the due index after a write: it stays due only while its
    ending notice is pending (`notified` False and a next check given or kept)."""
    if job.notified:
        if isinstance(next_check_at, datetime):
            raise ValueError(
                f"job {job.job_id}: a {job.state} job whose notice is confirmed has no next check "
                "(it leaves the due index)"
            )
        return None
    if next_check_at is UNSET:
        return job.next_check_at
    return next_check_at


def plan_transition(
    job: Job,
    to: JobState,
    *,
    now: datetime,
    actor: str,
    reason: str,
    changes: JobChanges | Mapping[str, Any] | None,
    next_check_at: NextCheck,
    release_lease: bool,
    retention: timedelta,
) -> tuple[Job, HistoryEntry]:
    """The job after `job.state → to`, and its history line. Refuses what the state table forbids."""
    to = JobState(to)
    allowed = ALLOWED_TRANSITIONS[job.state]
    if to not in allowed:
        raise InvalidTransition(job.job_id, job.state, to, allowed)
    if not actor:
        raise ValueError("a transition needs an actor (user id or worker name) for the audit trail")
    values = _checked_changes(changes)
    terminal = is_terminal(to)
    if terminal:
        # An ending leaves the due index, unless the caller keeps it there for its notice
        # (`next_check_at` given, `notified` False): then it also keeps its lease, so the worker
        # that ended it can post the notice before anyone else may look.
        notified = bool(values.get("notified", job.notified))
        due = _due_after_ending(replace(job, notified=notified, next_check_at=None), next_check_at)
        values.update(next_check_at=due, finished_at=now, expires_at=expiry_epoch(now, retention))
        if due is None:
            values.update(lease_owner=None, lease_expires_at=None)
    else:
        if next_check_at is UNSET:
            values["next_check_at"] = now if to in _WORK_STATES else None
        else:
            values["next_check_at"] = next_check_at
        # Reopened (Retry of a failed job): it has no ending yet, and its new ending must be posted.
        values.update(finished_at=None, expires_at=None)
        if job.is_terminal:
            values.setdefault("notified", False)
            values.setdefault("notice_claimed_by", None)
            values.setdefault("notice_claimed_at", None)
            values["upload_started_at"] = None
    if to is JobState.UPLOADING:
        values["upload_started_at"] = now
        if "attempts" not in values:
            values["attempts"] = job.attempts + 1
    if release_lease:
        values.update(lease_owner=None, lease_expires_at=None)
    if job.quarantined is not None:  # out of the poller's hands until an operator replays it
        values["next_check_at"] = None
    new = replace(job, state=to, version=job.version + 1, updated_at=now, **values)
    entry = HistoryEntry(
        job_id=job.job_id,
        table=job.table,
        seq=new.version,
        at=now,
        actor=actor,
        from_state=job.state,
        to_state=to,
        reason=reason,
        expires_at=new.expires_at,
    )
    return new, entry


def plan_update(
    job: Job,
    *,
    now: datetime,
    changes: JobChanges | Mapping[str, Any] | None,
    next_check_at: NextCheck,
    release_lease: bool,
) -> Job:
    """A change that keeps the state (record an upstream id, a status message ts, the next poll time)."""
    values = _checked_changes(changes)
    if job.is_terminal:
        after = replace(job, notified=bool(values.get("notified", job.notified)))
        if not job.notice_pending and isinstance(next_check_at, datetime):
            raise ValueError(
                f"job {job.job_id}: a {job.state} job has no next check (terminal jobs leave the due index; "
                "only a pending ending notice keeps one there)"
            )
        values["next_check_at"] = _due_after_ending(after, next_check_at)
        if values["next_check_at"] is None:
            values.update(lease_owner=None, lease_expires_at=None)
    elif next_check_at is not UNSET:
        values["next_check_at"] = next_check_at
    if release_lease:
        values.update(lease_owner=None, lease_expires_at=None)
    if job.quarantined is not None:
        values["next_check_at"] = None
    return replace(job, version=job.version + 1, updated_at=now, **values)


def plan_quarantine(
    job: Job, *, now: datetime, actor: str, reason: str | None, retention: timedelta
) -> tuple[Job, HistoryEntry]:
    """Take the job out of the poller's hands (`reason` given) or give it back (`reason` None: a
    replay, due now). Out: it leaves the due index and loses its lease. The history line keeps
    the state (from = to) and says who did it and why."""
    if not actor:
        raise ValueError("a quarantine or replay needs an actor for the audit trail")
    if reason is not None:
        new = replace(
            job,
            version=job.version + 1,
            updated_at=now,
            quarantined=reason or "quarantined",
            next_check_at=None,
            lease_owner=None,
            lease_expires_at=None,
        )
        line = f"quarantined by {actor}: {reason}"
    else:
        # Replayed: due now if it has work (or a pending notice), else it stays out (nothing to do).
        due = now if (not job.is_terminal or not job.notified) else None
        new = replace(
            job,
            version=job.version + 1,
            updated_at=now,
            quarantined=None,
            next_check_at=due,
            lease_owner=None,
            lease_expires_at=None,
        )
        line = f"replayed by {actor}"
    entry = HistoryEntry(
        job_id=job.job_id,
        table=job.table,
        seq=new.version,
        at=now,
        actor=actor,
        from_state=job.state,
        to_state=job.state,
        reason=line[:300],
        expires_at=new.expires_at,
    )
    return new, entry


def check_lease_acquirable(current: Job, owner: str, now: datetime) -> None:
    """Raise unless `owner` may take (or renew) the lease on `current` now."""
    if not owner:
        raise ValueError("a lease needs an owner name (worker id)")
    if current.is_terminal and not current.notice_pending:
        raise JobConflict(
            current,
            expected_state=current.state,
            expected_version=current.version,
            detail=f"it has ended ({current.state}); there is nothing to work on",
        )
    if current.quarantined is not None:
        raise JobConflict(
            current,
            expected_state=current.state,
            expected_version=current.version,
            detail=f"it is quarantined ({current.quarantined}); an operator replays it with `tablebot replay`",
        )
    if current.lease_active(now) and current.lease_owner != owner:
        raise LeaseHeld(
            current,
            expected_state=current.state,
            expected_version=current.version,
            detail=f"worker {current.lease_owner} holds its lease until {current.lease_expires_at:%Y-%m-%dT%H:%M:%S}Z",
        )


def plan_acquire_lease(current: Job, owner: str, ttl_seconds: float, now: datetime) -> Job:
    check_lease_acquirable(current, owner, now)
    if ttl_seconds <= 0:
        raise ValueError("lease ttl_seconds must be positive")
    return replace(
        current,
        version=current.version + 1,
        updated_at=now,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=ttl_seconds),
    )


def plan_release_lease(current: Job, owner: str, now: datetime) -> Job | None:
    """The job without `owner`'s lease, or None when `owner` holds none (nothing to write)."""
    if current.lease_owner != owner:
        return None
    return replace(current, version=current.version + 1, updated_at=now, lease_owner=None, lease_expires_at=None)


def decide_gate(
    current: TableGate | None,
    *,
    table: str,
    job_id: str,
    now: datetime,
    min_spacing_seconds: float,
    lease_seconds: float,
    holder_finished: Callable[[str], bool],
) -> GateDecision:
    """May `job_id` call the upstream for `table` now? If so, `decision.gate` is the gate to write.

    Held by another job: refused while that job's gate lease runs, unless that job has ended
    (terminal or gone), then taken over. Spacing: refused until `last_call_at + min_spacing`,
    also for the holder itself (a second part of a multi-part upload is a second call).
    """
    if not job_id:
        raise ValueError("a table gate is held by a job id")
    if lease_seconds <= 0:
        raise ValueError("gate lease_seconds must be positive")
    previous = current.holder_job_id if current is not None else None
    if current is not None and current.held_by_other(job_id, now):
        assert current.holder_job_id is not None
        if not holder_finished(current.holder_job_id):
            return GateDecision(
                acquired=False,
                table=table,
                reason="held",
                holder_job_id=current.holder_job_id,
                retry_at=current.lease_expires_at,
                gate=current,
            )
    if current is not None and current.last_call_at is not None and min_spacing_seconds > 0:
        ready_at = current.last_call_at + timedelta(seconds=min_spacing_seconds)
        if ready_at > now:
            return GateDecision(
                acquired=False,
                table=table,
                reason="spacing",
                holder_job_id=current.holder_job_id,
                retry_at=ready_at,
                gate=current,
            )
    gate = TableGate(
        table=table,
        version=(current.version if current is not None else 0) + 1,
        holder_job_id=job_id,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        last_call_at=now,
    )
    taken_over = previous is not None and previous != job_id
    return GateDecision(
        acquired=True,
        table=table,
        reason="taken_over" if taken_over else "acquired",
        holder_job_id=job_id,
        previous_holder_job_id=previous if taken_over else None,
        gate=gate,
    )


def history_sort_key(entry: HistoryEntry) -> tuple[int, str, int]:
    return (to_micros(entry.at), entry.job_id, entry.seq)


def book_rate_slot(starts: list[int], *, limit: int, window_us: int, now_us: int) -> tuple[int, list[int]]:
    """A start time for one more request under "at most `limit` starts in any window of
    `window_us`", given the last bookings (`starts`, oldest first, times in microseconds).

    The request may start when the oldest of the last `limit` bookings leaves the window (now, if
    fewer than `limit` were booked). Returns (start, the bookings to keep: the last `limit`). A
    booking is kept even when its caller dies before sending: the slot is spent, never given twice.
    """
    if limit < 1 or window_us <= 0:
        raise ValueError("a rate slot needs limit >= 1 and a positive window")
    kept = sorted(starts)[-limit:]
    at = now_us if len(kept) < limit else max(now_us, kept[0] + window_us)
    return at, [*kept, at][-limit:]
