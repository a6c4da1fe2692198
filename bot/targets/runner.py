"""Send a normalized file to its table and, when asked, wait for the upstream job(s) to end.

Used by `tablebot upload` (pipelines, no Slack). D·engage files larger than one request go as
parts, each after the previous part's job is done and at least the table spacing later; a part is
never resent (an appended table would get its rows twice), so a failure names the parts applied.

While waiting: a status read that fails transiently (404 right after creation, 5xx, `code != 0`,
an HTML page, no answer) is tolerated for the target's `status_grace_seconds` before the job is
called failed, with what was seen; a status word the bot does not know is kept verbatim, and
after `unknown_status_reads` reads the user is told (never a silent wait until the timeout). A
`429` on sending waits for the vendor's `Retry-After` (or its own rule) within the timeout, and
ends as `rate_limited`, never as `unreachable`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from bot.config import TableConfig
from bot.errors import UpstreamError
from bot.targets.base import (
    TRANSIENT_KINDS,
    Clock,
    Sleep,
    TargetClient,
    UpstreamJob,
    UpstreamStatus,
)

Outcome = Literal["done", "started", "failed", "timed_out", "unreachable", "rate_limited"]
Progress = Callable[[str], None]


@dataclass
class JobReport:
    job: UpstreamJob
    status: UpstreamStatus | None = None


@dataclass
class UploadResult:
    outcome: Outcome
    jobs: list[JobReport] = field(default_factory=list)
    message: str | None = None
    may_have_started: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.outcome,
            "message": self.message,
            "may_have_started": self.may_have_started,
            "jobs": [
                {
                    "job_id": r.job.job_id,
                    "part": r.job.part,
                    "parts": r.job.parts,
                    "state": r.status.state if r.status else "running",
                    # The vendor's last word, verbatim, also when the bot did not know it.
                    "upstream_status": r.status.raw_status if r.status else None,
                    "upstream_status_known": r.status.known if r.status else None,
                    "reason": r.status.reason if r.status else None,
                }
                for r in self.jobs
            ],
        }


def run_upload(
    client: TargetClient,
    table: TableConfig,
    path: Path,
    *,
    wait: bool,
    poll_interval: float = 5.0,
    timeout: float = 3600.0,
    progress: Progress = lambda _: None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> UploadResult:
    deadline = clock() + timeout
    result = UploadResult(outcome="started")
    try:
        sources = list(client.parts(table, path))
    except UpstreamError as exc:
        return _stopped(result, exc, 1, 1)
    parts = len(sources)
    for number, source in enumerate(sources, start=1):
        label = f"part {number}/{parts}" if parts > 1 else "upload"
        progress(f"{label}: sending {source.size:,} bytes to {table.target.name}/{table.alias}")
        while True:
            try:
                job = client.start_upload(table, source, part=number, parts=parts)
                break
            except UpstreamError as exc:
                # A 429 applied nothing: wait as the vendor asks, if that fits in the timeout.
                if exc.kind == "rate_limited" and exc.retry_after is not None and clock() + exc.retry_after < deadline:
                    progress(f"{label}: {exc.message}; waiting {exc.retry_after:.0f} s")
                    sleep(exc.retry_after)
                    continue
                return _stopped(result, exc, number, parts)
        report = JobReport(job)
        result.jobs.append(report)
        progress(f"{label}: upstream job {job.job_id} started")
        if number == parts and not wait:
            return result
        try:
            ended = _wait(
                client,
                report,
                label=label,
                poll_interval=poll_interval,
                deadline=deadline,
                progress=progress,
                clock=clock,
                sleep=sleep,
            )
        except UpstreamError as exc:
            return _stopped(result, exc, number, parts, job_started=True)
        if not ended:
            last = report.status
            result.outcome = "timed_out"
            result.may_have_started = True
            seen = ""
            if last is not None:
                seen = f"; its last status was {last.raw_status!r}" + (
                    ", a word the bot does not know" if not last.known else ""
                )
            result.message = (
                f"{label}: upstream job {job.job_id} did not end within {timeout:g} s{seen}; it may still finish"
                + (f"; parts {number + 1}..{parts} were not sent" if number < parts else "")
            )
            return result
        assert report.status is not None
        if report.status.state == "failed":
            result.outcome = "failed"
            result.may_have_started = True
            applied = f"; parts 1..{number - 1} were applied, parts {number}..{parts} not" if number > 1 else ""
            result.message = f"{label}: upstream job {job.job_id} failed: {report.status.reason}{applied}"
            return result
    result.outcome = "done"
    return result


def _wait(
    client: TargetClient,
    report: JobReport,
    *,
    label: str,
    poll_interval: float,
    deadline: float,
    progress: Progress,
    clock: Clock,
    sleep: Sleep,
) -> bool:
    """Read the job until it ends (True) or the deadline passes (False); `report.status` holds the
    last status read. Raises the status read's error once it outlasted the grace period."""
    job = report.job
    last_raw: str | None = None
    unknown_reads = 0
    unreadable_since: float | None = None
    while True:
        try:
            status = client.job_status(job)
        except UpstreamError as exc:
            if exc.kind not in TRANSIENT_KINDS:
                raise
            now = clock()
            if unreadable_since is None:
                unreadable_since = now
                progress(f"{label}: {exc.message}; still checking for up to {client.status_grace_seconds:g} s")
            if now - unreadable_since >= client.status_grace_seconds:
                raise UpstreamError(
                    exc.kind,
                    f"the status of upstream job {job.job_id} could not be read for "
                    f"{now - unreadable_since:.0f} s (the grace period is {client.status_grace_seconds:g} s); "
                    f"last seen: {exc.message}. The job may still have run: check the table",
                    status_code=exc.status_code,
                    retry_after=exc.retry_after,
                ) from None
        else:
            unreadable_since = None
            report.status = status
            if status.raw_status != last_raw:
                progress(f"{label}: upstream job {job.job_id} is {status.raw_status or status.state}")
                last_raw = status.raw_status
                unknown_reads = 0
            if status.state != "running":
                return True
            if not status.known:
                unknown_reads += 1
                if unknown_reads == client.unknown_status_reads:
                    until = datetime.now(UTC) + timedelta(seconds=max(0.0, deadline - clock()))
                    progress(
                        f"{label}: {client.label} answers status {status.raw_status!r}, which the bot does not "
                        f"know; still checking until {until:%H:%M:%S} UTC (--timeout)"
                    )
        if clock() + poll_interval > deadline:
            return False
        sleep(poll_interval)


def _stopped(
    result: UploadResult, exc: UpstreamError, number: int, parts: int, *, job_started: bool = False
) -> UploadResult:
    if exc.kind == "rate_limited":
        result.outcome = "rate_limited"
    elif exc.kind in ("unreachable", "server"):
        result.outcome = "unreachable"
    else:
        result.outcome = "failed"
    prefix = f"part {number}/{parts}: " if parts > 1 else ""
    applied = f" (parts 1..{number - 1} were applied)" if number > 1 and not job_started else ""
    result.message = f"{prefix}{exc.message}{applied}"
    result.may_have_started = exc.may_have_started or job_started
    return result
