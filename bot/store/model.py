"""The values a job store keeps and returns: jobs, history entries, table gates.

Everything is an immutable dataclass; a store returns a new value after every write. Times are
aware UTC datetimes; `Job.expires_at` is the TTL in epoch seconds, as DynamoDB wants it.
`job_to_record`/`job_from_record` give the one plain (JSON-able) form both stores persist, with
times as integer microseconds since the epoch, so both stores round-trip a job exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from bot.errors import DamagedRecord
from bot.store.states import JobState, is_terminal

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)

# A clock returns "now" as an aware datetime or epoch seconds; stores take one so tests never sleep.
Clock = Callable[[], datetime | float]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | float) -> datetime:
    """An aware UTC datetime from a datetime (aware only) or epoch seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the job store: pass an aware UTC datetime")
        return value.astimezone(UTC)
    return EPOCH + timedelta(seconds=float(value))


def to_micros(value: datetime) -> int:
    return (value - EPOCH) // ONE_MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True, slots=True)
class UpstreamPart:
    """One upstream job started for a job: BigPanda has one, a multi-part D·engage upload several."""

    index: int  # 1-based: part `index` of `count`
    count: int
    upstream_job_id: str
    status: str | None = None  # last upstream status word seen by the poller


@dataclass(frozen=True, slots=True)
class NewJob:
    """What the bot knows when a delivery (event, command, button) first names an upload."""

    table: str  # table alias from the tables file
    target: str  # target name from the tables file
    requested_by: str  # Slack user id (or "cli:<user>")
    source: str  # Slack file id or s3:// URI
    file_name: str
    channel_id: str | None = None
    thread_ts: str | None = None
    status_ts: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    staging_key: str | None = None
    # When a worker should first look at the job; None means now (a received job always has work).
    next_check_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    delivery_key: str
    state: JobState
    version: int  # +1 on every write; each write is conditional on it
    table: str
    target: str
    requested_by: str
    source: str
    file_name: str
    created_at: datetime
    updated_at: datetime
    channel_id: str | None = None
    thread_ts: str | None = None
    status_ts: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    staging_key: str | None = None
    row_count: int | None = None
    upstream_parts: tuple[UpstreamPart, ...] = ()
    attempts: int = 0  # times the job entered `uploading`
    upload_started_at: datetime | None = None  # when the job last entered `uploading` (the store sets it)
    last_error: str | None = None
    # The upstream as the job was validated for (`bot.targets.identity_of`, JSON): sending to
    # anything else is refused. None for jobs recorded before it existed.
    target_identity: str | None = None
    # The vendor's last status word of the current part, verbatim (known to the bot or not).
    upstream_status: str | None = None
    # Consecutive status reads answering a word the bot does not know (told once it reaches the
    # target's `unknown_status_reads`), and since when the status could not be read at all.
    unknown_status_reads: int = 0
    status_unreadable_since: datetime | None = None
    # The ending notice: `notice_claimed_by/at` name the worker that last won the right to post it
    # (a conditional write); `notified` confirms it is in the thread (or needs no post). A terminal
    # job whose notice is not confirmed stays in the due index (`notice_pending`).
    notified: bool = False
    notice_claimed_by: str | None = None
    notice_claimed_at: datetime | None = None
    approver: str | None = None  # who approved (or rejected) the upload
    # What a job waiting in `awaiting_approval` needs before it may go: an approver's Approve (the
    # table requires approval) and/or a Confirm of a large removal (the requester or an approver
    # may give it). Both are recorded separately, so one never stands in for the other.
    needs_approval: bool = False
    needs_confirmation: bool = False
    confirmed_by: str | None = None
    finished_at: datetime | None = None
    next_check_at: datetime | None = None  # set: the job is in the due index
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    expires_at: int | None = None  # TTL, epoch seconds; set only on terminal jobs
    # The table gate this job took (its key), so the gate is released at its ending whatever
    # its table has become in the tables file since.
    gate_key: str | None = None
    # Set (the reason) when the job was taken out of the poller's hands, by an operator or
    # because its record could not be read; it stays out of the due index until replayed.
    quarantined: str | None = None

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.state)

    @property
    def notice_pending(self) -> bool:
        """Ended, and its ending notice is still to be posted (or confirmed): the job stays due."""
        return self.is_terminal and not self.notified and self.next_check_at is not None

    @property
    def upstream_job_ids(self) -> tuple[str, ...]:
        return tuple(p.upstream_job_id for p in sorted(self.upstream_parts, key=lambda p: p.index))

    def lease_active(self, now: datetime) -> bool:
        return self.lease_owner is not None and self.lease_expires_at is not None and self.lease_expires_at > now


class DueJobs(list[Job]):
    """The answer of `JobStore.due_jobs`: the readable due jobs, earliest first, and the records
    that could not be read, each quarantined by this call (taken out of the due index with one
    conditional write, so each is reported once, by the one caller whose write won)."""

    def __init__(self, jobs: Iterable[Job] = (), quarantined: Iterable[DamagedRecord] = ()) -> None:
        super().__init__(jobs)
        self.quarantined: list[DamagedRecord] = list(quarantined)


class JobChanges(TypedDict, total=False):
    """Fields a transition or update may change (state, version, times and lease are the store's)."""

    channel_id: str | None
    thread_ts: str | None
    status_ts: str | None
    file_name: str
    size_bytes: int | None
    sha256: str | None
    staging_key: str | None
    row_count: int | None
    upstream_parts: tuple[UpstreamPart, ...]
    attempts: int
    last_error: str | None
    target_identity: str | None
    upstream_status: str | None
    unknown_status_reads: int
    status_unreadable_since: datetime | None
    notified: bool
    notice_claimed_by: str | None
    notice_claimed_at: datetime | None
    approver: str | None
    needs_approval: bool
    needs_confirmation: bool
    confirmed_by: str | None
    gate_key: str | None


