"""Helpers for the job store tests: a manual clock, the two backends, a lossy HTTP proxy."""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from bot.store import DEFAULT_RETENTION, DynamoJobStore, JobStore, NewJob, SqliteJobStore, create_table
from tests.fixtures_servers import FAKE_AWS

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class ManualClock:
    """Time that moves only when a test says so (shared by every store of a test)."""

    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


def new_job(table: str = "hosts", **overrides: Any) -> NewJob:
    values: dict[str, Any] = {
        "table": table,
        "target": "bp",
        "requested_by": "U012ALICE",
        "source": "F0123FILE",
        "file_name": "hosts.csv",
        "channel_id": "C0OPS",
        "thread_ts": "1715000000.000100",
        "size_bytes": 1234,
        "sha256": "ab" * 32,
        "staging_key": "staging/hosts.csv",
    }
    values.update(overrides)
    return NewJob(**values)


def dynamodb_client(endpoint: str, **config: Any) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        "dynamodb",
        endpoint_url=endpoint,
        config=Config(max_pool_connections=32, **config),
        **FAKE_AWS,
    )


@dataclass
class Backend:
    """One store's storage; `open` gives another store on the same storage (another worker)."""

    name: str
    opener: Callable[[ManualClock, timedelta | None], JobStore]
    clock: ManualClock = field(default_factory=ManualClock)
    opened: list[JobStore] = field(default_factory=list)
    cleanup: Callable[[], None] | None = None

    def open(self, retention: timedelta | None = None) -> JobStore:
        store = self.opener(self.clock, retention)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            if isinstance(store, SqliteJobStore):
                store.close()
        if self.cleanup is not None:
            self.cleanup()


def sqlite_backend(path: Path) -> Backend:
    def opener(clock: ManualClock, retention: timedelta | None) -> JobStore:
        return SqliteJobStore(path, clock=clock, retention=retention or DEFAULT_RETENTION)

    return Backend("sqlite", opener)


def dynamodb_backend(endpoint: str) -> Backend:
    table = f"jobs-{uuid.uuid4().hex[:12]}"
    admin = dynamodb_client(endpoint)
    create_table(admin, table)

    def opener(clock: ManualClock, retention: timedelta | None) -> JobStore:
        return DynamoJobStore(dynamodb_client(endpoint), table, clock=clock, retention=retention or DEFAULT_RETENTION)

    # DynamoDB Local keeps every table in memory for the whole session: drop each after its test.
    return Backend("dynamodb", opener, cleanup=lambda: admin.delete_table(TableName=table))


class LossyProxy:
    """An HTTP proxy in front of DynamoDB Local, for network faults.

    `drop_next(op)`: forward the next `op` request, then hang up instead of answering (the write
    lands, its answer is lost). `answer_next(op, status, body)`: answer the next `op` request
    with a DynamoDB error body without forwarding it (e.g. a TransactionConflict cancellation)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.drops: dict[str, int] = {}
        self.canned: dict[str, list[tuple[int, bytes]]] = {}
        self.dropped: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                target = self.headers.get("X-Amz-Target", "")
                operation = target.rsplit(".", 1)[-1]
                with proxy.lock:
                    queued = proxy.canned.get(operation)
                    canned = queued.pop(0) if queued else None
                if canned is not None:  # answer in DynamoDB's place; the request never reaches it
                    self.send_response(canned[0])
                    self.send_header("Content-Type", "application/x-amz-json-1.0")
                    self.send_header("Content-Length", str(len(canned[1])))
                    self.end_headers()
                    self.wfile.write(canned[1])
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection"}}
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                conn.close()
                with proxy.lock:
                    if proxy.drops.get(operation, 0) > 0:
                        proxy.drops[operation] -= 1
                        proxy.dropped.append(operation)
                        self.close_connection = True
                        return  # the write happened upstream; the caller never hears of it
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in {"connection", "transfer-encoding", "content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def drop_next(self, operation: str, count: int = 1) -> None:
        with self.lock:
            self.drops[operation] = self.drops.get(operation, 0) + count

    def answer_next(self, operation: str, status: int, body: bytes) -> None:
        with self.lock:
            self.canned.setdefault(operation, []).append((status, body))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def job_store(request: pytest.FixtureRequest, tmp_path: Path, kind: str | None = None) -> Iterator[JobStore]:
    """A fresh job store for a fixture: SQLite in `tmp_path`, or a new table on the suite's
    DynamoDB Local (`kind` defaults to the fixture's param)."""
    if (kind or request.param) == "sqlite":
        sqlite = SqliteJobStore(tmp_path / "jobs.sqlite3")
        yield sqlite
        sqlite.close()
        return
    endpoint = request.getfixturevalue("dynamodb_endpoint")
    admin = dynamodb_client(endpoint)
    table = f"jobs-{uuid.uuid4().hex[:10]}"
    create_table(admin, table)
    yield DynamoJobStore(dynamodb_client(endpoint), table)
    admin.delete_table(TableName=table)
