"""The key layout, the previous version of a table, and retention (on the folder store, with set mtimes)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.errors import InvalidStagingKey
from bot.settings import load_settings
from bot.staging import FolderStaging, S3Staging, staging_from_settings
from bot.staging.layout import (
    DEFAULT_RETENTION,
    normalized_key,
    original_key,
    previous_version,
    purge_expired,
    table_versions,
)

DAY = 86400


@pytest.fixture
def staging(tmp_path: Path) -> FolderStaging:
    return FolderStaging(tmp_path / "staging")


def stage_at(staging: FolderStaging, key: str, body: bytes, days_ago: float) -> None:
    staging.put(key, [body])
    moment = time.time() - days_ago * DAY
    os.utime(staging.root / key, (moment, moment))


def test_keys() -> None:
    assert original_key("hosts", "01HZX3-job") == "uploads/hosts/01HZX3-job/original.csv"
    assert normalized_key("hosts", "01HZX3-job") == "uploads/hosts/01HZX3-job/normalized.csv"


@pytest.mark.parametrize(
    ("table", "job_id"), [("../etc", "j"), ("hosts", "a/b"), ("", "j"), ("hosts", ".hidden"), ("ho sts", "j")]
)
def test_names_that_are_not_plain_are_refused(table: str, job_id: str) -> None:
    with pytest.raises(InvalidStagingKey):
        original_key(table, job_id)


def test_table_versions_are_normalized_files_newest_first(staging: FolderStaging) -> None:
    stage_at(staging, normalized_key("hosts", "j1"), b"v1", days_ago=3)
    stage_at(staging, original_key("hosts", "j1"), b"raw1", days_ago=3)
    stage_at(staging, normalized_key("hosts", "j3"), b"v3", days_ago=1)
    stage_at(staging, normalized_key("hosts", "j2"), b"v2", days_ago=2)
    stage_at(staging, normalized_key("hosts-eu", "j9"), b"other table", days_ago=0.5)
    assert [(v.job_id, v.size) for v in table_versions(staging, "hosts")] == [("j3", 2), ("j2", 2), ("j1", 2)]


def test_previous_version_is_the_newest_earlier_normalized_file(staging: FolderStaging) -> None:
    stage_at(staging, normalized_key("hosts", "j1"), b"v1", days_ago=3)
    stage_at(staging, normalized_key("hosts", "j2"), b"v2", days_ago=2)
    stage_at(staging, normalized_key("hosts", "j3"), b"v3", days_ago=1)
    stage_at(staging, original_key("hosts", "j4"), b"raw4", days_ago=0)  # being validated, not normalized yet

    before_j4 = previous_version(staging, "hosts", "j4")
    assert before_j4 is not None and before_j4.job_id == "j3"
    before_j2 = previous_version(staging, "hosts", "j2")  # j3 is newer than j2: not its previous version
    assert before_j2 is not None and before_j2.job_id == "j1"
    assert previous_version(staging, "hosts", "j1") is None
    # Only jobs that finished upstream count as versions of the table.
    succeeded = {"j1", "j2"}
    done_before_j4 = previous_version(staging, "hosts", "j4", accept=succeeded.__contains__)
    assert done_before_j4 is not None and done_before_j4.job_id == "j2"
    with staging.open(done_before_j4.key) as stream:
        assert stream.read() == b"v2"
    assert previous_version(staging, "other-table", "j4") is None


def test_purge_expired_removes_uploads_past_retention_only(staging: FolderStaging) -> None:
    stage_at(staging, original_key("hosts", "old"), b"old", days_ago=DEFAULT_RETENTION.days + 1)
    stage_at(staging, normalized_key("hosts", "old"), b"old", days_ago=DEFAULT_RETENTION.days + 1)
    stage_at(staging, original_key("hosts", "recent"), b"new", days_ago=DEFAULT_RETENTION.days - 1)
    stage_at(staging, "reports/kept.txt", b"outside uploads/", days_ago=DEFAULT_RETENTION.days + 10)

    assert purge_expired(staging) == [normalized_key("hosts", "old"), original_key("hosts", "old")]
    assert [b.key for b in staging.list_blobs("")] == ["reports/kept.txt", original_key("hosts", "recent")]
    # With a shorter retention, or a later "now", the recent one goes too.
    later = datetime.now(UTC) + timedelta(days=2)
    assert purge_expired(staging, now=later) == [original_key("hosts", "recent")]


def test_staging_from_settings_picks_the_folder_or_the_bucket(tmp_path: Path, s3_client: Any) -> None:
    folder = staging_from_settings(load_settings({"TABLEBOT_STAGING_DIR": str(tmp_path / "local")}))
    assert isinstance(folder, FolderStaging)
    assert folder.root == (tmp_path / "local").resolve()

    prefix = f"env-tests/{uuid.uuid4().hex}"
    s3 = staging_from_settings(
        load_settings({"TABLEBOT_STAGING_BUCKET": "tablebot-startup-probe", "TABLEBOT_STAGING_PREFIX": prefix}),
        s3_client=s3_client,
    )
    assert isinstance(s3, S3Staging)
    s3.put("uploads/t/j/original.csv", [b"a,b\n"])
    stored = s3_client.get_object(Bucket="tablebot-startup-probe", Key=f"{prefix}/uploads/t/j/original.csv")
    assert stored["Body"].read() == b"a,b\n"
