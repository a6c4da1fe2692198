"""Errors of the job store (defined in `bot.errors`, the one error tree): each has a stable `code`
and a message that says what to do."""

from bot.errors import InvalidTransition, JobConflict, JobNotFound, LeaseHeld, StoreError, StoreUnavailable

__all__ = ["InvalidTransition", "JobConflict", "JobNotFound", "LeaseHeld", "StoreError", "StoreUnavailable"]
