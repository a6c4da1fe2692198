"""The one error tree of the bot.

Every error the bot raises on purpose is a `TablebotError`: it carries a stable `code` (a
snake_case word tests and logs can match) and `message`, the text for the person who asked,
which says what happened and what to do (`str(exc) == exc.message`). It never holds a secret
or a file's contents. Values that came from a user or a file stay plain text here: only
`bot/slack/` renders them, and escapes them there.

    TablebotError
    ├── ConfigError            the tables file or an environment variable is wrong
    ├── UsageError             a command line that cannot be run as given
    ├── InputError             the file cannot be validated at all (UTF-16, binary, HTML, ...)
    ├── SourceError            a Slack file or S3 object cannot be fetched (not_allowed, too_large, ...)
    ├── StagingError           the blob store failed
    │   ├── InvalidStagingKey      a key that could escape its folder
    │   ├── StagedKeyNotFound      nothing stored under the key
    │   └── StagingUnavailable     S3 or the disk failed; retrying later may work
    ├── StoreError             the job store refused or failed
    │   ├── JobNotFound
    │   ├── InvalidTransition      the state machine does not allow the change
    │   ├── JobConflict            someone changed the job first (`current` is the record now)
    │   │   └── LeaseHeld              another worker holds the job
    │   ├── DamagedRecord          a stored job cannot be read (quarantined, never stops the rest)
    │   └── StoreUnavailable       the database failed; the write may be retried as a whole
    ├── UpstreamError          BigPanda or D·engage refused, failed or could not be reached
    ├── Refused                a command or button that cannot be done now (a Retry of a job that
    │   │                      did not fail, a Cancel after sending, ...)
    │   └── TooManyInFlight        a person's or a table's cap on uploads in flight is reached
    └── NoticeFailed           Slack did not take a notice; nothing was posted, try later

Where each branch meets a person is decided once: the CLI's exit codes in `bot.cli.exit_code`,
the Slack replies in `bot.slack.errors.reply_for`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from bot.store.model import Job
    from bot.store.states import JobState


class TablebotError(Exception):
    """The root: a stable `code` and the user's `message`."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ConfigError(TablebotError):
    """The tables file or the environment is wrong; the message says where and how to fix it."""

    code = "config"


class UsageError(TablebotError):
    """A command-line mistake; printed without a traceback."""

    code = "usage"


class InputError(TablebotError):
    """The input cannot be validated further; `code` is the validation code, `line` where (if known)."""

    code = "unreadable_file"

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(message, code=code)
        self.line = line


SourceErrorCode = Literal["not_allowed", "too_large", "no_access", "not_found", "unreachable"]


class SourceError(TablebotError):
    """The file could not be fetched; `message` is for the user and says what to do."""

    def __init__(self, code: SourceErrorCode, message: str) -> None:
        super().__init__(message, code=code)
        self.code: SourceErrorCode = code


# -- staging ------------------------------------------------------------------------------------


class StagingError(TablebotError):
    """Staging could not do what was asked; the message names the key, never file contents."""

    code = "staging"


class InvalidStagingKey(StagingError, ValueError):
    """A key that could escape its folder or is not a plain relative name."""

    code = "invalid_staging_key"


class StagedKeyNotFound(StagingError, KeyError):
    """Nothing is stored under the key (it was never written, was deleted, or expired)."""

    code = "staged_key_not_found"

    def __init__(self, key: str) -> None:
        super().__init__(f"no staged file under {key!r} (never stored, deleted, or expired)")
        self.key = key

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class StagingUnavailable(StagingError):
    """The storage behind staging failed (S3 error, disk full); retrying later may work."""

    code = "staging_unavailable"


# -- job store ----------------------------------------------------------------------------------


class StoreError(TablebotError):
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


class DamagedRecord(StoreError):
    """A stored job record cannot be read (an unknown state, a missing or mistyped field, a part
    without its keys). `key` names the record; the poller quarantines it and goes on."""

    code = "damaged_record"

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(
            f"job record {key} cannot be read ({reason}); it is quarantined: repair or delete it "
            "(docs/operations.md), then `tablebot replay`"
        )


class StoreUnavailable(StoreError):
    """The backing database refused or could not be reached; the write may be retried as a whole."""

    code = "store_unavailable"


# -- upstream -----------------------------------------------------------------------------------

# Why a call failed, by cause (each has its own wording; the CLI's exit code follows it):
# rejected: the vendor refused the request (400, 404, 409, code != 0); auth: the credentials (401);
# address_not_allowed: 403 with `actionResult` (the caller's IP is not allow-listed, checked before
# the credentials); rate_limited: 429 after honouring Retry-After / the vendor's rule (the vendor
# answered: never "unreachable"); status_unreadable: a job status read answered 404, 5xx,
# code != 0 or not JSON (tolerated for the target's `status_grace_seconds`); unreachable: no
# answer; server: 5xx.
ErrorKind = Literal[
    "rejected", "auth", "address_not_allowed", "unreachable", "rate_limited", "server", "status_unreadable"
]
# Kinds worth another try later: nothing was applied, or the read may work next time.
TRANSIENT_UPSTREAM_KINDS: frozenset[str] = frozenset({"unreachable", "rate_limited", "server", "status_unreadable"})


class UpstreamError(TablebotError):
    """The vendor refused, failed or could not be reached; `kind` (also the `code`) says which.
    `message` never holds a secret."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status_code: int | None = None,
        may_have_started: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=kind)
        self.kind: ErrorKind = kind
        self.status_code = status_code
        # True when the request may have been applied although no answer says so.
        self.may_have_started = may_have_started
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in TRANSIENT_UPSTREAM_KINDS and not self.may_have_started


# -- people and Slack ---------------------------------------------------------------------------


class Refused(TablebotError):
    """A command or button that cannot be done now; the message is for the person who asked."""

    code = "refused"


class TooManyInFlight(Refused):
    """A cap on uploads in flight (per person or per table) is reached; the message names them."""

    code = "too_many_in_flight"


class NoticeFailed(TablebotError):
    """The notifier could not post (Slack down, rate limited): nothing was posted; try later."""

    code = "notice_failed"
