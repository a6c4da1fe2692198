"""Rate slots shared through the job store: the same contract on SQLite and DynamoDB Local, on a
manual clock; several stores on one storage stand for several containers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.config import TablesFile
from bot.errors import UpstreamError
from bot.store import DynamoJobStore, JobStore
from bot.store.rules import book_rate_slot
from bot.targets import BytesSource, build_client
from bot.targets.shared_pacing import StorePacing
from tests.fixtures_upstream import SANDBOX_ENV, Upstream
from tests.store_support import Backend, dynamodb_backend, dynamodb_client, sqlite_backend


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        made = sqlite_backend(tmp_path / "jobs.sqlite3")
    else:
        made = dynamodb_backend(request.getfixturevalue("dynamodb_endpoint"))
    yield made
    made.close()


def test_the_rule_books_after_the_oldest_of_the_last_limit_starts() -> None:
    assert book_rate_slot([], limit=2, window_us=1000, now_us=50) == (50, [50])
    assert book_rate_slot([50], limit=2, window_us=1000, now_us=60) == (60, [50, 60])
    assert book_rate_slot([50, 60], limit=2, window_us=1000, now_us=70) == (1050, [60, 1050])
    assert book_rate_slot([50, 60], limit=2, window_us=1000, now_us=5000) == (5000, [60, 5000])
    with pytest.raises(ValueError, match="limit"):
        book_rate_slot([], limit=0, window_us=1, now_us=0)


def wait_for(backend: Backend, store: JobStore, key: str, *, limit: int, window_seconds: float) -> float:
    """Seconds from the (manual) clock's now to the booked start."""
    at = store.reserve_rate_slot(key, limit=limit, window_seconds=window_seconds)
    return round(at - backend.clock().timestamp(), 6)


def test_five_a_second_across_two_stores_then_a_wait(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    waits = [wait_for(backend, first if i % 2 else second, "org", limit=5, window_seconds=1.0) for i in range(7)]
    assert waits[:5] == [0.0] * 5
    assert waits[5] == pytest.approx(1.0) and waits[6] == pytest.approx(1.0)
    backend.clock.advance(1.0)  # two are booked at +1 s: three more fit there, the next waits
    later = [wait_for(backend, first, "org", limit=5, window_seconds=1.0) for _ in range(4)]
    assert later == [0.0, 0.0, 0.0, pytest.approx(1.0)]
    assert wait_for(backend, first, "other", limit=5, window_seconds=1.0) == 0.0  # keys are independent


def test_a_table_spacing_of_one_a_minute(backend: Backend) -> None:
    store = backend.open()
    assert wait_for(backend, store, "table|t1", limit=1, window_seconds=60) == 0.0
    backend.clock.advance(20)
    assert wait_for(backend, store, "table|t1", limit=1, window_seconds=60) == pytest.approx(40)
    assert wait_for(backend, store, "table|t1", limit=1, window_seconds=60) == pytest.approx(100)


def test_racing_bookings_never_share_a_slot(backend: Backend) -> None:
    stores = [backend.open() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    waits: list[float] = []
    lock = threading.Lock()

    def book(i: int) -> None:
        barrier.wait()
        for _ in range(5):
            wait = wait_for(backend, stores[i], "org", limit=5, window_seconds=1.0)
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=book, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 20 bookings on a frozen clock: 5 slots in each of 4 consecutive seconds, never 6 in one.
    assert sorted(round(w, 6) for w in waits) == [0.0] * 5 + [1.0] * 5 + [2.0] * 5 + [3.0] * 5


def test_store_pacing_gives_limiters_and_spacers_that_sleep_what_the_store_says(backend: Backend) -> None:
    slept: list[float] = []
    pacing = StorePacing(backend.open(), margin_seconds=0.1, wall=lambda: backend.clock().timestamp())
    limiter = pacing.limiter("bigpanda|org", 5.0, sleep=slept.append)
    for _ in range(6):
        limiter.acquire()
    assert slept == [pytest.approx(1.1)]
    spacer = pacing.spacer("dengage|host", 60.0, sleep=slept.append)
    assert spacer.wait("t1") == 0.0 and spacer.wait("t2") == 0.0
    assert spacer.wait("t1") == pytest.approx(60.1)  # the spacing plus the margin


def test_a_booked_start_already_past_is_booked_again_not_sent_late(backend: Backend) -> None:
    store = backend.open()
    late = [0.3]  # the first booking's write "took" 0.3 s: its start has passed when it returns

    def wall() -> float:
        lag, late[:] = (late[0], [0.0]) if late else (0.0, [])
        return backend.clock().timestamp() + lag

    slept: list[float] = []
    limiter = StorePacing(store, margin_seconds=0.1, wall=wall).limiter("org", 1.0, sleep=slept.append)
    limiter.acquire()
    # The late slot stays spent; the second booking is one window (1.1 s) after it.
    assert slept == [pytest.approx(1.1)]


def test_when_the_store_cannot_book_nothing_is_sent_and_the_error_says_so(
    dynamodb_endpoint: str, upstream_tables: TablesFile, bigpanda_upstream: Upstream
) -> None:
    store = DynamoJobStore(dynamodb_client(dynamodb_endpoint), "no-such-table")  # StoreUnavailable on use
    with httpx.Client() as http:
        client = build_client(upstream_tables.targets["bp"], http, SANDBOX_ENV, pacing=StorePacing(store))
        with pytest.raises(UpstreamError) as caught:
            client.start_upload(upstream_tables.table("hosts"), BytesSource(b"host,service,owner\na,b,c\n"))
    assert caught.value.kind == "unreachable" and not caught.value.may_have_started
    assert "the shared rate limit could not be booked" in caught.value.message
    assert bigpanda_upstream.admin.requests("/map") == []
