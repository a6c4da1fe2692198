"""The staging contract: a blob store for uploaded files, with one S3 and one folder implementation.

Keys are relative, `/`-separated names (`uploads/hosts/<job>/original.csv`). Both implementations
keep the same promises, checked by one contract test suite:

- `put` streams the data (memory does not grow with its size), returns its size and sha256, and
  replaces an existing key atomically: a reader sees the old bytes or the new ones, never a mix.
  If the data stream raises (a size cap, a dropped download), nothing is left under the key and
  the previous version, if any, is untouched. The exception from the stream is re-raised as is.
- `open` gives a binary file-like object for streaming reads, optionally from a byte offset.
- `exists`, `delete` (a missing key is not an error, as in S3), `list_blobs` under a string prefix,
  with each key's size and last-modified time, and `purge_older_than` for expiry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO, Protocol, runtime_checkable

from bot.errors import InvalidStagingKey, StagedKeyNotFound, StagingError, StagingUnavailable

__all__ = [
    "CHUNK_SIZE",
    "BlobInfo",
    "InvalidStagingKey",
    "PutResult",
    "StagedKeyNotFound",
    "Staging",
    "StagingError",
    "StagingUnavailable",
]

# Reads from file-like inputs and downloads go in chunks of this size: big enough to be fast,
# small enough that memory stays flat.
CHUNK_SIZE = 1024 * 1024
MAX_KEY_LENGTH = 1024

# Control characters and the backslash have no business in a key and could mean a path elsewhere.
_FORBIDDEN_IN_KEY = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class PutResult:
    key: str
    size: int
    sha256: str  # lowercase hex


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: datetime  # timezone-aware, UTC


@runtime_checkable
class Staging(Protocol):
    """Where uploaded files wait between the source, validation and the upstream upload."""

    def put(self, key: str, data: Iterable[bytes] | BinaryIO) -> PutResult:
        """Stream `data` (chunks, or a binary file-like object) under `key`, replacing what was there."""
        ...

    def open(self, key: str, start: int = 0) -> BinaryIO:
        """A binary stream of the bytes under `key` from offset `start`; raises StagedKeyNotFound."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""
        ...

    def list_blobs(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every key starting with `prefix` (a plain string prefix, as in S3), in UTF-8 byte order."""
        ...

    def purge_older_than(self, max_age: timedelta, prefix: str = "", now: datetime | None = None) -> list[str]:
        """Delete keys under `prefix` last modified more than `max_age` before `now`; return them."""
        ...


def validate_key(key: str) -> str:
    """`key` if it is a plain relative name: no leading `/`, no empty, `.` or `..` segment."""
    if not key or len(key.encode()) > MAX_KEY_LENGTH:
        raise InvalidStagingKey(f"staging key must be 1 to {MAX_KEY_LENGTH} bytes long")
    if _FORBIDDEN_IN_KEY.search(key):
        raise InvalidStagingKey(f"staging key {key!r} contains a control character or a backslash")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidStagingKey(f"staging key {key!r} must be relative with no empty, '.' or '..' part")
    return key


def validate_prefix(prefix: str) -> str:
    """`prefix` if it is empty or the start of a valid key (it may end with `/`)."""
    if prefix:
        validate_key(prefix.removesuffix("/") or ".")
    return prefix


def iter_chunks(data: Iterable[bytes] | BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The bytes of `data` as non-empty chunks, reading file-like objects `chunk_size` at a time."""
    read = getattr(data, "read", None)
    if read is not None:
        while chunk := read(chunk_size):
            yield bytes(chunk)
        return
    for chunk in data:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"staging data must be bytes chunks, got {type(chunk).__name__}")
        if chunk:
            yield bytes(chunk)
