"""Staging: the blob store between a file's source, validation and the upstream upload.

One contract (`Staging`), two implementations: `S3Staging` (production) and `FolderStaging`
(local runs). `bot.staging.layout` defines the key layout and retention.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bot.staging.base import (
    BlobInfo,
    InvalidStagingKey,
    PutResult,
    StagedKeyNotFound,
    Staging,
    StagingError,
    StagingUnavailable,
)
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
    "staging_from_env",
]


def staging_from_env(environ: Mapping[str, str] | None = None, s3_client: S3Client | None = None) -> Staging:
    """S3 staging when TABLEBOT_STAGING_BUCKET is set (prefix TABLEBOT_STAGING_PREFIX, default
    `staging/`), else a folder (TABLEBOT_STAGING_DIR, default `.tablebot/staging`).
    """
    env = os.environ if environ is None else environ
    bucket = env.get("TABLEBOT_STAGING_BUCKET")
    if bucket:
        if s3_client is None:
            import boto3  # AWS_ENDPOINT_URL, when set, points it at a local S3

            s3_client = boto3.client("s3")
        return S3Staging(s3_client, bucket, prefix=env.get("TABLEBOT_STAGING_PREFIX", "staging/"))
    return FolderStaging(env.get("TABLEBOT_STAGING_DIR", ".tablebot/staging"))
