"""Staging: the blob store between a file's source, validation and the upstream upload.

One contract (`Staging`), two implementations: `S3Staging` (production) and `FolderStaging`
(local runs). `bot.staging.layout` defines the key layout and retention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.errors import InvalidStagingKey, StagedKeyNotFound, StagingError, StagingUnavailable
from bot.settings import Settings
from bot.staging.base import BlobInfo, PutResult, Staging
from bot.staging.folder import FolderStaging
from bot.staging.s3 import S3Staging

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "BlobInfo",
    "FolderStaging",
    "InvalidStagingKey",
    "PutResult",
    "S3Staging",
    "StagedKeyNotFound",
    "Staging",
    "StagingError",
    "StagingUnavailable",
    "staging_from_settings",
]


def staging_from_settings(settings: Settings, s3_client: S3Client | None = None) -> Staging:
    """S3 staging when `TABLEBOT_STAGING_BUCKET` is set, else a local folder (`bot.settings`)."""
    if settings.staging_bucket:
        if s3_client is None:
            import boto3  # AWS_ENDPOINT_URL, when set, points it at a local S3

            s3_client = boto3.client("s3")
        return S3Staging(s3_client, settings.staging_bucket, prefix=settings.staging_prefix)
    return FolderStaging(settings.staging_dir)
