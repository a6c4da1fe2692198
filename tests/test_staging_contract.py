"""One contract, two stores: every test here runs on S3 (SeaweedFS over HTTP) and on a local folder."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.errors import InvalidStagingKey, StagedKeyNotFound
from bot.staging import FolderStaging, S3Staging, Staging
from bot.staging.folder import TMP_DIR_NAME

MIB = 1024 * 1024
SMALL_PART = 5 * MIB  # S3's minimum part size: the smallest file that still goes multipart


class Interrupted(Exception):
    """Raised by a test's data stream part-way through, like a size cap or a dropped download."""


# The bucket tests/fixtures_servers.py creates at start-up. The SeaweedFS there runs with its
# default `-volume.max=8`, and each bucket that receives data takes volumes of its own, so only
# one or two more buckets can be written in a session. Each test gets its own prefix instead.
SHARED_BUCKET = "tablebot-startup-probe"


@pytest.fixture
def s3_prefix() -> str:
    return f"staging-tests/{uuid.uuid4().hex}/"


@pytest.fixture(params=["s3", "folder"])
def staging(request: pytest.FixtureRequest, tmp_path: Path) -> Staging:
    if request.param == "s3":
        s3_client = request.getfixturevalue("s3_client")
        prefix = request.getfixturevalue("s3_prefix")
        return S3Staging(s3_client, SHARED_BUCKET, prefix=prefix, part_size=SMALL_PART)
    return FolderStaging(tmp_path / "staging")


