"""What every upstream client shares: jobs, statuses, errors, re-openable bodies, pacing, retries.

Retry rule (why each client passes `resend_after_sent`): a request that provably never reached
the vendor (connection refused, `429`, `401` before a re-login) is always safe to send again. A
`5xx`, a read timeout or a dropped connection AFTER the body went out may mean the upload started.
BigPanda replaces the whole table, so sending the same table again is idempotent in effect and the
client retries. D·engage appends to tables without a primary key, so its upload is never resent
after such an ambiguous outcome: the error says the upload may have started (`may_have_started`).
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from bot.config import TableConfig
from bot.errors import TRANSIENT_UPSTREAM_KINDS, StoreError, UpstreamError
from bot.schema import TableSchema

JobState = Literal["running", "done", "failed"]
# Kinds worth another try later (`bot.errors.ErrorKind` lists them all).
TRANSIENT_KINDS = TRANSIENT_UPSTREAM_KINDS

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
    """One read of an upstream job. `raw_status` is the vendor's word verbatim; `known` is False
    for a word in no family (then `state` is "running" and `reason` says the bot does not know it).
    A failed job's own text (and its row errors) is in `reason`."""

    state: JobState
    reason: str | None
    raw_status: str
    known: bool = True
    error_count: int = 0


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
    """One upstream API, as the use cases need it: nothing outside `bot.targets` asks which vendor
    it is. Every method raises `UpstreamError` on refusal or failure."""

    kind: str
    label: str  # the vendor's name for people: "BigPanda", "D·engage"
    replaces_table: bool  # an upload replaces the whole table (a change preview means something)
    status_grace_seconds: float  # how long an unreadable job status is tolerated
    unknown_status_reads: int  # reads of an unknown status word before the user is told

    @property
    def part_spacing_seconds(self) -> float:
        """Least seconds between two upload calls on one upstream table (0: no rule)."""
        ...

    def fetch_schema(self, table: TableConfig) -> TableSchema: ...

    def login(self) -> str:
        """Prove the credentials now (`tablebot check`); what was proved."""
        ...

    def locate(self, table: TableConfig) -> str:
        """Find the upstream table (`tablebot check`); what was found."""
        ...

    def parts(self, table: TableConfig, path: Path) -> Sequence[ByteSource]:
        """The request bodies a normalized file is sent as, in order (one, unless it is too big)."""
        ...

    def resend_is_safe(self, table: TableConfig) -> bool:
        """Would sending the same part again leave the table as one send would?"""
        ...

    def start_upload(self, table: TableConfig, body: ByteSource, *, part: int = 1, parts: int = 1) -> UpstreamJob: ...

    def job_status(self, job: UpstreamJob | str) -> UpstreamStatus: ...


class Limiter(Protocol):
    """Paces requests under one limit: `acquire` waits for a slot and takes it."""

    def acquire(self) -> float: ...


class Spacer(Protocol):
    """Keeps calls on one upstream table apart: `wait(table key)` waits for the table's turn."""

    def wait(self, key: str) -> float: ...


class Pacing(Protocol):
    """Where clients get their limiters and spacers: one process (`LimiterRegistry`) or the whole
    deployment through the job store (`bot.targets.shared_pacing.StorePacing`)."""

    def limiter(self, key: str, rate: float, *, clock: Clock = ..., sleep: Sleep = ...) -> Limiter: ...

    def spacer(self, key: str, spacing: float, *, clock: Clock = ..., sleep: Sleep = ...) -> Spacer: ...


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

    def __init__(
        self, spacing: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep, margin_seconds: float = 0.0
    ) -> None:
        self.spacing = spacing
        # The margin widens the spacing as it widens a rate window: arrivals jitter.
        self._gap = spacing + margin_seconds if spacing > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Sleep until the table may be called again, and book this call. Returns the seconds slept."""
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            ready = now if last is None else max(now, last + self._gap)
            self._last[key] = ready
        wait = ready - now
        if wait > 0:
            self._sleep(wait)
        return wait

    def next_allowed(self, key: str) -> float:
        with self._lock:
            last = self._last.get(key)
        now = self._clock()
        return now if last is None else max(now, last + self._gap)


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
                found = self._spacers[key] = TableSpacer(
                    spacing, clock=clock, sleep=sleep, margin_seconds=self.margin_seconds
                )
            return found


DEFAULT_PACING = LimiterRegistry()


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for `5xx` and network errors: backoff_seconds * 2**n, capped. A `429` waits for the
    vendor's `Retry-After` (or its own rule) when that is at most `max_retry_after_seconds`;
    a longer wait is handed to the caller (`UpstreamError.retry_after`), never cut short."""

    max_attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    # Short: a poller must not hold a part `sending` through a long sleep (if its Lambda stopped,
    # an appended D·engage table could not be resent); longer waits go back to the caller.
    max_retry_after_seconds: float = 10.0

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


