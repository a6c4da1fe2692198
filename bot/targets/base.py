"""What every upstream client shares: jobs, statuses, errors, re-openable bodies, pacing, retries.

Retry rule (why each client passes `resend_after_sent`): a request that provably never reached
the vendor (connection refused, `429`, `401` before a re-login) is always safe to send again. A
`5xx`, a read timeout or a dropped connection AFTER the body went out may mean the upload started.
BigPanda replaces the whole table, so sending the same table again is idempotent in effect and the
client retries. D·engage appends to tables without a primary key, so its upload is never resent
after such an ambiguous outcome: the error says the upload may have started (`may_have_started`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from bot.config import TableConfig
from bot.errors import UpstreamError
from bot.schema import TableSchema

JobState = Literal["running", "done", "failed"]

Clock = Callable[[], float]
Sleep = Callable[[float], None]

CHUNK_BYTES = 1024 * 1024
# Vendor error bodies are shown to the user, cut to this many characters.
ERROR_TEXT_LIMIT = 500
# Added to every rate limiter's window (see RateLimiter): room for network jitter on arrival.
DEFAULT_PACING_MARGIN_SECONDS = 0.1


@dataclass(frozen=True)
class UpstreamJob:
    """A started upstream job. `location` is the vendor's status URL when it gave one."""

    job_id: str
    location: str | None = None
    part: int = 1
    parts: int = 1


@dataclass(frozen=True)
class UpstreamStatus:
    state: JobState
    reason: str | None
    raw_status: str


