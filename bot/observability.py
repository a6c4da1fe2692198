"""What operators see: structured logs with the job on every line, and metrics.

Logs: `setup_logging` is called once by every entry point (the Lambda handlers, `tablebot
serve`). On Lambda every line is one JSON object (Powertools' formatter) on stdout; locally it
is one text line on stderr. The level is `TABLEBOT_LOG_LEVEL`. Inside `job_context(job)` every
line carries `job_id`, `table`, `target` and `delivery` (the Slack delivery that made the job),
so one job's story is one CloudWatch Logs Insights query (docs/operations.md); the Lambda
handlers add the invocation's `request_id`. Tokens that
reach a message by mistake are masked before a line is written.

Metrics: `METRICS`, one recorder per process, counts and times what operators alarm on;
the Lambda handlers flush it as CloudWatch embedded metrics (EMF, Powertools) at the end of
every invocation. Names, units and dimensions are in `METRIC_UNITS` and docs/operations.md.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

if TYPE_CHECKING:
    from bot.settings import Settings
    from bot.store import Job

P = ParamSpec("P")
R = TypeVar("R")
Self_ = TypeVar("Self_")

LOG_FIELDS = ("job_id", "table", "target", "delivery", "request_id")
_NO_FIELDS: Mapping[str, str | None] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str | None]] = contextvars.ContextVar(
    "tablebot_log_context", default=_NO_FIELDS
)

# Anything shaped like a Slack or vendor secret: masked whatever the message (defence in depth:
# the code never logs one on purpose).
_SECRET = re.compile(
    r"(xox[abposre]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|(?i:(?:token|password|secret|userkey)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{4,})"
)


@contextmanager
def job_context(job: Job | None = None, **fields: str | None) -> Iterator[None]:
    """Every log line inside the block names the job (and any `fields` given)."""
    values: dict[str, str | None] = dict(_context.get())
    if job is not None:
        values.update(job_id=job.job_id, table=job.table, target=job.target, delivery=job.delivery_key)
    values.update(fields)
    token = _context.set(values)
    try:
        yield
    finally:
        _context.reset(token)


def in_job_context(
    method: Callable[Concatenate[Self_, Job, P], R],
) -> Callable[Concatenate[Self_, Job, P], R]:
    """A method taking the job as its first argument logs every line inside `job_context(job)`."""

    @functools.wraps(method)
    def wrapper(self: Self_, job: Job, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with job_context(job):
            return method(self, job, *args, **kwargs)

    return wrapper


def mask_secrets(text: str) -> str:
    return _SECRET.sub(lambda m: m.group(0)[:4] + "…[masked]", text)


class _JobFields(logging.Filter):
    """Adds the job's fields to every record, and masks secrets in the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _context.get()
        for name in LOG_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, current.get(name))
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class _CurrentStream(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stdout`/`sys.stderr` as they are when a line is written (not as they were
    at set-up), so a replaced stream (test capture, a redirect) gets the lines."""

    def __init__(self, name: str) -> None:
        super().__init__(getattr(sys, name))
        self._stream_name = name

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = getattr(sys, self._stream_name)
        super().emit(record)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        named = " ".join(f"{n}={getattr(record, n)}" for n in LOG_FIELDS if getattr(record, n, None))
        return f"{line} [{named}]" if named else line


_setup_lock = threading.Lock()
_HANDLER_NAME = "tablebot"


def setup_logging(settings: Settings, *, service: str = "tablebot", json_lines: bool = False) -> logging.Logger:
    """Point every `logging` line of the process at one handler, at the level of the settings.
    `json_lines`: Powertools' JSON formatter on stdout (Lambda); otherwise text on stderr.
    Idempotent: a warm Lambda container calls it once, a second call replaces the handler."""
    level = settings.log_level
    with _setup_lock:
        root = logging.getLogger()
        handler: logging.Handler
        if json_lines:
            from aws_lambda_powertools import Logger
            from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

            handler = _CurrentStream("stdout")
            formatter = LambdaPowertoolsFormatter(service=service, utc=True)
            handler.setFormatter(formatter)
            # The Powertools Logger of the handlers writes through the same handler and filter.
            Logger(service=service, level=level, logger_handler=handler, logger_formatter=formatter)
        else:
            handler = _CurrentStream("stderr")
            handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_JobFields())
        handler.set_name(_HANDLER_NAME)
        for old in list(root.handlers):
            # Ours from an earlier call, and the Lambda runtime's own (one line per record).
            if old.get_name() == _HANDLER_NAME or "Lambda" in type(old).__name__:
                root.removeHandler(old)
        root.addHandler(handler)
        root.setLevel(level)
        # Libraries' chatter stays at WARNING unless the bot's level asks for DEBUG.
        for noisy in ("botocore", "boto3", "urllib3", "httpx", "httpcore", "slack_bolt", "slack_sdk"):
            logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    return logging.getLogger(service)


# -- metrics --------------------------------------------------------------------------------------

# name -> CloudWatch unit. Dimensions (besides the service) are given where recorded.
METRIC_UNITS: Mapping[str, str] = {
    "FilesChecked": "Count",  # Valid=true|false
    "ValidationSeconds": "Seconds",
    "UploadsStarted": "Count",  # By=slack|poller
    "UploadsEnded": "Count",  # Ending=done|failed|timed_out|cancelled
    "UpstreamSeconds": "Seconds",  # from the upload start to the ending seen (the vendor's latency)
    "UpstreamCallSeconds": "Seconds",  # Call=start|status: one HTTP call to the vendor
    "PollerLagSeconds": "Seconds",  # how late a due job was picked up
    "OldestWaitingSeconds": "Seconds",  # the most overdue job at a due-index read (0: none)
    "QuarantinedRecords": "Count",
    "PollerStepErrors": "Count",  # a step failed unexpectedly (a bug): logged with its job
    "UploadsRefused": "Count",  # Limit=user|table: a cap on uploads in flight
}


# Values kept per metric between two flushes: a Lambda invocation flushes long before; a process
# that never flushes (`tablebot serve`) keeps only the latest, so its memory stays bounded.
KEPT_VALUES = 10_000


class Metrics:
    """A process's metrics, recorded from any thread and flushed as EMF by the Lambda handlers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], deque[float]] = {}

    def add(self, name: str, value: float = 1.0, **dimensions: str) -> None:
        if name not in METRIC_UNITS:
            raise ValueError(f"unknown metric {name!r}: add it to METRIC_UNITS (and docs/operations.md)")
        key = (name, tuple(sorted(dimensions.items())))
        with self._lock:
            self._values.setdefault(key, deque(maxlen=KEPT_VALUES)).append(float(value))

    def total(self, name: str, **dimensions: str) -> float:
        """The sum of what was recorded under `name` (and these dimensions, if given) since the last flush."""
        with self._lock:
            return sum(
                sum(values)
                for (n, dims), values in self._values.items()
                if n == name and all(dict(dims).get(k) == v for k, v in dimensions.items())
            )

    def drain(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]:
        with self._lock:
            values, self._values = self._values, {}
        return {key: list(kept) for key, kept in values.items()}

    def flush_emf(self, *, namespace: str, service: str) -> int:
        """Print what was recorded as CloudWatch embedded metric objects (Powertools), one per metric
        and set of dimensions; returns how many were printed. Nothing recorded: nothing printed."""
        from aws_lambda_powertools.metrics import EphemeralMetrics

        printed = 0
        for (name, dims), values in self.drain().items():
            # EMF takes at most 100 values of a metric per object (Powertools flushes by itself at
            # the 100th, which would leave the explicit flush below empty): 99 at a time.
            for start in range(0, len(values), 99):
                emf = EphemeralMetrics(namespace=namespace, service=service)
                for key, label in dims:
                    emf.add_dimension(name=key, value=label)
                for value in values[start : start + 99]:
                    emf.add_metric(name=name, unit=METRIC_UNITS[name], value=value)
                emf.flush_metrics()
                printed += 1
        return printed


METRICS = Metrics()


def record_check(valid: bool, seconds: float) -> None:
    """A file was validated (the intake)."""
    METRICS.add("FilesChecked", Valid=str(valid).lower())
    METRICS.add("ValidationSeconds", seconds)


def flush_metrics(settings: Settings, service: str = "tablebot") -> None:
    """End of a Lambda invocation: the metrics of this invocation go to CloudWatch (EMF)."""
    try:
        METRICS.flush_emf(namespace=settings.metrics_namespace, service=service)
    except Exception:  # metrics must never fail an invocation
        logging.getLogger(__name__).exception("metrics could not be flushed")
