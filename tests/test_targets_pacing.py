"""Rate limiter, per-table spacing and backoff, on an injected clock (no real sleeping)."""

from __future__ import annotations

import threading

import httpx
import pytest

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


def starts_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most request starts that fall in any half-open window [t, t + window)."""
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


def paced_starts(limiter: RateLimiter, t: FakeTime, n: int) -> list[float]:
    starts = []
    for _ in range(n):
        limiter.acquire()
        starts.append(t.now)
    return starts


def test_never_more_than_the_rate_in_any_second() -> None:
    t = FakeTime()
    limiter = RateLimiter(5, margin_seconds=0.0, clock=t.clock, sleep=t.sleep)
    starts = paced_starts(limiter, t, 5)
    assert starts == [100.0] * 5  # five at once are within the limit
    starts += paced_starts(limiter, t, 10)
    # A token bucket of 5 would let the sixth go at 100.2 (6 in one second); here it waits a second.
    assert starts[5:10] == [101.0] * 5 and starts[10:] == [102.0] * 5
    assert starts_in_any_window(starts) == 5


def test_the_margin_widens_the_window_for_jitter_on_arrival() -> None:
    t = FakeTime()
    limiter = RateLimiter(5, margin_seconds=0.1, clock=t.clock, sleep=t.sleep)
    starts = paced_starts(limiter, t, 11)
    assert starts[:5] == [100.0] * 5
    assert starts[5] == pytest.approx(101.1) and starts[10] == pytest.approx(102.2)
    assert starts_in_any_window(starts, 1.1) == 5


def test_requests_spread_over_time_are_not_delayed_and_the_window_slides() -> None:
    t = FakeTime()
    limiter = RateLimiter(5, margin_seconds=0.0, clock=t.clock, sleep=t.sleep)
    starts = []
    for _ in range(4):
        limiter.acquire()
        starts.append(t.now)
        t.now += 0.3
    assert t.slept == []
    # At 101.2, after starts at 100.0, 100.3, 100.6 and 100.9: the fifth goes at once, the sixth
    # too (100.0 has left the window), the seventh when 100.3 leaves it.
    starts += paced_starts(limiter, t, 3)
    assert starts[4:] == pytest.approx([101.2, 101.2, 101.3])
    assert starts_in_any_window(starts) == 5


def test_threads_sharing_a_limiter_never_exceed_it_together() -> None:
    t = FakeTime()
    lock = threading.Lock()
    starts: list[float] = []
    limiter = RateLimiter(5, margin_seconds=0.0, clock=t.clock, sleep=lambda s: None)

    def worker() -> None:
        for _ in range(20):
            waited = limiter.acquire()
            with lock:
                starts.append(t.now + waited)  # the moment this caller's sleep would end

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(starts) == 80 and starts_in_any_window(starts) == 5
    assert max(starts) == 100.0 + 80 / 5 - 1


def test_fractional_and_slow_rates() -> None:
    t = FakeTime()
    assert (RateLimiter(2.5).limit, RateLimiter(2.5).period) == (2, 1.0)  # the stricter reading
    slow = RateLimiter(0.5, margin_seconds=0.0, clock=t.clock, sleep=t.sleep)
    assert paced_starts(slow, t, 3) == [100.0, 102.0, 104.0]
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)


def test_calls_on_one_table_are_spaced_and_other_tables_are_free() -> None:
    t = FakeTime()
    spacer = TableSpacer(60, clock=t.clock, sleep=t.sleep)
    assert spacer.wait("orders") == 0
    t.now += 20
    assert spacer.wait("orders") == 40
    assert spacer.wait("contacts") == 0
    assert spacer.next_allowed("orders") == t.now + 60
    widened = TableSpacer(60, clock=t.clock, sleep=t.sleep, margin_seconds=0.1)
    assert widened.wait("orders") == 0 and widened.wait("orders") == pytest.approx(60.1)
    assert widened.spacing == 60  # the registry compares what was asked, not the widened gap


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
    # Ten uploads by two clients: five at once, then five when the first left the window (1 s + margin).
    assert t.now - 100.0 == pytest.approx(1.0 + pacing.margin_seconds)
