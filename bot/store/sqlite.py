"""The embedded job store (local runs, the demo): stdlib sqlite3, a file or ":memory:".

Same contract as the DynamoDB store. Every write is one `BEGIN IMMEDIATE` transaction that reads
the row, checks the expected state and version, and writes the job with its history line, so it
is atomic across threads (one connection per store, behind a lock) and across processes on one
machine (SQLite's write lock; WAL journal for files). Due jobs come from a partial index on
`due_us` (NULL unless the job has work due, or an ending notice pending): the same sparse
index idea as the DynamoDB GSI.
Expired rows are deleted by `purge_expired`, which the local runner calls from time to time.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot.errors import DamagedRecord, JobConflict, JobNotFound, StoreUnavailable
from bot.store.model import (
    Clock,
    DueJobs,
    GateDecision,
    HistoryEntry,
    Job,
    JobChanges,
    NewJob,
    TableGate,
    as_utc,
    from_micros,
    job_from_record,
    job_to_record,
    to_micros,
    utc_now,
)
from bot.store.rules import (
    DEFAULT_RETENTION,
    UNSET,
    NextCheck,
    book_rate_slot,
    check_lease_acquirable,
    decide_gate,
    new_job_id,
    plan_acquire_lease,
    plan_create,
    plan_quarantine,
    plan_release_lease,
    plan_transition,
    plan_update,
)
from bot.store.states import TERMINAL_STATES, JobState

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    delivery_key TEXT NOT NULL,
    table_name TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    due_us INTEGER,
    lease_expires_us INTEGER,
    expires_at INTEGER,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (due_us) WHERE due_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_table ON jobs (table_name, created_us);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_us);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    expires_at INTEGER
);
CREATE TABLE IF NOT EXISTS history (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    table_name TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    actor TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX IF NOT EXISTS history_by_table ON history (table_name, at_us);
CREATE TABLE IF NOT EXISTS rate_slots (
    rate_key TEXT PRIMARY KEY,
    starts TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    claim_key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gates (
    table_name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    holder_job_id TEXT,
    lease_expires_us INTEGER,
    last_call_us INTEGER
);
"""


