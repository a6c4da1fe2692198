"""The operators' commands: `tablebot jobs | status | quarantine | replay`, against the store the
settings name (DynamoDB when `TABLEBOT_JOBS_TABLE` is set, with the functions' settings; else
the embedded SQLite store at `TABLEBOT_STORE_PATH`).

- `jobs [--table T] [--open | --quarantined]`: the latest jobs (or those in flight, or those
  quarantined), newest first;
- `status JOB`: the job as stored and its whole history;
- `quarantine JOB [--reason TEXT]`: take a job out of the poller's hands (it stays as it is,
  out of the due index, its table gate freed) until `replay`;
- `replay JOB`: give a quarantined job back to the poller (due now). A record that still cannot
  be read is refused: repair it first (docs/operations.md).

Each refuses what the job's state does not allow, with exit code 2 (as usage errors).
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.errors import DamagedRecord, Refused
from bot.settings import Settings

if TYPE_CHECKING:  # the store (boto3) is imported only when an operator's command runs
    from bot.store import HistoryEntry, Job, JobStore

Command = Callable[[argparse.Namespace, Settings], int]


def add_ops_commands(sub: Any) -> None:
    """Add the operators' subcommands to the `tablebot` parser."""
    p = sub.add_parser("jobs", help="list the latest jobs (or those in flight) of the configured store")
    p.add_argument("--table", help="only this table alias")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--open", action="store_true", help="only jobs in flight (not ended), earliest next check first")
    shown.add_argument(
        "--quarantined", action="store_true", help="only quarantined jobs (among the latest 500; damaged ones: the log)"
    )
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = sub.add_parser("status", help="one job as stored, and its whole history")
    p.add_argument("job_id")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = sub.add_parser("quarantine", help="take a job out of the poller's hands until `tablebot replay`")
    p.add_argument("job_id")
    p.add_argument("--reason", default="quarantined by hand", help="why (kept in the job and its history)")

    p = sub.add_parser("replay", help="give a quarantined job back to the poller (due now)")
    p.add_argument("job_id")


def _store(settings: Settings) -> JobStore:
    from bot.wiring import store_from_settings

    return store_from_settings(settings)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:operator"


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}Z"


def _flags(job: Job) -> str:
    flags = []
    if job.quarantined is not None:
        flags.append("QUARANTINED")
    if job.notice_pending:
        flags.append("notice pending")
    if job.lease_owner:
        flags.append(f"leased by {job.lease_owner}")
    return ", ".join(flags)


def _plain(job: Job) -> dict[str, Any]:
    from bot.store.model import job_to_record

    record = job_to_record(job)
    for name, value in list(record.items()):
        if isinstance(value, int) and name.endswith("_at") and name != "expires_at":
            record[name] = _when(getattr(job, name))
    return record


def _history_line(entry: HistoryEntry) -> str:
    change = (
        str(entry.to_state) if entry.from_state in (None, entry.to_state) else f"{entry.from_state} → {entry.to_state}"
    )
    return f"{_when(entry.at)}  #{entry.seq:<3} {change:<30} {entry.actor:<28} {entry.reason}"


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if args.open:
        jobs = [j for j in store.open_jobs() if args.table is None or j.table == args.table][: args.limit]
    elif args.quarantined:
        jobs = [j for j in store.recent_jobs(args.table, limit=500) if j.quarantined is not None][: args.limit]
    else:
        jobs = store.recent_jobs(args.table, limit=args.limit)
    if args.format == "json":
        print(json.dumps([_plain(j) for j in jobs], indent=2))
        return 0
    if not jobs:
        which = " in flight" if args.open else " quarantined" if args.quarantined else ""
        print("no jobs" + (f" of table {args.table}" if args.table else "") + which)
        return 0
    print(f"{'job':<30} {'state':<18} {'table':<16} {'by':<14} {'updated':<21} file")
    for job in jobs:
        flags = _flags(job)
        print(
            f"{job.job_id:<30} {job.state:<18} {job.table:<16} {job.requested_by:<14} "
            f"{_when(job.updated_at):<21} {job.file_name}" + (f"  [{flags}]" if flags else "")
        )
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    damaged: DamagedRecord | None = None
    job: Job | None = None
    try:
        job = store.get_job(args.job_id)
    except DamagedRecord as exc:
        damaged = exc
    history = store.history_for_job(args.job_id)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "job": None if job is None else _plain(job),
                    "damaged": None if damaged is None else damaged.reason,
                    "history": [
                        {
                            "seq": h.seq,
                            "at": _when(h.at),
                            "actor": h.actor,
                            "from": None if h.from_state is None else str(h.from_state),
                            "to": str(h.to_state),
                            "reason": h.reason,
                        }
                        for h in history
                    ],
                },
                indent=2,
            )
        )
        return 0
    if damaged is not None:
        print(f"job {args.job_id}: THE RECORD CANNOT BE READ: {damaged.reason}")
    if job is not None:
        print(f"job {job.job_id}: {job.state}" + (f"  [{_flags(job)}]" if _flags(job) else ""))
        for name, value in _plain(job).items():
            if value not in (None, [], False) and name not in ("job_id", "state"):
                print(f"  {name:<20} {value}")
    print("history:")
    for entry in history:
        print(f"  {_history_line(entry)}")
    return 0


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from bot.service.due import WATCHED_STATES
    from bot.service.notices import release_gate_keys

    store = _store(settings)
    job = store.get_job(args.job_id)  # a damaged record: DamagedRecord (it is quarantined by the poller)
    if job.quarantined is not None:
        raise Refused(f"job {job.job_id} is already quarantined ({job.quarantined}); `tablebot replay` gives it back")
    if job.is_terminal and not job.notice_pending:
        raise Refused(
            f"job {job.job_id} has ended ({job.state}) and its notice is posted: the poller has nothing to do with it"
        )
    if job.state in WATCHED_STATES:
        raise Refused(
            f"job {job.job_id} is {job.state}: it belongs to the Slack front end (checking or waiting for "
            "approval); cancel it in Slack instead"
        )
    held = store.set_quarantine(job, actor=_actor(), reason=args.reason)
    freed = release_gate_keys(store, held, () if job.gate_key is None else (job.gate_key,))
    print(f"job {held.job_id} quarantined ({held.state}): the poller leaves it alone until `tablebot replay`")
    if freed:
        print(f"its table gate {', '.join(freed)} was released")
    running = [p.upstream_job_id for p in held.upstream_parts if p.status in ("running", "sending")]
    if running:
        print(f"note: upstream job(s) {', '.join(running)} may still be running at the vendor")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    try:
        job = store.get_job(args.job_id)
    except DamagedRecord as exc:
        raise Refused(
            f"job {args.job_id} still cannot be read ({exc.reason}): repair or delete the record first "
            "(docs/operations.md, Quarantined records)"
        ) from None
    if job.quarantined is None:
        raise Refused(f"job {job.job_id} is not quarantined ({job.state}): there is nothing to replay")
    back = store.set_quarantine(job, actor=_actor(), reason=None)
    due = "due now" if back.next_check_at is not None else "nothing left to do for it"
    print(f"job {back.job_id} given back to the poller ({back.state}, {due})")
    return 0


OPS_COMMANDS: Mapping[str, Command] = {
    "jobs": cmd_jobs,
    "status": cmd_status,
    "quarantine": cmd_quarantine,
    "replay": cmd_replay,
}
