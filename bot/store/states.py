"""Job states and the one table of allowed transitions; every store checks against it."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class JobState(StrEnum):
    RECEIVED = "received"
    VALIDATING = "validating"
    INVALID = "invalid"
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    UPLOADING = "uploading"
    SUBMITTED = "submitted"
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


S = JobState

# The only place the life of a job is written down. A job may be cancelled from any
# non-terminal state before `submitted` (after that the upstream owns it); `failed → queued`
# is the Retry button (same staged file, validation already passed).
ALLOWED_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType(
    {
        S.RECEIVED: frozenset({S.VALIDATING, S.CANCELLED}),
        S.VALIDATING: frozenset({S.INVALID, S.AWAITING_APPROVAL, S.QUEUED, S.CANCELLED}),
        # awaiting_approval → itself: one of two decisions (approval, confirmation) given, in the history
        S.AWAITING_APPROVAL: frozenset({S.AWAITING_APPROVAL, S.QUEUED, S.CANCELLED}),
        S.QUEUED: frozenset({S.UPLOADING, S.CANCELLED}),
        S.UPLOADING: frozenset({S.SUBMITTED, S.FAILED, S.CANCELLED}),
        S.SUBMITTED: frozenset({S.DONE, S.FAILED, S.TIMED_OUT}),
        S.FAILED: frozenset({S.QUEUED}),
        S.INVALID: frozenset(),
        S.DONE: frozenset(),
        S.TIMED_OUT: frozenset(),
        S.CANCELLED: frozenset(),
    }
)

# Terminal: the job has an ending (it leaves the due index, gets its expiry time, releases its
# lease). `failed` is terminal too; a Retry reopens it, which clears the expiry again.
TERMINAL_STATES: frozenset[JobState] = frozenset({S.INVALID, S.DONE, S.FAILED, S.TIMED_OUT, S.CANCELLED})


def is_terminal(state: JobState) -> bool:
    return state in TERMINAL_STATES


def allowed_from(state: JobState) -> frozenset[JobState]:
    return ALLOWED_TRANSITIONS[state]
