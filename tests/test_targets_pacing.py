"""Rate limiter, per-table spacing and backoff, on an injected clock (no real sleeping)."""

from __future__ import annotations

import httpx

from bot.config import parse_tables
from bot.targets import BytesSource, LimiterRegistry, RateLimiter, RetryPolicy, TableSpacer, build_client


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    t = FakeTime()
    limiter = RateLimiter(5, clock=t.clock, sleep=t.sleep)
    for _ in range(5):
        limiter.acquire()
    assert t.slept == []
    for _ in range(10):
        limiter.acquire()
    assert t.now - 100.0 == 2.0  # ten more requests at five a second
    assert all(abs(s - 0.2) < 1e-9 for s in t.slept)


def test_the_bucket_refills_while_idle() -> None:
    t = FakeTime()
    limiter = RateLimiter(5, clock=t.clock, sleep=t.sleep)
    for _ in range(5):
        limiter.acquire()
    t.now += 10
    for _ in range(5):
        limiter.acquire()
    assert t.slept == []


def test_calls_on_one_table_are_spaced_and_other_tables_are_free() -> None:
    t = FakeTime()
    spacer = TableSpacer(60, clock=t.clock, sleep=t.sleep)
    assert spacer.wait("orders") == 0
    t.now += 20
    assert spacer.wait("orders") == 40
    assert spacer.wait("contacts") == 0
    assert spacer.next_allowed("orders") == t.now + 60


def test_backoff_doubles_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(backoff_seconds=0.5, max_backoff_seconds=3, max_retry_after_seconds=90)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(1, retry_after=61) == 61
    assert policy.delay(1, retry_after=600) == 90


def test_clients_of_one_account_share_one_limiter_and_sleep_on_it() -> None:
    t = FakeTime()
    tables = parse_tables(
        {
            "targets": {"bp": {"kind": "bigpanda", "base_url": "https://bp.test", "token_env": "T"}},
            "tables": {"h": {"target": "bp", "enrichment_id": "e"}},
        }
    )
    answer = httpx.MockTransport(lambda r: httpx.Response(202, json={"job_id": "j"}))
    pacing = LimiterRegistry()
    clients = [
        build_client(
            tables.targets["bp"],
            httpx.Client(transport=answer),
            {"T": "x"},
            pacing=pacing,
            clock=t.clock,
            sleep=t.sleep,
        )
        for _ in range(2)
    ]
    for _ in range(5):
        for client in clients:
            client.start_upload(tables.table("h"), BytesSource(b"a\n1\n"))
    assert t.now - 100.0 == 1.0  # ten uploads by two clients: five at once, then five a second
