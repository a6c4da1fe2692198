"""A 500 MB file goes through staging with memory flat (S3 multipart on SeaweedFS, and the folder).

The bytes come from a generator and are never held whole: the test checks size and sha256 of what
was stored and read back, and that Python's peak allocation (tracemalloc, which sees every buffer
staging and boto3 allocate) stays far below the file size. Speed is measured in
benchmarks/staging_bench.py, not asserted here.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.staging import FolderStaging, S3Staging, Staging

FILE_SIZE = 500 * 1000 * 1000  # the bot's cap: 500 MB
CHUNK = 1024 * 1024
MEMORY_LIMIT = 100 * 1024 * 1024  # a fifth of the file; staging itself should need ~2 parts
SHARED_BUCKET = "tablebot-startup-probe"  # see tests/test_staging_contract.py for why

T = TypeVar("T")


def generated_file(size: int = FILE_SIZE) -> Iterator[bytes]:
    """`size` bytes of CSV-ish content, made chunk by chunk; every chunk differs (a counter line)."""
    filler = (b"web-%06d,checkout,eu-west-1,on-call team\n" % 0) * (CHUNK // 42)
    sent = 0
    index = 0
    while sent < size:
        head = b"chunk-%012d\n" % index
        chunk = (head + filler)[: min(CHUNK, size - sent)]
        yield chunk
        sent += len(chunk)
        index += 1


def peak_python_memory(action: Callable[[], T]) -> tuple[T, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        result = action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - baseline


def hash_stream(staging: Staging, key: str) -> tuple[int, str]:
    hasher = hashlib.sha256()
    size = 0
    with staging.open(key) as stream:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return size, hasher.hexdigest()


@pytest.fixture(params=["s3-multipart", "folder"])
def big_staging(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Staging]:
    staging: Staging
    if request.param == "s3-multipart":
        s3_client: Any = request.getfixturevalue("s3_client")
        staging = S3Staging(s3_client, SHARED_BUCKET, prefix=f"staging-large/{uuid.uuid4().hex}/")
    else:
        staging = FolderStaging(tmp_path / "staging")
    yield staging
    staging.delete("uploads/big/job/original.csv")  # 500 MB is worth giving back at once


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_500_mb_staged_and_read_back_with_flat_memory(big_staging: Staging) -> None:
    expected = hashlib.sha256()
    for chunk in generated_file():
        expected.update(chunk)

    key = "uploads/big/job/original.csv"
    result, put_peak = peak_python_memory(lambda: big_staging.put(key, generated_file()))
    assert (result.size, result.sha256) == (FILE_SIZE, expected.hexdigest())
    assert put_peak < MEMORY_LIMIT, f"put held {put_peak / 1e6:.0f} MB at peak"

    (size, sha256), read_peak = peak_python_memory(lambda: hash_stream(big_staging, key))
    assert (size, sha256) == (FILE_SIZE, expected.hexdigest())
    assert read_peak < MEMORY_LIMIT, f"reading held {read_peak / 1e6:.0f} MB at peak"
    if isinstance(big_staging, FolderStaging):
        assert os.path.getsize(big_staging.root / key) == FILE_SIZE