def retry_after_seconds(response: httpx.Response, now: Callable[[], float] = time.time) -> float | None:
    """The `Retry-After` header in seconds (a number or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def forbidden_reason(response: httpx.Response) -> str | None:
    """The `actionResult` of a 403 (D·engage puts the reason an address is refused there), or None."""
    try:
        payload = response.json()
    except ValueError:
        return None
    holders = [payload, payload.get("data")] if isinstance(payload, dict) else []
    for holder in holders:
        if isinstance(holder, dict) and holder.get("actionResult") not in (None, ""):
            value = holder["actionResult"]
            text = value if isinstance(value, str) else str(value)
            return truncate(text, 300)
    return None


def address_not_allowed(vendor: str, what: str, reason: str, status_code: int = 403) -> UpstreamError:
    return UpstreamError(
        "address_not_allowed",
        f"{vendor} refused {what}: the address the bot calls from is not allowed (403: {reason}). "
        f"Ask the {vendor} account's administrator to add it to the account's IP allow-list; "
        "the credentials were not checked",
        status_code=status_code,
    )


def _wait_words(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


_MAY_HAVE_STARTED = "; the upload may have started: check the table before sending it again"

# Raised before any byte of the request reached the vendor: always safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteError, httpx.WriteTimeout)


@dataclass
class Sender:
    """Sends one logical request with pacing and retries (see the module docstring for the rule)."""

    http: httpx.Client
    limiter: Limiter
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
        before_attempt: Callable[[], object] | None = None,
        rate_limit_wait: Callable[[], float] | None = None,
    ) -> httpx.Response:
        """`before_attempt` runs before every attempt (a table's spacing); `rate_limit_wait` gives
        the vendor's own wait after a `429` without `Retry-After` (D·engage: the table's next
        minute). A 429 whose wait is longer than `max_retry_after_seconds` is not waited for here:
        it raises `rate_limited` at once with `retry_after` set, for the caller to come back then."""
        last: UpstreamError | None = None
        delay = 0.0
        for attempt in range(1, self.retry.max_attempts + 1):
            if attempt > 1 and delay > 0:
                self.sleep(delay)
            try:
                if before_attempt is not None:
                    before_attempt()
                self.limiter.acquire()
            except StoreError as exc:
                # The shared rate limit lives in the job store: if it cannot be booked, nothing is
                # sent (never past the vendor's limit), and the caller may try again later.
                raise UpstreamError(
                    "unreachable",
                    f"{self.vendor} was not called while {what}: the shared rate limit could not be booked ({exc.message})",
                ) from None
            try:
                response = self.http.request(
                    method, url, headers=headers, content=body() if body else None, json=json, params=params
                )
            except _NOT_SENT as exc:
                last = UpstreamError(
                    "unreachable", f"{self.vendor} could not be reached while {what} ({type(exc).__name__})"
                )
                delay = self.retry.delay(attempt)
                continue
            except httpx.TransportError as exc:
                message = f"{self.vendor} did not answer while {what} ({type(exc).__name__})"
                if not resend_after_sent:
                    raise UpstreamError("unreachable", message + _MAY_HAVE_STARTED, may_have_started=True) from None
                last = UpstreamError("unreachable", message)
                delay = self.retry.delay(attempt)
                continue
            if response.status_code == 429:
                asked = retry_after_seconds(response)
                if asked is not None:
                    wait, rule = asked, f"Retry-After {_wait_words(asked)}"
                elif rate_limit_wait is not None:
                    wait = max(0.0, rate_limit_wait())
                    rule = f"the vendor's rule: next call in {_wait_words(wait)}"
                else:
                    wait = self.retry.delay(attempt)
                    rule = f"no Retry-After; backed off {_wait_words(wait)}"
                last = UpstreamError(
                    "rate_limited",
                    f"{self.vendor} rate limited the bot while {what} (429 Too Many Requests; {rule})",
                    status_code=429,
                    retry_after=wait,
                )
                if wait > self.retry.max_retry_after_seconds:
                    raise last
                delay = wait
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
                delay = self.retry.delay(attempt)
                continue
            return response
        assert last is not None
        raise UpstreamError(
            last.kind,
            f"{last.message} (gave up after {self.retry.max_attempts} attempts)",
            status_code=last.status_code,
            retry_after=last.retry_after,
        )