class SqliteJobStore:
    """`JobStore` on SQLite. `path` is a file (shared by processes) or ":memory:" (this store only)."""

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        clock: Clock = utc_now,
        retention: timedelta = DEFAULT_RETENTION,
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        self._clock = clock
        self.retention = retention
        self.path = str(path)
        self._lock = threading.RLock()
        # One connection shared by this store's threads (serialized by the lock); autocommit mode so
        # every write is an explicit BEGIN IMMEDIATE ... COMMIT that other processes wait behind.
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout_seconds, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            with self._write() as conn:
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found not in (0, SCHEMA_VERSION):
                    raise StoreUnavailable(
                        f"job store file {self.path} has schema version {found}, this bot knows {SCHEMA_VERSION}: "
                        "use a newer bot or a new file"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _now(self) -> datetime:
        return as_utc(self._clock())

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"job store {self.path} is locked or unreadable: {exc}") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreUnavailable(f"job store {self.path}: the write failed and was rolled back: {exc}") from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"job store {self.path} could not be read: {exc}") from exc

    # -- rows ---------------------------------------------------------------------------------

    @staticmethod
    def _load(conn: sqlite3.Connection, job_id: str) -> Job | None:
        row = conn.execute("SELECT job_id, record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _read(row)

    @staticmethod
    def _job_params(job: Job) -> dict[str, Any]:
        due = job.next_check_at  # a terminal job has one only while its notice is pending (rules)
        return {
            "job_id": job.job_id,
            "delivery_key": job.delivery_key,
            "table_name": job.table,
            "state": str(job.state),
            "version": job.version,
            "created_us": to_micros(job.created_at),
            "due_us": None if due is None else to_micros(due),
            "lease_expires_us": None if job.lease_expires_at is None else to_micros(job.lease_expires_at),
            "expires_at": job.expires_at,
            "record": json.dumps(job_to_record(job), separators=(",", ":")),
        }

    def _save(self, conn: sqlite3.Connection, job: Job, expected_version: int | None) -> None:
        params = self._job_params(job)
        if expected_version is None:
            names = ", ".join(params)
            conn.execute(f"INSERT INTO jobs ({names}) VALUES ({', '.join(':' + n for n in params)})", params)  # noqa: S608 - column names are ours
            return
        sets = ", ".join(f"{n} = :{n}" for n in params if n != "job_id")
        cursor = conn.execute(
            f"UPDATE jobs SET {sets} WHERE job_id = :job_id AND version = :expected",  # noqa: S608 - column names are ours
            {**params, "expected": expected_version},
        )
        # The caller read this row inside the same IMMEDIATE transaction: it cannot have moved.
        assert cursor.rowcount == 1

    @staticmethod
    def _append_history(conn: sqlite3.Connection, entry: HistoryEntry) -> None:
        conn.execute(
            "INSERT INTO history (job_id, seq, table_name, at_us, actor, from_state, to_state, reason, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.job_id,
                entry.seq,
                entry.table,
                to_micros(entry.at),
                entry.actor,
                None if entry.from_state is None else str(entry.from_state),
                str(entry.to_state),
                entry.reason,
                entry.expires_at,
            ),
        )

    @staticmethod
    def _history(row: sqlite3.Row) -> HistoryEntry:
        return HistoryEntry(
            job_id=row["job_id"],
            table=row["table_name"],
            seq=row["seq"],
            at=from_micros(row["at_us"]),
            actor=row["actor"],
            from_state=None if row["from_state"] is None else JobState(row["from_state"]),
            to_state=JobState(row["to_state"]),
            reason=row["reason"],
            expires_at=row["expires_at"],
        )

    def _current_or_conflict(self, conn: sqlite3.Connection, job: Job) -> Job:
        current = self._load(conn, job.job_id)
        if current is None:
            raise JobNotFound(job.job_id)
        if current.version != job.version or current.state != job.state:
            raise JobConflict(current, expected_state=job.state, expected_version=job.version)
        return current

    # -- jobs ---------------------------------------------------------------------------------

    def create_job(self, delivery_key: str, new: NewJob) -> tuple[Job, bool]:
        now = self._now()
        job, entry = plan_create(delivery_key, new, now=now, job_id=new_job_id(now))
        with self._write() as conn:
            row = conn.execute("SELECT job_id FROM deliveries WHERE delivery_key = ?", (delivery_key,)).fetchone()
            if row is not None:
                existing = self._load(conn, row["job_id"])
                if existing is None:
                    raise JobNotFound(row["job_id"], f"delivery {delivery_key} names it but it has expired")
                return existing, False
            conn.execute("INSERT INTO deliveries (delivery_key, job_id) VALUES (?, ?)", (delivery_key, job.job_id))
            self._save(conn, job, None)
            self._append_history(conn, entry)
        return job, True

    def get_job(self, job_id: str) -> Job:
        with self._read() as conn:
            job = self._load(conn, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def transition(
        self,
        job: Job,
        to: JobState,
        *,
        actor: str,
        reason: str,
        changes: JobChanges | Mapping[str, Any] | None = None,
        next_check_at: NextCheck = UNSET,
        release_lease: bool = False,
    ) -> Job:
        new, entry = plan_transition(
            job,
            to,
            now=self._now(),
            actor=actor,
            reason=reason,
            changes=changes,
            next_check_at=next_check_at,
            release_lease=release_lease,
            retention=self.retention,
        )
        with self._write() as conn:
            self._current_or_conflict(conn, job)
            self._save(conn, new, job.version)
            if new.expires_at != job.expires_at:  # ended or reopened: its history and delivery follow
                conn.execute("UPDATE history SET expires_at = ? WHERE job_id = ?", (new.expires_at, job.job_id))
                conn.execute("UPDATE deliveries SET expires_at = ? WHERE job_id = ?", (new.expires_at, job.job_id))
            self._append_history(conn, entry)
        return new

    def update(
        self,
        job: Job,
        *,
        changes: JobChanges | Mapping[str, Any] | None = None,
        next_check_at: NextCheck = UNSET,
        release_lease: bool = False,
    ) -> Job:
        new = plan_update(
            job, now=self._now(), changes=changes, next_check_at=next_check_at, release_lease=release_lease
        )
        with self._write() as conn:
            self._current_or_conflict(conn, job)
            self._save(conn, new, job.version)
        return new

    def due_jobs(
        self, now: datetime | None = None, *, limit: int = 25, states: Collection[JobState] | None = None
    ) -> DueJobs:
        at = to_micros(as_utc(now) if now is not None else self._now())
        only = sorted(str(JobState(s)) for s in states) if states is not None else None
        if only == []:
            return DueJobs()
        known = [str(s) for s in JobState]
        # Rows whose state is not a known one are read too, to be quarantined (never skipped forever).
        in_states = (
            f" AND (state IN ({', '.join('?' * len(only))}) OR state NOT IN ({', '.join('?' * len(known))}))"
            if only
            else ""
        )
        with self._read() as conn:
            rows = conn.execute(
                "SELECT job_id, record, due_us FROM jobs WHERE due_us IS NOT NULL AND due_us <= ?"  # noqa: S608 - placeholders only
                f" AND (lease_expires_us IS NULL OR lease_expires_us <= ?){in_states} ORDER BY due_us, job_id LIMIT ?",
                (at, at, *(only or ()), *(known if only else ()), limit),
            ).fetchall()
        due = DueJobs()
        for row in rows:
            try:
                due.append(_read(row))
            except DamagedRecord as damaged:
                if self._quarantine_damaged(row, damaged):
                    due.quarantined.append(damaged)
        return due

    def _quarantine_damaged(self, row: sqlite3.Row, damaged: DamagedRecord) -> bool:
        """Take an unreadable row out of the due index, as read (a conditional write): True if this
        call did it. A row that still parses as a JSON object gets the reason in its record."""
        record = row["record"]
        try:
            parsed = json.loads(record)
        except ValueError:
            parsed = None
        marked = (
            json.dumps({**parsed, "quarantined": f"damaged record: {damaged.reason}"}, separators=(",", ":"))
            if isinstance(parsed, dict)
            else record
        )
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET due_us = NULL, record = ? WHERE job_id = ? AND record = ? AND due_us = ?",
                (marked, row["job_id"], record, row["due_us"]),
            )
            won = cursor.rowcount == 1
        if won:
            log.debug("quarantined job record %s: %s", damaged.key, damaged.reason)  # the caller reports it
        return won

    def next_due_at(self) -> datetime | None:
        with self._read() as conn:
            row = conn.execute("SELECT MIN(due_us) AS due FROM jobs WHERE due_us IS NOT NULL").fetchone()
        return None if row is None or row["due"] is None else from_micros(row["due"])

    def open_jobs(self, *, limit: int = 500) -> list[Job]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT job_id, record FROM jobs WHERE due_us IS NOT NULL ORDER BY due_us, job_id LIMIT ?", (limit,)
            ).fetchall()
        return [job for job in _readable(rows) if not job.is_terminal]

    def set_quarantine(self, job: Job, *, actor: str, reason: str | None) -> Job:
        new, entry = plan_quarantine(job, now=self._now(), actor=actor, reason=reason, retention=self.retention)
        with self._write() as conn:
            self._current_or_conflict(conn, job)
            self._save(conn, new, job.version)
            self._append_history(conn, entry)
        return new

    # -- leases -------------------------------------------------------------------------------

    def acquire_lease(self, job: Job, owner: str, ttl_seconds: float) -> Job:
        now = self._now()
        with self._write() as conn:
            current = self._load(conn, job.job_id)
            if current is None:
                raise JobNotFound(job.job_id)
            check_lease_acquirable(current, owner, now)
            new = plan_acquire_lease(current, owner, ttl_seconds, now)
            self._save(conn, new, current.version)
        return new

    def renew_lease(self, job: Job, owner: str, ttl_seconds: float) -> Job:
        return self.acquire_lease(job, owner, ttl_seconds)

    def release_lease(self, job: Job, owner: str) -> Job:
        now = self._now()
        with self._write() as conn:
            current = self._load(conn, job.job_id)
            if current is None:
                raise JobNotFound(job.job_id)
            new = plan_release_lease(current, owner, now)
            if new is None:
                return current
            self._save(conn, new, current.version)
        return new

    # -- shared rate limits -------------------------------------------------------------------

    def reserve_rate_slot(self, key: str, *, limit: int, window_seconds: float) -> float:
        """One `BEGIN IMMEDIATE` transaction: every process on this file books in turn."""
        window_us = max(1, round(window_seconds * 1_000_000))
        with self._write() as conn:
            now_us = to_micros(self._now())
            row = conn.execute("SELECT starts FROM rate_slots WHERE rate_key = ?", (key,)).fetchone()
            starts = [int(v) for v in json.loads(row["starts"])] if row else []
            at, kept = book_rate_slot(starts, limit=limit, window_us=window_us, now_us=now_us)
            conn.execute(
                "INSERT INTO rate_slots (rate_key, starts) VALUES (?, ?)"
                " ON CONFLICT (rate_key) DO UPDATE SET starts = excluded.starts",
                (key, json.dumps(kept)),
            )
        return at / 1_000_000

    # -- table gate ---------------------------------------------------------------------------

    @staticmethod
    def _gate(row: sqlite3.Row | None, table: str) -> TableGate | None:
        if row is None:
            return None
        return TableGate(
            table=table,
            version=row["version"],
            holder_job_id=row["holder_job_id"],
            lease_expires_at=None if row["lease_expires_us"] is None else from_micros(row["lease_expires_us"]),
            last_call_at=None if row["last_call_us"] is None else from_micros(row["last_call_us"]),
        )

    def get_table_gate(self, table: str) -> TableGate | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM gates WHERE table_name = ?", (table,)).fetchone()
        return self._gate(row, table)

    def acquire_table_gate(
        self, table: str, job_id: str, *, min_spacing_seconds: float = 0.0, lease_seconds: float = 3600.0
    ) -> GateDecision:
        now = self._now()
        with self._write() as conn:
            current = self._gate(conn.execute("SELECT * FROM gates WHERE table_name = ?", (table,)).fetchone(), table)

            def holder_finished(holder: str) -> bool:
                try:
                    held_by = self._load(conn, holder)
                except DamagedRecord:
                    return True  # an unreadable holder never sends again: its gate is free
                return held_by is None or held_by.state in TERMINAL_STATES or held_by.quarantined is not None

            decision = decide_gate(
                current,
                table=table,
                job_id=job_id,
                now=now,
                min_spacing_seconds=min_spacing_seconds,
                lease_seconds=lease_seconds,
                holder_finished=holder_finished,
            )
            gate = decision.gate
            if decision.acquired and gate is not None:
                assert gate.lease_expires_at is not None and gate.last_call_at is not None
                conn.execute(
                    "INSERT INTO gates (table_name, version, holder_job_id, lease_expires_us, last_call_us)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (table_name) DO UPDATE SET version = excluded.version,"
                    " holder_job_id = excluded.holder_job_id, lease_expires_us = excluded.lease_expires_us,"
                    " last_call_us = excluded.last_call_us",
                    (table, gate.version, job_id, to_micros(gate.lease_expires_at), to_micros(gate.last_call_at)),
                )
        return decision

    def renew_table_gate(self, table: str, job_id: str, *, lease_seconds: float = 3600.0) -> bool:
        until = to_micros(self._now() + timedelta(seconds=lease_seconds))
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE gates SET lease_expires_us = ?, version = version + 1 WHERE table_name = ? AND holder_job_id = ?",
                (until, table, job_id),
            )
            return cursor.rowcount == 1

    def release_table_gate(self, table: str, job_id: str) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE gates SET holder_job_id = NULL, lease_expires_us = NULL, version = version + 1"
                " WHERE table_name = ? AND holder_job_id = ?",
                (table, job_id),
            )
            return cursor.rowcount == 1

    # -- history and listings -----------------------------------------------------------------

    def history_for_job(self, job_id: str) -> list[HistoryEntry]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM history WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
        return [self._history(r) for r in rows]

    def history_for_table(self, table: str, *, limit: int = 50) -> list[HistoryEntry]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM history WHERE table_name = ? ORDER BY at_us DESC, job_id DESC, seq DESC LIMIT ?",
                (table, limit),
            ).fetchall()
        return [self._history(r) for r in reversed(rows)]

    def recent_jobs(self, table: str | None = None, *, limit: int = 20) -> list[Job]:
        with self._read() as conn:
            if table is None:
                rows = conn.execute(
                    "SELECT job_id, record FROM jobs ORDER BY created_us DESC, job_id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT job_id, record FROM jobs WHERE table_name = ? ORDER BY created_us DESC, job_id DESC LIMIT ?",
                    (table, limit),
                ).fetchall()
        return list(_readable(rows))

    def claim_once(self, key: str, value: str, *, ttl_seconds: float) -> tuple[bool, str]:
        now = int(self._now().timestamp())
        with self._write() as conn:
            row = conn.execute("SELECT value FROM claims WHERE claim_key = ? AND expires_at > ?", (key, now)).fetchone()
            if row is not None:
                return False, str(row["value"])
            conn.execute(
                "INSERT OR REPLACE INTO claims (claim_key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, now + max(1, int(ttl_seconds))),
            )
        return True, value

    def purge_expired(self, now: datetime | None = None) -> int:
        epoch = int((as_utc(now) if now is not None else self._now()).timestamp())
        with self._write() as conn:
            removed = 0
            for statement in (
                "DELETE FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ?",
                "DELETE FROM history WHERE expires_at IS NOT NULL AND expires_at <= ?",
                "DELETE FROM deliveries WHERE expires_at IS NOT NULL AND expires_at <= ?",
                "DELETE FROM claims WHERE expires_at <= ?",
            ):
                removed += conn.execute(statement, (epoch,)).rowcount
        return removed


def _read(row: sqlite3.Row) -> Job:
    """The job of a row; `DamagedRecord` (keyed `JOB#<id>`) when its record cannot be read."""
    key = f"JOB#{row['job_id']}"
    try:
        record = json.loads(row["record"])
    except json.JSONDecodeError as exc:
        raise DamagedRecord(key, f"the record is not JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise DamagedRecord(key, "the record is not a JSON object")
    return job_from_record(record, key=key)


def _readable(rows: Iterable[sqlite3.Row]) -> Iterator[Job]:
    """The jobs of the rows that can be read; the others are logged and left out of a listing."""
    for row in rows:
        try:
            yield _read(row)
        except DamagedRecord as damaged:
            log.warning("job record %s left out of a listing: %s", damaged.key, damaged.reason)
