"""The scheduled poller's loop: for most of a minute, hand due jobs to a small thread pool.

EventBridge starts a run every minute (`handlers/poll_jobs.py`); one run keeps asking the store
for due jobs until `run_seconds` have passed, so a job that ends upstream is reported within
seconds, not at the next minute. Runs may overlap (a slow run, a Lambda retry): the job lease
and the conditional writes in `bot.service` make that safe, the pool only makes it fast.

Free when idle: a scheduled run (no `stop` event) returns at once when nothing is due within
the run and nothing is in flight (`JobStore.next_due_at`: the earliest next check in the due
index, leased jobs included); it keeps looping only while jobs are in flight or due before its
deadline. A loop that owns a `stop` event (`tablebot serve`, the demo) keeps its run instead.

A record that cannot be read is quarantined by the store's `due_jobs` and counted here
(`RunReport.quarantined`, metric `QuarantinedRecords`); every other job goes on.

Concurrency: at most `workers` jobs at once, and at most `per_target` of them on one upstream
target, so a busy target (waiting on its shared rate limiter) cannot hold every worker while
another target's jobs wait. A step that raises is logged and counted; it never stops the run.
The due jobs it asks for are its own: queued, uploading, submitted, ended jobs whose notice
is still to be posted, and front-end jobs left behind (an intake that died, an approval wait past
its deadline), which it ends with a notice (`bot.service.due.is_poller_work`).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from bot.errors import StoreError
from bot.observability import METRICS, Metrics
from bot.service import POLLER_DUE_STATES, POLLER_STATES, JobService, Step, is_poller_work
from bot.store import Job, JobStore
from bot.store.model import utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollerSettings:
    run_seconds: float = 50.0  # of the one-minute schedule; leave room for in-flight steps
    idle_seconds: float = 1.0  # between store queries when nothing is due
    workers: int = 4
    per_target: int = 2  # jobs of one target in flight at once
    batch: int = 100  # due jobs read per query


@dataclass
class RunReport:
    steps: Counter[str] = field(default_factory=Counter)
    queries: int = 0
    seconds: float = 0.0
    quarantined: list[str] = field(default_factory=list)  # keys of the records quarantined in this run
    idle: bool = False  # returned early: nothing due within the run, nothing in flight

    @property
    def processed(self) -> int:
        return sum(self.steps.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "steps": dict(self.steps),
            "processed": self.processed,
            "queries": self.queries,
            "seconds": self.seconds,
            "quarantined": list(self.quarantined),
            "idle": self.idle,
        }


class Poller:
    def __init__(
        self,
        store: JobStore,
        service: JobService,
        settings: PollerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics = METRICS,
    ) -> None:
        self.store = store
        self.service = service
        self.settings = settings or PollerSettings()
        self._clock = clock
        self.metrics = metrics
        self._backlog: list[Job] = []
        self._stepped: set[str] = set()
        self._read_at = float("-inf")

    def run(
        self, run_seconds: float | None = None, stop: threading.Event | None = None, *, idle_return: bool | None = None
    ) -> RunReport:
        """Work through due jobs until `run_seconds` (default from settings) pass or `stop` is set;
        steps in flight at the end are finished before returning. `idle_return` (default: no
        `stop` given, a scheduled run): return as soon as nothing is due before the deadline and
        nothing is in flight."""
        settings = self.settings
        started = self._clock()
        deadline = started + (settings.run_seconds if run_seconds is None else run_seconds)
        if idle_return is None:
            idle_return = stop is None
        stop = stop or threading.Event()
        report = RunReport()
        in_flight: dict[Future[Step], Job] = {}
        with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="poller") as pool:
            while True:
                accepting = self._clock() < deadline and not stop.is_set()
                if not accepting and not in_flight:
                    break
                submitted = 0
                if accepting and len(in_flight) < settings.workers:
                    submitted = self._submit_due(pool, in_flight, report)
                if in_flight:
                    done, _ = wait(list(in_flight), timeout=settings.idle_seconds, return_when=FIRST_COMPLETED)
                    for future in done:
                        job = in_flight.pop(future)
                        try:
                            step = future.result()
                        except Exception:  # process() catches its own; this is a last line of defence
                            log.exception("job %s: step failed", job.job_id)
                            step = "error"
                        report.steps[step] += 1
                        if step == "error":
                            self.metrics.add("PollerStepErrors")
                elif not submitted and accepting:
                    if idle_return and not self._backlog and self._idle_until(deadline):
                        report.idle = True
                        break
                    stop.wait(min(settings.idle_seconds, max(0.0, deadline - self._clock())))
        report.seconds = self._clock() - started
        return report

    def _idle_until(self, deadline: float) -> bool:
        """Nothing in flight and nothing due before `deadline` (the store's earliest next check)?"""
        try:
            due_at = self.store.next_due_at()
        except StoreError as exc:
            log.warning("the due index could not be read (%s); the run goes on", exc)
            return False
        if due_at is None:
            return True
        return (due_at - utc_now()).total_seconds() > deadline - self._clock()

    def _submit_due(self, pool: ThreadPoolExecutor, in_flight: dict[Future[Step], Job], report: RunReport) -> int:
        """Start due jobs from the backlog, re-reading the store when the backlog is used up or old.
        A job stepped since the last read is not started again from that (stale) read."""
        now = self._clock()
        if not self._backlog or now - self._read_at >= self.settings.idle_seconds:
            try:
                # Only the poller's states: a front-end job is due only once left behind (its
                # intake's lease expired, its approval deadline passed), so they never fill the batch.
                due = self.store.due_jobs(limit=self.settings.batch, states=POLLER_DUE_STATES)
            except StoreError as exc:
                log.warning("due jobs could not be read (%s); trying again", exc)
                return 0
            self._backlog = list(due)
            self._read_at = now
            self._stepped.clear()
            report.queries += 1
            for damaged in due.quarantined:  # each reported once: the store's write made it ours
                log.error("job record %s quarantined: %s (docs/operations.md)", damaged.key, damaged.reason)
                report.quarantined.append(damaged.key)
                self.metrics.add("QuarantinedRecords")
            wall = utc_now()
            overdue = [(wall - j.next_check_at).total_seconds() for j in due if j.next_check_at is not None]
            self.metrics.add("OldestWaitingSeconds", max([0.0, *overdue]))
        busy_ids = {job.job_id for job in in_flight.values()}
        # A pending notice, or a left-behind front-end job, only talks to Slack: it does not count
        # against its target.
        per_target = Counter(job.target for job in in_flight.values() if job.state in POLLER_STATES)
        submitted = 0
        remaining: list[Job] = []
        for job in self._backlog:
            if job.job_id in busy_ids or job.job_id in self._stepped or not is_poller_work(job):
                continue
            upstream = job.state in POLLER_STATES
            if len(in_flight) >= self.settings.workers or (
                upstream and per_target[job.target] >= self.settings.per_target
            ):
                remaining.append(job)
                continue
            if job.next_check_at is not None:
                self.metrics.add("PollerLagSeconds", max(0.0, (utc_now() - job.next_check_at).total_seconds()))
            # The step runs in the run's logging context (the Lambda request id on its lines).
            in_flight[pool.submit(contextvars.copy_context().run, self.service.process, job)] = job
            busy_ids.add(job.job_id)
            self._stepped.add(job.job_id)
            per_target[job.target] += upstream
            submitted += 1
        self._backlog = remaining
        return submitted