def pattern(size: int, seed: int = 0) -> bytes:
    """Distinct, non-repeating-looking bytes, so a swapped or dropped chunk changes the hash."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read_all(staging: Staging, key: str, start: int = 0) -> bytes:
    with staging.open(key, start=start) as stream:
        return stream.read()


def test_round_trip_returns_size_and_sha256(staging: Staging) -> None:
    data = b"host,service\nweb-1,checkout\nweb-2,search\n"
    result = staging.put("uploads/hosts/job1/original.csv", chunked(data, 7))
    assert result.key == "uploads/hosts/job1/original.csv"
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert staging.exists("uploads/hosts/job1/original.csv")
    assert read_all(staging, "uploads/hosts/job1/original.csv") == data


def test_multipart_sized_round_trip(staging: Staging) -> None:
    # Two full parts and a short last one on S3; uneven input chunks cross part boundaries.
    data = pattern(2 * SMALL_PART + 123_457)
    result = staging.put("big/file.csv", chunked(data, 700_001))
    assert (result.size, result.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert read_all(staging, "big/file.csv") == data


def test_put_accepts_a_binary_file_object(staging: Staging) -> None:
    data = pattern(3 * MIB + 5, seed=1)
    result = staging.put("from-file.csv", io.BytesIO(data))
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert read_all(staging, "from-file.csv") == data


def test_empty_file_round_trip(staging: Staging) -> None:
    result = staging.put("empty.csv", iter([]))
    assert (result.size, result.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert staging.exists("empty.csv")
    assert read_all(staging, "empty.csv") == b""


def test_open_is_a_streaming_binary_file_usable_as_text(staging: Staging) -> None:
    staging.put("t.csv", [b"name,value\r\n", "caf\u00e9,1\r\n".encode(), b'x,"a,b"\r\n'])
    with staging.open("t.csv") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        rows = list(csv.reader(text))
    assert rows == [["name", "value"], ["caf\u00e9", "1"], ["x", "a,b"]]


def test_open_from_an_offset(staging: Staging) -> None:
    data = pattern(10_000, seed=2)
    staging.put("ranged.bin", [data])
    assert read_all(staging, "ranged.bin", start=4_321) == data[4_321:]
    assert read_all(staging, "ranged.bin", start=len(data)) == b""


def test_overwrite_replaces_the_whole_content(staging: Staging) -> None:
    staging.put("uploads/t/j/normalized.csv", [pattern(2 * SMALL_PART, seed=3)])
    second = b"a,b\n1,2\n"
    result = staging.put("uploads/t/j/normalized.csv", [second])
    assert result.size == len(second)
    assert read_all(staging, "uploads/t/j/normalized.csv") == second
    assert [b.key for b in staging.list_blobs("uploads/t/")] == ["uploads/t/j/normalized.csv"]


@pytest.mark.parametrize("fail_after", [MIB, 2 * SMALL_PART + 1], ids=["before-first-part", "mid-multipart"])
def test_a_failing_stream_leaves_nothing_and_keeps_the_previous_version(
    staging: Staging, fail_after: int, s3_client_if_s3: Any
) -> None:
    def stream() -> Iterator[bytes]:
        sent = 0
        while sent < fail_after:
            yield pattern(MIB, seed=sent)
            sent += MIB
        raise Interrupted("source stopped")

    with pytest.raises(Interrupted):
        staging.put("new.csv", stream())
    assert not staging.exists("new.csv")
    assert [b.key for b in staging.list_blobs("")] == []

    staging.put("kept.csv", [b"old,version\n"])
    with pytest.raises(Interrupted):
        staging.put("kept.csv", stream())
    assert read_all(staging, "kept.csv") == b"old,version\n"
    assert [b.key for b in staging.list_blobs("")] == ["kept.csv"]
    assert_no_leftovers(staging, s3_client_if_s3)


@pytest.fixture
def s3_client_if_s3(request: pytest.FixtureRequest, staging: Staging) -> Any:
    return request.getfixturevalue("s3_client") if isinstance(staging, S3Staging) else None


def assert_no_leftovers(staging: Staging, s3_client: Any) -> None:
    if isinstance(staging, S3Staging):
        pending = s3_client.list_multipart_uploads(Bucket=staging.bucket, Prefix=staging.prefix).get("Uploads", [])
        assert pending == []
    else:
        assert isinstance(staging, FolderStaging)
        assert list((staging.root / TMP_DIR_NAME).iterdir()) == []


def test_missing_key(staging: Staging) -> None:
    with pytest.raises(StagedKeyNotFound) as caught:
        staging.open("uploads/nope/j/original.csv")
    assert caught.value.key == "uploads/nope/j/original.csv"
    assert "uploads/nope/j/original.csv" in str(caught.value)
    assert not staging.exists("uploads/nope/j/original.csv")
    staging.delete("uploads/nope/j/original.csv")  # deleting what is not there is fine, as in S3


def test_delete_removes_only_that_key(staging: Staging) -> None:
    staging.put("a/one.csv", [b"1"])
    staging.put("a/two.csv", [b"2"])
    staging.delete("a/one.csv")
    assert not staging.exists("a/one.csv")
    with pytest.raises(StagedKeyNotFound):
        staging.open("a/one.csv")
    assert [b.key for b in staging.list_blobs("")] == ["a/two.csv"]


def test_list_under_a_prefix_with_sizes_and_timestamps(staging: Staging) -> None:
    before = time.time()
    for key, body in [
        ("uploads/hosts/j2/original.csv", b"22"),
        ("uploads/hosts/j1/original.csv", b"1"),
        ("uploads/hosts-extra/j3/original.csv", b"333"),
        ("other/x.csv", b"4444"),
    ]:
        staging.put(key, [body])
    after = time.time()

    listed = list(staging.list_blobs("uploads/hosts/"))
    assert [(b.key, b.size) for b in listed] == [
        ("uploads/hosts/j1/original.csv", 1),
        ("uploads/hosts/j2/original.csv", 2),
    ]
    for blob in listed:
        assert blob.modified.tzinfo is not None
        # S3 keeps whole seconds; allow for that truncation, nothing else.
        assert before - 1 <= blob.modified.timestamp() <= after + 1
    # A prefix is a plain string prefix, as in S3: without the slash it also matches hosts-extra.
    assert [b.key for b in staging.list_blobs("uploads/hosts")] == [
        "uploads/hosts-extra/j3/original.csv",
        "uploads/hosts/j1/original.csv",
        "uploads/hosts/j2/original.csv",
    ]
    assert len(list(staging.list_blobs(""))) == 4
    assert list(staging.list_blobs("nothing/here/")) == []


def wait_past(moment: float) -> None:
    """Sleep until the wall clock is in a later whole second than `moment` (S3 keeps whole seconds)."""
    while int(time.time()) <= int(moment):
        time.sleep(0.05)


def test_purge_by_age(staging: Staging) -> None:
    staging.put("uploads/t/old/original.csv", [b"old"])
    staging.put("keep/outside-prefix.csv", [b"outside"])
    (old,) = staging.list_blobs("uploads/t/old/")
    wait_past(old.modified.timestamp())
    staging.put("uploads/t/new/original.csv", [b"new"])
    (new,) = staging.list_blobs("uploads/t/new/")
    assert new.modified > old.modified

    retention = timedelta(days=7)
    # "Now" is a week after the midpoint between the two writes: only the old file is past retention.
    now = old.modified + (new.modified - old.modified) / 2 + retention
    assert staging.purge_older_than(retention, prefix="uploads/", now=now) == ["uploads/t/old/original.csv"]
    assert not staging.exists("uploads/t/old/original.csv")
    assert staging.exists("uploads/t/new/original.csv")
    assert staging.exists("keep/outside-prefix.csv")  # older, but outside the prefix

    # Nothing is old enough a second time round.
    assert staging.purge_older_than(retention, prefix="uploads/", now=now) == []
    # Much later everything under the prefix goes, and only that.
    assert staging.purge_older_than(retention, prefix="uploads/", now=now + retention) == ["uploads/t/new/original.csv"]
    assert [b.key for b in staging.list_blobs("")] == ["keep/outside-prefix.csv"]


@pytest.mark.parametrize(
    "bad", ["../escape.csv", "/abs.csv", "a//b.csv", "a/./b.csv", "a/../../b.csv", "a\\b.csv", "", "a/\x00.csv"]
)
def test_keys_that_could_escape_are_refused(staging: Staging, bad: str) -> None:
    with pytest.raises(InvalidStagingKey):
        staging.put(bad, [b"x"])
    with pytest.raises(InvalidStagingKey):
        staging.open(bad)
    with pytest.raises(InvalidStagingKey):
        staging.exists(bad)
    with pytest.raises(InvalidStagingKey):
        staging.delete(bad)
    assert list(staging.list_blobs("")) == []


def test_folder_writes_nothing_outside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    staging = FolderStaging(root)
    staging.put("uploads/t/j/original.csv", [b"x"])
    with pytest.raises(InvalidStagingKey):
        staging.put("../outside.csv", [b"x"])
    with pytest.raises(InvalidStagingKey):
        staging.put(f"{TMP_DIR_NAME}/x.part", [b"x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert (root / "uploads" / "t" / "j" / "original.csv").read_bytes() == b"x"


def test_folder_purge_by_file_mtime_and_stale_temp_files(tmp_path: Path) -> None:
    staging = FolderStaging(tmp_path / "staging")
    staging.put("uploads/t/j1/original.csv", [b"1"])
    staging.put("uploads/t/j2/original.csv", [b"2"])
    three_days_ago = time.time() - 3 * 86400
    os.utime(staging.root / "uploads/t/j1/original.csv", (three_days_ago, three_days_ago))
    crashed = staging.root / TMP_DIR_NAME / "left-by-a-crash.part"
    crashed.write_bytes(b"partial")
    os.utime(crashed, (three_days_ago, three_days_ago))

    assert staging.purge_older_than(timedelta(days=2)) == ["uploads/t/j1/original.csv"]
    assert not crashed.exists()
    assert not (staging.root / "uploads/t/j1").exists()  # emptied folders go too
    assert staging.exists("uploads/t/j2/original.csv")


def test_s3_keys_live_under_the_configured_prefix(s3_client: Any, s3_prefix: str) -> None:
    staging = S3Staging(s3_client, SHARED_BUCKET, prefix=s3_prefix + "staging")
    outside = s3_prefix + "elsewhere.csv"
    s3_client.put_object(Bucket=SHARED_BUCKET, Key=outside, Body=b"not staging")
    staging.put("uploads/t/j/original.csv", [b"x"])
    stored = s3_client.get_object(Bucket=SHARED_BUCKET, Key=s3_prefix + "staging/uploads/t/j/original.csv")
    assert stored["Body"].read() == b"x"
    assert [b.key for b in staging.list_blobs("")] == ["uploads/t/j/original.csv"]
    # Purging everything in staging leaves the rest of the bucket alone.
    far_future = datetime.now(UTC) + timedelta(days=365)
    assert staging.purge_older_than(timedelta(days=1), now=far_future) == ["uploads/t/j/original.csv"]
    assert s3_client.get_object(Bucket=SHARED_BUCKET, Key=outside)["Body"].read() == b"not staging"