class ByteSource(Protocol):
    """Bytes that can be read from the start again, so a retry re-sends the whole body."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> Iterator[bytes]:
        """Open the bytes afresh and yield them in order."""
        ...


@dataclass(frozen=True)
class FileSource:
    """A file, or the byte range [start, end) of a file preceded by `prefix` (a part's header)."""

    path: Path
    start: int = 0
    end: int | None = None
    prefix: bytes = b""

    @property
    def size(self) -> int:
        end = self.path.stat().st_size if self.end is None else self.end
        return len(self.prefix) + end - self.start

    def chunks(self) -> Iterator[bytes]:
        if self.prefix:
            yield self.prefix
        remaining = self.size - len(self.prefix)
        with self.path.open("rb") as fh:
            fh.seek(self.start)
            while remaining > 0:
                chunk = fh.read(min(CHUNK_BYTES, remaining))
                if not chunk:
                    raise OSError(f"{self.path} shrank while it was being sent")
                remaining -= len(chunk)
                yield chunk


@dataclass(frozen=True)
class BytesSource:
    """Bytes in memory (small bodies, tests)."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), CHUNK_BYTES):
            yield self.data[i : i + CHUNK_BYTES]


def first_line(source: ByteSource, limit: int = CHUNK_BYTES) -> bytes:
    """The bytes before the first LF (the CSV header), read without loading the body."""
    seen = b""
    for chunk in source.chunks():
        seen += chunk
        cut = seen.find(b"\n")
        if cut >= 0:
            return seen[:cut]
        if len(seen) > limit:
            break
    return seen[:limit]


class TargetClient(Protocol):
    """One upstream API. Every method raises `UpstreamError` on refusal or failure."""

    kind: str

    def fetch_schema(self, table: TableConfig) -> TableSchema: ...

    def start_upload(self, table: TableConfig, body: ByteSource, *, part: int = 1, parts: int = 1) -> UpstreamJob: ...

    def job_status(self, job: UpstreamJob | str) -> UpstreamStatus: ...


class RateLimiter:
    """At most `limit` requests in any window of `period` seconds: a sliding window over the start
    times of the last `limit` requests (5 a second: 5 in any second, never the 10 a full token
    bucket plus its refill would allow). Thread-safe; share one per organization (BigPanda token)
    or caller address (D·engage) across clients and jobs.

    `rate` requests a second becomes `floor(rate)` per second (the stricter reading of a fraction),
    or one per `1 / rate` seconds below 1. `margin_seconds` widens the window: vendors count
    arrivals, and network jitter can bring requests sent a full window apart closer on arrival.
    A request is booked before its caller sleeps, so callers queue fairly and a booked slot is
    never given twice.
    """

    def __init__(
        self,
        rate: float,
        *,
        margin_seconds: float = DEFAULT_PACING_MARGIN_SECONDS,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if margin_seconds < 0:
            raise ValueError("margin_seconds must not be negative")
        self.rate = rate
        self.limit = max(1, math.floor(rate))
        self.period = 1.0 if rate >= 1 else 1.0 / rate
        self.margin_seconds = margin_seconds
        self._clock = clock
        self._sleep = sleep
        self._booked: deque[float] = deque(maxlen=self.limit)
        self._lock = threading.Lock()

    @property
    def window(self) -> float:
        """Seconds in which at most `limit` requests start."""
        return self.period + self.margin_seconds

    def acquire(self) -> float:
        """Wait for a slot and take it. Returns the seconds waited."""
        with self._lock:
            now = self._clock()
            at = now
            if len(self._booked) == self.limit:
                # The slot frees when the oldest of the last `limit` requests leaves the window.
                at = max(now, self._booked[0] + self.window)
            self._booked.append(at)  # the deque drops the oldest booking
        wait = at - now
        if wait > 0:
            self._sleep(wait)
        return max(0.0, wait)


class TableSpacer:
    """Keeps calls on one upstream table at least `spacing` seconds apart (D·engage: one a minute)."""

    def __init__(self, spacing: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self.spacing = spacing
        self._clock = clock
        self._sleep = sleep
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Sleep until the table may be called again, and book this call. Returns the seconds slept."""
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            ready = now if last is None else max(now, last + self.spacing)
            self._last[key] = ready
        wait = ready - now
        if wait > 0:
            self._sleep(wait)
        return wait

    def next_allowed(self, key: str) -> float:
        with self._lock:
            last = self._last.get(key)
        now = self._clock()
        return now if last is None else max(now, last + self.spacing)


class LimiterRegistry:
    """Process-wide pacing shared by every client built for the same account."""

    def __init__(self, *, margin_seconds: float = DEFAULT_PACING_MARGIN_SECONDS) -> None:
        self.margin_seconds = margin_seconds
        self._limiters: dict[str, RateLimiter] = {}
        self._spacers: dict[str, TableSpacer] = {}
        self._lock = threading.Lock()

    def limiter(
        self, key: str, rate: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> RateLimiter:
        with self._lock:
            found = self._limiters.get(key)
            if found is None or found.rate != rate:
                found = self._limiters[key] = RateLimiter(
                    rate, margin_seconds=self.margin_seconds, clock=clock, sleep=sleep
                )
            return found

    def spacer(
        self, key: str, spacing: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> TableSpacer:
        with self._lock:
            found = self._spacers.get(key)
            if found is None or found.spacing != spacing:
                found = self._spacers[key] = TableSpacer(spacing, clock=clock, sleep=sleep)
            return found


DEFAULT_PACING = LimiterRegistry()


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for `429`, `5xx` and network errors: backoff_seconds * 2**n, capped; a vendor's
    `Retry-After` is honoured up to `max_retry_after_seconds`."""

    max_attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_retry_after_seconds: float = 120.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RetryPolicy:
        return cls(
            max_attempts=int(options.get("max_attempts", cls.max_attempts)),
            backoff_seconds=float(options.get("backoff_seconds", cls.backoff_seconds)),
            max_backoff_seconds=float(options.get("max_backoff_seconds", cls.max_backoff_seconds)),
            max_retry_after_seconds=float(options.get("max_retry_after_seconds", cls.max_retry_after_seconds)),
        )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after_seconds))
        return min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** (attempt - 1))


def truncate(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


_MAY_HAVE_STARTED = "; the upload may have started: check the table before sending it again"

# Raised before any byte of the request reached the vendor: always safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteError, httpx.WriteTimeout)


@dataclass
class Sender:
    """Sends one logical request with pacing and retries (see the module docstring for the rule)."""

    http: httpx.Client
    limiter: RateLimiter
    retry: RetryPolicy
    sleep: Sleep
    vendor: str

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Iterable[bytes]] | None = None,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        resend_after_sent: bool = True,
    ) -> httpx.Response:
        last: UpstreamError | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            if attempt > 1 and last is not None:
                self.sleep(self.retry.delay(attempt - 1, last.retry_after))
            self.limiter.acquire()
            try:
                response = self.http.request(
                    method, url, headers=headers, content=body() if body else None, json=json, params=params
                )
            except _NOT_SENT as exc:
                last = UpstreamError(
                    "unreachable", f"{self.vendor} could not be reached while {what} ({type(exc).__name__})"
                )
                continue
            except httpx.TransportError as exc:
                message = f"{self.vendor} did not answer while {what} ({type(exc).__name__})"
                if not resend_after_sent:
                    raise UpstreamError("unreachable", message + _MAY_HAVE_STARTED, may_have_started=True) from None
                last = UpstreamError("unreachable", message)
                continue
            if response.status_code == 429:
                last = UpstreamError(
                    "rate_limited",
                    f"{self.vendor} kept answering 429 Too Many Requests while {what}",
                    status_code=429,
                    retry_after=_retry_after(response),
                )
                continue
            if response.status_code >= 500:
                detail = truncate(response.text, 200)
                message = f"{self.vendor} answered {response.status_code} while {what}" + (
                    f": {detail}" if detail else ""
                )
                if not resend_after_sent:
                    raise UpstreamError(
                        "server", message + _MAY_HAVE_STARTED, status_code=response.status_code, may_have_started=True
                    )
                last = UpstreamError("server", message, status_code=response.status_code)
                continue
            return response
        assert last is not None
        raise UpstreamError(
            last.kind,
            f"{last.message} (gave up after {self.retry.max_attempts} attempts)",
            status_code=last.status_code,
        )
