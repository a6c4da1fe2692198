"""Errors of the job store: each has a stable `code` and a message that says what to do."""

from __future__ import annotations

from collections.abc import Iterable

from bot.store.model import Job
from bot.store.states import JobState


class StoreError(Exception):
    code = "store_error"


class JobNotFound(StoreError):
    code = "job_not_found"

    def __init__(self, job_id: str, detail: str = "") -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} not found{': ' + detail if detail else ''}")


class InvalidTransition(StoreError, ValueError):
    """The state machine does not allow this change; nothing was written."""

    code = "invalid_transition"

    def __init__(self, job_id: str, from_state: JobState, to_state: JobState, allowed: Iterable[JobState]) -> None:
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state
        self.allowed = tuple(sorted(allowed))
        choices = ", ".join(self.allowed) if self.allowed else "none: the job has ended"
        super().__init__(
            f"job {job_id}: cannot go from {from_state} to {to_state} (allowed from {from_state}: {choices})"
        )


class JobConflict(StoreError):
    """Someone else changed the job first; `current` is the record as it is now (nothing was written)."""

    code = "job_conflict"

    def __init__(self, current: Job, *, expected_state: JobState, expected_version: int, detail: str = "") -> None:
        self.current = current
        self.expected_state = expected_state
        self.expected_version = expected_version
        why = detail or (
            f"expected {expected_state} at version {expected_version}, found {current.state} at version {current.version}"
        )
        super().__init__(f"job {current.job_id} changed meanwhile: {why}; re-read it and decide again")


class LeaseHeld(JobConflict):
    """Another worker holds an unexpired lease on the job."""

    code = "lease_held"


class StoreUnavailable(StoreError):
    """The backing database refused or could not be reached; the write may be retried as a whole."""

    code = "store_unavailable"
