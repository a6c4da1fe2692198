"""Where staged files live, how long they stay, and how to find a table's previous version.

Key layout (relative to the staging bucket prefix or folder):

    uploads/{table}/{job_id}/original.csv     the file as the user gave it (Slack or S3)
    uploads/{table}/{job_id}/normalized.csv   the bytes sent upstream (after automatic fixes)

`table` is the table alias from the tables file and `job_id` the job store's id; both must be
plain names (letters, digits, `.`, `_`, `-`). Files are kept for `DEFAULT_RETENTION` so a failed
upload can be retried from staging and the previous version of a table restored (re-uploaded).
Expiry: in S3, a lifecycle rule on `uploads/` with the same number of days (serverless.yml);
in a folder, `purge_expired` (the same rule, run by the scheduled poller or by hand).

The previous version of a table is the newest `normalized.csv` of another, earlier job. Staging
does not know which jobs succeeded upstream: pass `accept` (e.g. "the job store says done") so a
failed job's file is not offered as a version of the table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.errors import InvalidStagingKey
from bot.staging.base import Staging

UPLOADS_PREFIX = "uploads/"
ORIGINAL_NAME = "original.csv"
NORMALIZED_NAME = "normalized.csv"
DEFAULT_RETENTION = timedelta(days=30)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _segment(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise InvalidStagingKey(
            f"{kind} {value!r} cannot be used in a staging key: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def table_prefix(table: str) -> str:
    return f"{UPLOADS_PREFIX}{_segment('table', table)}/"


def job_prefix(table: str, job_id: str) -> str:
    return f"{table_prefix(table)}{_segment('job id', job_id)}/"


def original_key(table: str, job_id: str) -> str:
    return job_prefix(table, job_id) + ORIGINAL_NAME


def normalized_key(table: str, job_id: str) -> str:
    return job_prefix(table, job_id) + NORMALIZED_NAME


@dataclass(frozen=True)
class TableVersion:
    table: str
    job_id: str
    key: str
    size: int
    modified: datetime


def table_versions(staging: Staging, table: str) -> list[TableVersion]:
    """Every staged normalized file of `table`, newest first."""
    prefix = table_prefix(table)
    versions = []
    for info in staging.list_blobs(prefix):
        job_id, _, name = info.key[len(prefix) :].partition("/")
        if name == NORMALIZED_NAME:
            versions.append(
                TableVersion(table=table, job_id=job_id, key=info.key, size=info.size, modified=info.modified)
            )
    versions.sort(key=lambda v: (v.modified, v.key), reverse=True)
    return versions


def previous_version(
    staging: Staging, table: str, current_job_id: str, accept: Callable[[str], bool] | None = None
) -> TableVersion | None:
    """The newest normalized file of `table` from a job other than, and not newer than, `current_job_id`.

    `accept(job_id)` filters candidates (e.g. only jobs that finished `done` upstream).
    """
    versions = table_versions(staging, table)
    current = next((v for v in versions if v.job_id == current_job_id), None)
    for version in versions:
        if version.job_id == current_job_id:
            continue
        if current is not None and version.modified > current.modified:
            continue
        if accept is None or accept(version.job_id):
            return version
    return None


def purge_expired(staging: Staging, retention: timedelta = DEFAULT_RETENTION, now: datetime | None = None) -> list[str]:
    """Delete staged upload files older than `retention`; return their keys."""
    return staging.purge_older_than(retention, prefix=UPLOADS_PREFIX, now=now)
