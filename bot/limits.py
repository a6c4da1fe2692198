"""Caps on uploads in flight: per person and per table, so one person (or a burst on one table)
cannot queue any number of uploads at once.

In flight: every job not ended (checking, waiting for approval, queued, uploading, submitted):
exactly the jobs of the store's due index (`JobStore.open_jobs`). A new upload, a Retry and a
restore are refused with `TooManyInFlight` when a cap is reached; the message names what is in
flight, so the person knows what to wait for or cancel. The check reads, then the job is
created: two uploads arriving in the same instant may both pass (a cap, not a lock).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bot.errors import TooManyInFlight
from bot.observability import METRICS
from bot.settings import Settings
from bot.store import Job, JobStore

log = logging.getLogger(__name__)

_LISTED = 5  # jobs named in a refusal


@dataclass(frozen=True)
class InFlightCaps:
    per_user: int = 0  # 0: no cap
    per_table: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> InFlightCaps:
        return cls(per_user=settings.max_uploads_per_user, per_table=settings.max_uploads_per_table)

    @property
    def active(self) -> bool:
        return self.per_user > 0 or self.per_table > 0


NO_CAPS = InFlightCaps()


def _listed(jobs: Sequence[Job]) -> str:
    shown = [f"`{j.file_name}` → `{j.table}` ({j.state}, job `{j.job_id}`)" for j in jobs[:_LISTED]]
    more = f" and {len(jobs) - _LISTED} more" if len(jobs) > _LISTED else ""
    return "; ".join(shown) + more


def check_in_flight(
    store: JobStore,
    caps: InFlightCaps,
    *,
    user: str,
    table: str,
    delivery_key: str | None = None,
    job_id: str | None = None,
) -> None:
    """Refuse (`TooManyInFlight`) a new upload of `user` to `table` when a cap is reached. A
    repeated delivery of a job already in flight (`delivery_key`), or the job itself (`job_id`, a
    Retry), is never counted against itself."""
    if not caps.active:
        return
    open_jobs = store.open_jobs()
    if delivery_key is not None and any(j.delivery_key == delivery_key for j in open_jobs):
        return  # a delivery Slack sent again: its job exists, nothing new is asked
    in_flight = [j for j in open_jobs if j.job_id != job_id]
    mine = [j for j in in_flight if j.requested_by == user]
    if caps.per_user and len(mine) >= caps.per_user:
        METRICS.add("UploadsRefused", Limit="user")
        log.info("upload refused: %s has %d uploads in flight (cap %d)", user, len(mine), caps.per_user)
        raise TooManyInFlight(
            f"You already have {len(mine)} uploads in flight (at most {caps.per_user} at once): "
            f"{_listed(mine)}. Wait for one to end, or cancel one, then send this file again."
        )
    on_table = [j for j in in_flight if j.table == table]
    if caps.per_table and len(on_table) >= caps.per_table:
        METRICS.add("UploadsRefused", Limit="table")
        log.info("upload refused: table %s has %d uploads in flight (cap %d)", table, len(on_table), caps.per_table)
        raise TooManyInFlight(
            f"Table `{table}` already has {len(on_table)} uploads in flight (at most {caps.per_table} at once): "
            f"{_listed(on_table)}. They are sent one after another; send this file again when one has ended."
        )
