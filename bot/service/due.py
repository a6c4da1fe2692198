"""Which jobs are the poller's: the states it works on and the front-end jobs it watches.

The poller works on `queued`, `uploading` and `submitted` jobs and on ended jobs whose notice is
pending. It also watches the front end's states: a `received`/`validating` job whose intake died,
or an `awaiting_approval` job past its deadline, is ended by the poller (`bot.service.left_behind`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.store import Job, JobState
from bot.store.states import TERMINAL_STATES

S = JobState

# States the poller works on; the others belong to the Slack front end (validation, approval).
POLLER_STATES = frozenset({S.QUEUED, S.UPLOADING, S.SUBMITTED})
# The front end's states the poller watches: it ends such a job when it is left behind (its
# intake died, or nobody answered the approval request in time). The intake keeps them out of
# the due index until then (its lease, its next check at the lease expiry or the deadline).
INTAKE_STATES = frozenset({S.RECEIVED, S.VALIDATING})
WATCHED_STATES = INTAKE_STATES | {S.AWAITING_APPROVAL}
# What the poller asks the due index for: its work states, left-behind front-end jobs, and
# endings whose notice is pending.
POLLER_DUE_STATES = POLLER_STATES | WATCHED_STATES | TERMINAL_STATES


def is_poller_work(job: Job) -> bool:
    """Does the poller have something to do for this job (a work state, a due front-end job it may
    have to end, or a pending notice)?"""
    return (
        job.state in POLLER_STATES
        or job.notice_pending
        or (job.state in WATCHED_STATES and job.next_check_at is not None)
    )


def intake_stranded(job: Job, now: datetime, intake_lease_seconds: float) -> bool:
    """Was this `received`/`validating` job left behind by its intake? Its lease expired, or it
    never had one and has not changed for `intake_lease_seconds`. Never while a lease runs."""
    if job.state not in INTAKE_STATES or job.lease_active(now):
        return False
    if job.lease_expires_at is not None:
        return True
    return job.updated_at + timedelta(seconds=intake_lease_seconds) <= now
