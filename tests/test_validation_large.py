"""A ~480 MB table streamed through the validator chunk by chunk from a generator (no file on disk).

Speed and memory are measured by benchmarks/validate_bench.py, not here; this proves the pass
reads every byte of a file near the 500 MB limit and counts and hashes it right.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from bot.schema import Column, TableSchema
from bot.validation import ValidationOptions, validate

ROWS_PER_BLOCK = 10_000
BLOCKS = 600
SCHEMA = TableSchema(
    kind="bigpanda",
    columns=tuple(Column(n) for n in ("host", "service", "owner", "team", "env", "description")),
)
# Each block is the template with its own 7-digit prefix: rows are unique across the whole file.
TEMPLATE = b"".join(
    b'@@@@@@@-%05d.example.com,svc-%d,owner%d@example.com,team-%d,%s,"Rack %d, row %d"\n'
    % (i, i % 997, i % 53, i % 17, (b"prod", b"staging")[i % 2], i % 40, i % 7)
    for i in range(ROWS_PER_BLOCK)
)


class Stream:
    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def chunks(self) -> Iterator[bytes]:
        header = b"host,service,owner,team,env,description\n"
        for piece in (header, *(TEMPLATE.replace(b"@@@@@@@", b"%07d" % k) for k in range(BLOCKS))):
            self.sha.update(piece)
            self.size += len(piece)
            yield piece


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_near_500_mb_stream_from_a_generator() -> None:
    stream = Stream()
    report = validate(stream.chunks(), SCHEMA, ValidationOptions())
    assert stream.size > 450 * 1024 * 1024
    assert report.valid, report.issues[:5]
    assert report.rows == ROWS_PER_BLOCK * BLOCKS
    assert report.issues == []
    assert report.bytes_read == report.bytes_written == stream.size
    assert report.sha256 == stream.sha.hexdigest()