CHANGEABLE_FIELDS: frozenset[str] = frozenset(JobChanges.__annotations__)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of the audit trail: a job's state changed (or the job was created: from_state None)."""

    job_id: str
    table: str
    seq: int  # the job version the change produced; orders a job's history
    at: datetime
    actor: str
    from_state: JobState | None
    to_state: JobState
    reason: str
    expires_at: int | None = None  # the job's: history lives exactly as long as its job


@dataclass(frozen=True, slots=True)
class TableGate:
    """One per table: which job may call the upstream for it now, and when the last call went out."""

    table: str
    version: int
    holder_job_id: str | None = None
    lease_expires_at: datetime | None = None
    last_call_at: datetime | None = None

    def held_by_other(self, job_id: str, now: datetime) -> bool:
        return (
            self.holder_job_id is not None
            and self.holder_job_id != job_id
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The answer of `acquire_table_gate`. Not acquired: `reason` says why, `retry_at` when to try."""

    acquired: bool
    table: str
    reason: str  # "acquired" | "taken_over" | "held" | "spacing"
    holder_job_id: str | None
    retry_at: datetime | None = None
    previous_holder_job_id: str | None = None
    gate: TableGate | None = field(default=None, compare=False)


JOB_TIME_FIELDS = frozenset(
    {
        "created_at",
        "updated_at",
        "finished_at",
        "next_check_at",
        "lease_expires_at",
        "upload_started_at",
        "notice_claimed_at",
        "status_unreadable_since",
    }
)


def job_to_record(job: Job) -> dict[str, Any]:
    """The plain form of a job: str/int/bool/list values, None for absent, times in microseconds."""
    record: dict[str, Any] = {}
    for f in fields(job):
        value = getattr(job, f.name)
        if value is None:
            record[f.name] = None
        elif f.name in JOB_TIME_FIELDS:
            record[f.name] = to_micros(value)
        elif f.name == "state":
            record[f.name] = str(value)
        elif f.name == "upstream_parts":
            record[f.name] = [
                {"index": p.index, "count": p.count, "upstream_job_id": p.upstream_job_id, "status": p.status}
                for p in value
            ]
        else:
            record[f.name] = value
    return record


_INT_FIELDS = frozenset({"version", "size_bytes", "row_count", "attempts", "expires_at", "unknown_status_reads"})
_BOOL_FIELDS = frozenset({"notified", "needs_approval", "needs_confirmation"})
_REQUIRED_FIELDS = tuple(f.name for f in fields(Job) if f.default is MISSING)


def job_from_record(record: Mapping[str, Any], *, key: str | None = None) -> Job:
    """The job of a stored record; `DamagedRecord` (naming `key` and what is wrong) when a field
    is missing, mistyped or out of range: an unknown state, a part without its keys."""
    name = key or f"JOB#{record.get('job_id', '?')}"
    try:
        return _read_job(record)
    except _Unreadable as exc:
        raise DamagedRecord(name, str(exc)) from None


class _Unreadable(ValueError):
    pass


def _integer(field_name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Unreadable(f"{field_name} is {type(value).__name__} {value!r}, not a whole number")
    try:
        return int(value)
    except ValueError:
        raise _Unreadable(f"{field_name} is {value!r}, not a whole number") from None


def _read_part(position: int, part: Any) -> UpstreamPart:
    if not isinstance(part, Mapping):
        raise _Unreadable(f"upstream_parts[{position}] is {type(part).__name__}, not a part")
    missing = [k for k in ("index", "count", "upstream_job_id") if part.get(k) is None]
    if missing:
        raise _Unreadable(f"upstream_parts[{position}] lacks {', '.join(missing)}")
    status = part.get("status")
    return UpstreamPart(
        index=_integer(f"upstream_parts[{position}].index", part["index"]),
        count=_integer(f"upstream_parts[{position}].count", part["count"]),
        upstream_job_id=str(part["upstream_job_id"]),
        status=None if status is None else str(status),
    )


def _read_job(record: Mapping[str, Any]) -> Job:
    missing = [n for n in _REQUIRED_FIELDS if record.get(n) is None]
    if missing:
        raise _Unreadable(f"missing {', '.join(missing)}")
    values: dict[str, Any] = {}
    for f in fields(Job):
        value = record.get(f.name)
        if value is None:
            continue
        if f.name in JOB_TIME_FIELDS:
            values[f.name] = from_micros(_integer(f.name, value))
        elif f.name == "state":
            try:
                values[f.name] = JobState(value)
            except ValueError:
                raise _Unreadable(f"state {value!r} is not a job state") from None
        elif f.name == "upstream_parts":
            if not isinstance(value, list | tuple):
                raise _Unreadable(f"upstream_parts is {type(value).__name__}, not a list")
            values[f.name] = tuple(_read_part(i, p) for i, p in enumerate(value))
        elif f.name in _INT_FIELDS:
            values[f.name] = _integer(f.name, value)
        elif f.name in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise _Unreadable(f"{f.name} is {value!r}, not true or false")
            values[f.name] = value
        else:
            if not isinstance(value, str):
                raise _Unreadable(f"{f.name} is {type(value).__name__} {value!r}, not text")
            values[f.name] = value
    return Job(**values)
