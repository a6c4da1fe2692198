"""Sending through the table gate: a queued job's file (or its next part) goes upstream, once.

One worker does all upstream work
---------------------------------
`queued` → take the table gate (one upload in flight per upstream table, and D·engage's
one-call-a-minute spacing) → move to `uploading` BEFORE sending, with a placeholder part whose
status is `sending` → send the staged normalized file → record the upstream job id and move to
`submitted` (both in one conditional write). A multi-part D·engage upload sends part k+1 from
`submitted`, after part k is `done` and the gate's spacing allows, with the same placeholder
written before the request.

A crash between "request sent" and "job id recorded" leaves the placeholder `sending` behind.
The next worker (after the lease expired) finds it and decides by what a second send would do:
- BigPanda replaces the whole table, and a D·engage table with a primary key is upserted, so
  sending the same bytes again is idempotent in effect: it is re-sent.
- A D·engage table without a primary key is appended to: a second send could add the rows
  twice. It is NOT re-sent: the job fails with a message saying the part may have been applied,
  to check the table upstream, and to press Retry only deliberately.
A request that provably never reached the vendor (refused connection, `429`) removes the
placeholder again and is sent on a later run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bot.config import TableConfig
from bot.errors import StagedKeyNotFound, StagingError, UpstreamError
from bot.observability import METRICS
from bot.service.gate import gate_key, spacing_seconds
from bot.service.notices import TARGET_LABELS, Ending, ending_for, finish
from bot.service.parts import NO_JOB_ID, REFUSED, RUNNING, SENDING, UNKNOWN, applied_note, part_label
from bot.service.worker import Step, Worker
from bot.staging.layout import normalized_key
from bot.store import Job, JobState, UpstreamPart
from bot.targets import identity_changes, identity_json
from bot.targets.base import TargetClient

log = logging.getLogger(__name__)

S = JobState


def send_next(
    worker: Worker, job: Job, table: TableConfig, client: TargetClient, parts: tuple[UpstreamPart, ...]
) -> Step:
    """Send the part after `parts` through the table gate, or wait for the gate."""
    index = len(parts) + 1
    changed = identity_check(worker, job, table, client, parts)
    if changed is not None:
        return changed
    decision = worker.store.acquire_table_gate(
        gate_key(table),
        job.job_id,
        min_spacing_seconds=spacing_seconds(client),
        lease_seconds=worker.settings.gate_lease_seconds,
    )
    if not decision.acquired:
        retry_at = decision.retry_at or worker.later(worker.settings.gate_recheck_seconds)
        if decision.reason == "held":
            retry_at = min(retry_at, worker.later(worker.settings.gate_recheck_seconds))
        worker.store.update(job, changes={"upstream_parts": parts}, next_check_at=retry_at, release_lease=True)
        return "waiting"
    with tempfile.TemporaryDirectory(prefix="tablebot-send-", dir=worker.work_dir) as tmp:
        path = Path(tmp) / "normalized.csv"
        key = job.staging_key or normalized_key(job.table, job.job_id)
        try:
            with worker.staging.open(key) as src, path.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
        except StagedKeyNotFound:
            reason = (
                f"the staged file of this upload is gone ({key}: expired or deleted), so nothing was sent; "
                "share the file again"
            )
            return refuse(worker, job, table, parts, index=index, count=index, reason=reason)
        except (StagingError, OSError) as exc:
            return later_after_error(worker, job, parts, f"staging could not be read: {exc}")
        try:
            sources = client.parts(table, path)
        except UpstreamError as exc:
            return refuse(worker, job, table, parts, index=index, count=index, reason=exc.message)
        count = len(sources)
        if index > count:  # cannot happen with the same file and settings; do not send past the end
            return refuse(
                worker,
                job,
                table,
                parts,
                index=index,
                count=count,
                reason=f"the file now has {count} parts, not {index}",
            )
        placeholder = UpstreamPart(index=index, count=count, upstream_job_id=NO_JOB_ID, status=SENDING)
        marked = (*parts, placeholder)
        # Written BEFORE the request: a crash after it leaves `sending` for the next worker to judge.
        # The gate's key goes with it, so every ending releases this gate (`notices.finish`).
        if job.state is S.QUEUED:
            job = worker.store.transition(
                job,
                S.UPLOADING,
                actor=worker.worker_id,
                reason=f"sending {part_label(index, count)} to {table.target.name}",
                changes={"upstream_parts": marked, "last_error": None, "gate_key": gate_key(table)},
            )
        else:
            job = worker.store.update(job, changes={"upstream_parts": marked, "gate_key": gate_key(table)})
        worker.notifier.progress(job, f"Sending {part_label(index, count)} to {client.label}…")
        called = time.monotonic()
        try:
            started = client.start_upload(table, sources[index - 1], part=index, parts=count)
        except UpstreamError as exc:
            METRICS.add("UpstreamCallSeconds", time.monotonic() - called, Call="start")
            if exc.may_have_started:
                reason = (
                    f"{exc.message}. {part_label(index, count).capitalize()} may have been applied: "
                    f"check the table in {client.label} before sending it again"
                )
                return fail_part(worker, job, table, marked, index=index, count=count, status=UNKNOWN, reason=reason)
            if exc.retryable:  # nothing applied (a 429 waits for the vendor's Retry-After or rule)
                return later_after_error(worker, job, parts, exc.message, retry_after=exc.retry_after)
            return fail_part(worker, job, table, marked, index=index, count=count, status=REFUSED, reason=exc.message)
    METRICS.add("UpstreamCallSeconds", time.monotonic() - called, Call="start")
    log.info("job %s: %s started upstream as %s", job.job_id, part_label(index, count), started.job_id)
    sent = (*parts, UpstreamPart(index=index, count=count, upstream_job_id=started.job_id, status=RUNNING))
    first_check = worker.later(worker.settings.first_check_seconds)
    if job.state is S.UPLOADING:
        job = worker.store.transition(
            job,
            S.SUBMITTED,
            actor=worker.worker_id,
            reason=f"upstream job {started.job_id} started ({part_label(index, count)})",
            changes={"upstream_parts": sent, "last_error": None},
            next_check_at=first_check,
            release_lease=True,
        )
    else:
        job = worker.store.update(job, changes={"upstream_parts": sent}, next_check_at=first_check, release_lease=True)
    worker.notifier.progress(job, progress_text(table, sent))
    return "sent"


def progress_text(table: TableConfig, parts: Sequence[UpstreamPart]) -> str:
    """The status message while the vendor applies the last part sent."""
    last = parts[-1]
    label = TARGET_LABELS[table.kind]
    if last.count > 1:
        return f"{label} is applying part {last.index} of {last.count} (job `{last.upstream_job_id}`)…"
    return f"{label} is applying the upload (job `{last.upstream_job_id}`)…"


def recover_interrupted_send(
    worker: Worker, job: Job, table: TableConfig, client: TargetClient, parts: tuple[UpstreamPart, ...]
) -> Step:
    """A part left `sending` by a worker that stopped: send it again if that is safe, else fail it
    as `unknown` (module docstring)."""
    last = parts[-1]
    before = parts[:-1]
    if client.resend_is_safe(table):  # the target knows (module docstring)
        log.info(
            "job %s: %s was interrupted while sending; sending it again",
            job.job_id,
            part_label(last.index, last.count),
        )
        return send_next(worker, job, table, client, before)
    reason = (
        f"the worker sending {part_label(last.index, last.count)} stopped before "
        f"{client.label} named its job, so it may have been applied. It was not sent again "
        "because this table has no primary key and its rows would be added twice: check the table in "
        f"{client.label}, and press Retry only if the rows are not there"
    )
    return fail_part(worker, job, table, parts, index=last.index, count=last.count, status=UNKNOWN, reason=reason)


def refuse(
    worker: Worker,
    job: Job,
    table: TableConfig,
    parts: tuple[UpstreamPart, ...],
    *,
    index: int,
    count: int,
    reason: str,
) -> Step:
    """Fail a part that was never sent (its request refused, its file gone)."""
    marked = (*parts, UpstreamPart(index=index, count=max(count, index), upstream_job_id=NO_JOB_ID, status=REFUSED))
    if job.state is S.QUEUED:  # `queued` cannot end directly: the state table goes through `uploading`
        job = worker.store.transition(
            job, S.UPLOADING, actor=worker.worker_id, reason="failed before sending", changes={"last_error": None}
        )
    return fail_part(worker, job, table, marked, index=index, count=max(count, index), status=REFUSED, reason=reason)


def fail_part(
    worker: Worker,
    job: Job,
    table: TableConfig,
    parts: tuple[UpstreamPart, ...],
    *,
    index: int,
    count: int,
    status: str,
    reason: str,
) -> Step:
    """End the job failed at part `index`, saying which parts were applied."""
    parts = tuple(replace(p, status=status) if p.index == index else p for p in parts)
    prefix = f"Part {index} of {count}: " if count > 1 else ""
    message = f"{prefix}{reason}{applied_note(parts, index, count)}"
    return finish(worker, job, ending_for(job, table, S.FAILED, message), parts)


def later_after_error(
    worker: Worker, job: Job, parts: tuple[UpstreamPart, ...], message: str, *, retry_after: float | None = None
) -> Step:
    """A transient upstream or staging error: keep the parts, say why, look again later (when the
    vendor said to, for a 429; else after `error_retry_seconds`)."""
    wait = retry_after if retry_after is not None and retry_after > 0 else worker.settings.error_retry_seconds
    worker.store.update(
        job,
        changes={"upstream_parts": parts, "last_error": message},
        next_check_at=worker.later(wait),
        release_lease=True,
    )
    return "retry_later"


def identity_check(
    worker: Worker, job: Job, table: TableConfig, client: TargetClient, parts: tuple[UpstreamPart, ...]
) -> Step | None:
    """A job is sent only to what its file was checked against (`bot.targets.identity`): a
    different table, target, schema or mapping now ends it, naming what changed. None: go on."""
    if job.target_identity is None:  # recorded before identities were kept: nothing to compare
        return None
    try:
        schema = table.configured_schema() or client.fetch_schema(table)
    except UpstreamError as exc:
        if exc.retryable:
            return later_after_error(worker, job, parts, exc.message, retry_after=exc.retry_after)
        return refuse(worker, job, table, parts, index=len(parts) + 1, count=len(parts) + 1, reason=exc.message)
    current = identity_json(table, schema)
    if current == job.target_identity:
        return None
    changes = identity_changes(job.target_identity, current)
    log.warning("job %s: not sent, the table's settings changed: %s", job.job_id, "; ".join(changes))
    reason = (
        f"the table's settings changed after this file was checked ({'; '.join(changes)}), so it was not "
        "sent. Share it again to check it against the table as it is now"
    )
    index = len(parts) + 1
    return refuse(
        worker, job, table, parts, index=index, count=max(index, parts[-1].count if parts else 1), reason=reason
    )


def config_failure(worker: Worker, job: Job, message: str) -> Step:
    """The job's table or target cannot be used as configured: end the job failed."""
    if job.state is S.QUEUED:
        job = worker.store.transition(
            job, S.UPLOADING, actor=worker.worker_id, reason="failed before sending", changes={"last_error": None}
        )
    reason = f"the bot's configuration does not allow this upload: {message}. Ask the bot's operators to fix it"
    ending = Ending(S.FAILED, reason, TARGET_LABELS.get(job.target, job.target), job.upstream_job_ids, True)
    return finish(worker, job, ending, job.upstream_parts)
