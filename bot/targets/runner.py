"""Send a normalized file to its table and, when asked, wait for the upstream job(s) to end.

Used by `tablebot upload` (pipelines, no Slack). D·engage files larger than one request go as
parts, each after the previous part's job is done and at least the table spacing later; a part is
never resent (an appended table would get its rows twice), so a failure names the parts applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bot.config import TableConfig
from bot.errors import UpstreamError
from bot.targets.base import ByteSource, Clock, FileSource, Sleep, UpstreamJob, UpstreamStatus
from bot.targets.bigpanda import BigPandaClient
from bot.targets.dengage import DengageClient

Outcome = Literal["done", "started", "failed", "timed_out", "unreachable"]
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
                    "upstream_status": r.status.raw_status if r.status else None,
                    "reason": r.status.reason if r.status else None,
                }
                for r in self.jobs
            ],
        }


def run_upload(
    client: BigPandaClient | DengageClient,
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
    sources: list[ByteSource] = [FileSource(path)]
    if isinstance(client, DengageClient):
        try:
            sources = list(client.plan(table, path).sources())
        except UpstreamError as exc:
            return _stopped(result, exc, 1, 1)
    parts = len(sources)
    for number, source in enumerate(sources, start=1):
        label = f"part {number}/{parts}" if parts > 1 else "upload"
        progress(f"{label}: sending {source.size:,} bytes to {table.target.name}/{table.alias}")
        try:
            job = client.start_upload(table, source, part=number, parts=parts)
        except UpstreamError as exc:
            return _stopped(result, exc, number, parts)
        report = JobReport(job)
        result.jobs.append(report)
        progress(f"{label}: upstream job {job.job_id} started")
        if number == parts and not wait:
            return result
        try:
            report.status = _wait(
                client,
                job,
                label=label,
                poll_interval=poll_interval,
                deadline=deadline,
                progress=progress,
                clock=clock,
                sleep=sleep,
            )
        except UpstreamError as exc:
            return _stopped(result, exc, number, parts, job_started=True)
        if report.status is None:
            result.outcome = "timed_out"
            result.message = (
                f"{label}: upstream job {job.job_id} did not end within {timeout:g} s; it may still finish"
                + (f"; parts {number + 1}..{parts} were not sent" if number < parts else "")
            )
            return result
        if report.status.state == "failed":
            result.outcome = "failed"
            applied = f"; parts 1..{number - 1} were applied, parts {number}..{parts} not" if number > 1 else ""
            result.message = f"{label}: upstream job {job.job_id} failed: {report.status.reason}{applied}"
            return result
    result.outcome = "done"
    return result


def _wait(
    client: BigPandaClient | DengageClient,
    job: UpstreamJob,
    *,
    label: str,
    poll_interval: float,
    deadline: float,
    progress: Progress,
    clock: Clock,
    sleep: Sleep,
) -> UpstreamStatus | None:
    """The job's final status, or None when the deadline passed first."""
    last_raw = None
    while True:
        status = client.job_status(job)
        if status.raw_status != last_raw:
            progress(f"{label}: upstream job {job.job_id} is {status.raw_status or status.state}")
            last_raw = status.raw_status
        if status.state != "running":
            return status
        if clock() + poll_interval > deadline:
            return None
        sleep(poll_interval)


def _stopped(
    result: UploadResult, exc: UpstreamError, number: int, parts: int, *, job_started: bool = False
) -> UploadResult:
    result.outcome = "failed" if exc.kind in ("rejected", "auth") else "unreachable"
    prefix = f"part {number}/{parts}: " if parts > 1 else ""
    applied = f" (parts 1..{number - 1} were applied)" if number > 1 and not job_started else ""
    result.message = f"{prefix}{exc.message}{applied}"
    result.may_have_started = exc.may_have_started or job_started
    return result
