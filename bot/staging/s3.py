"""Staging in an S3 bucket (production), under an optional key prefix.

`put` streams with an explicit multipart upload: one part (8 MiB by default) is buffered at a
time, so memory stays flat whatever the file size; data smaller than one part goes up in a single
PutObject. If the data stream raises, the multipart upload is aborted, so nothing is left (S3
keeps the previous object under the key until CompleteMultipartUpload succeeds).

Expiry in production is an S3 lifecycle rule on the staging prefix (serverless.yml; keep its
days equal to the retention in `bot.staging.layout`); `purge_older_than` does the same on demand.
The bot's role needs s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucket (on the prefix)
and s3:AbortMultipartUpload.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from bot.errors import InvalidStagingKey, StagedKeyNotFound, StagingUnavailable
from bot.staging.base import BlobInfo, PutResult, iter_chunks, validate_key, validate_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MIB
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Staging:
    def __init__(self, client: S3Client, bucket: str, prefix: str = "", part_size: int = DEFAULT_PART_SIZE) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part size)")
        if prefix:
            validate_key(prefix.removesuffix("/"))
            prefix = prefix.removesuffix("/") + "/"
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size

    def __repr__(self) -> str:
        return f"S3Staging(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    @contextlib.contextmanager
    def _s3(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            raise StagingUnavailable(
                f"S3 {action} failed for staging key {key!r} in bucket {self.bucket}: {error_code(exc) or exc}"
            ) from exc
        except BotoCoreError as exc:
            raise StagingUnavailable(
                f"S3 {action} failed for staging key {key!r} in bucket {self.bucket}: {exc}"
            ) from exc

    def put(self, key: str, data: Iterable[bytes] | BinaryIO) -> PutResult:
        object_key = self._object_key(key)
        hasher = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []

        def send_part(body: bytes) -> None:
            nonlocal upload_id
            if upload_id is None:
                with self._s3("create multipart upload", key):
                    upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=object_key)["UploadId"]
            number = len(parts) + 1
            with self._s3("upload part", key):
                answer = self._client.upload_part(
                    Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=body
                )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})

        try:
            # Errors raised by the data stream itself pass through untouched (after the abort below).
            for chunk in iter_chunks(data):
                hasher.update(chunk)
                size += len(chunk)
                buffer += chunk
                while len(buffer) >= self.part_size:
                    with memoryview(buffer) as view:
                        body = bytes(view[: self.part_size])
                    del buffer[: self.part_size]
                    send_part(body)
            if upload_id is None:
                with self._s3("put object", key):
                    self._client.put_object(Bucket=self.bucket, Key=object_key, Body=bytes(buffer))
            else:
                if buffer:
                    send_part(bytes(buffer))
                with self._s3("complete multipart upload", key):
                    self._client.complete_multipart_upload(
                        Bucket=self.bucket, Key=object_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                    )
        except BaseException:
            if upload_id is not None:
                # Best effort: a lifecycle rule on incomplete multipart uploads catches what this misses.
                with contextlib.suppress(ClientError, BotoCoreError):
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
            raise
        return PutResult(key=key, size=size, sha256=hasher.hexdigest())

    def open(self, key: str, start: int = 0) -> BinaryIO:
        object_key = self._object_key(key)
        extra: dict[str, Any] = {"Range": f"bytes={start}-"} if start else {}
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=object_key, **extra)
        except ClientError as exc:
            code = error_code(exc)
            if code in _MISSING_CODES:
                raise StagedKeyNotFound(key) from None
            if code == "InvalidRange" and self.exists(key):  # start at or past the end
                return io.BytesIO(b"")
            raise StagingUnavailable(
                f"S3 get object failed for staging key {key!r} in bucket {self.bucket}: {code or exc}"
            ) from exc
        except BotoCoreError as exc:
            raise StagingUnavailable(
                f"S3 get object failed for staging key {key!r} in bucket {self.bucket}: {exc}"
            ) from exc
        return io.BufferedReader(_S3BodyReader(answer["Body"], key), buffer_size=1024 * 1024)

    def exists(self, key: str) -> bool:
        object_key = self._object_key(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                return False
            raise StagingUnavailable(
                f"S3 head object failed for staging key {key!r} in bucket {self.bucket}: {error_code(exc) or exc}"
            ) from exc
        except BotoCoreError as exc:
            raise StagingUnavailable(
                f"S3 head object failed for staging key {key!r} in bucket {self.bucket}: {exc}"
            ) from exc
        return True

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        with self._s3("delete object", key):
            self._client.delete_object(Bucket=self.bucket, Key=object_key)

    def list_blobs(self, prefix: str = "") -> Iterator[BlobInfo]:
        validate_prefix(prefix)
        found: list[BlobInfo] = []
        paginator = self._client.get_paginator("list_objects_v2")
        with self._s3("list objects", prefix or "(all)"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    try:
                        validate_key(key)
                    except InvalidStagingKey:
                        continue  # put there by something else; not a staging key
                    modified = item["LastModified"]
                    if modified.tzinfo is None:
                        modified = modified.replace(tzinfo=UTC)
                    found.append(BlobInfo(key=key, size=item["Size"], modified=modified))
        # S3 lists in UTF-8 byte order, S3-compatible stores do not all agree: sort here.
        found.sort(key=lambda info: info.key.encode())
        return iter(found)

    def purge_older_than(self, max_age: timedelta, prefix: str = "", now: datetime | None = None) -> list[str]:
        cutoff = (now or datetime.now(UTC)) - max_age
        expired = [info.key for info in self.list_blobs(prefix) if info.modified < cutoff]
        for start in range(0, len(expired), _DELETE_BATCH):
            batch = expired[start : start + _DELETE_BATCH]
            with self._s3("delete objects", prefix or "(all)"):
                answer = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.prefix + key} for key in batch], "Quiet": True},
                )
            failed = answer.get("Errors", [])
            if failed:
                first = failed[0]
                raise StagingUnavailable(
                    f"S3 refused to delete {len(failed)} expired staging file(s), e.g. {first.get('Key')!r}: {first.get('Code')}"
                )
        return expired


class _S3BodyReader(io.RawIOBase):
    """botocore's streaming body as a raw stream, so callers get a real buffered binary file."""

    def __init__(self, body: Any, key: str) -> None:
        self._body = body
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data: bytes = self._body.read(len(buffer))
        except BotoCoreError as exc:
            raise StagingUnavailable(f"reading staging key {self._key!r} from S3 failed: {exc}") from exc
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
