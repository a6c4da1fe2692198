"""Helpers for the poller tests: a world of real parts (sandboxes, a store, folder staging, the
local Slack API) and jobs created in the store directly, queued with a staged normalized file."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from slack_sdk import WebClient

from bot.config import TablesFile
from bot.poller import Poller, PollerSettings
from bot.service import JobService, Notifier, PollSettings
from bot.slack.notify import SlackNotifier
from bot.staging import FolderStaging
from bot.staging.layout import normalized_key
from bot.store import Job, JobState, JobStore, NewJob
from bot.targets import LimiterRegistry
from bot.wiring import TargetClients
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import SANDBOX_ENV

CHANNEL = "C0OPS0001"
ALICE = "U0ALICE01"
S = JobState

# Fast settings: every wait of the poller in tenths of a second.
FAST = PollSettings(
    lease_seconds=5.0,
    first_check_seconds=0.1,
    max_check_seconds=0.3,
    job_timeout_seconds=30.0,
    error_retry_seconds=0.2,
    notice_retry_seconds=0.2,
    gate_recheck_seconds=0.2,
)
FAST_LOOP = PollerSettings(run_seconds=1.0, idle_seconds=0.05, workers=4, per_target=2)

HOSTS_CSV = b"host,service,owner\nweb-1,checkout,alice\nweb-2,search,bob\n"
CONTACTS_CSV = b"contact_key,email,city\nc1,a@example.com,Izmir\nc2,b@example.com,Ankara\n"

_delivery = itertools.count(1)


@dataclass
class World:
    store: JobStore
    staging: FolderStaging
    tables: TablesFile
    slack: LocalSlackApi
    http: httpx.Client
    settings: PollSettings = FAST
    services: list[JobService] = field(default_factory=list)

    def web_client(self) -> WebClient:
        return WebClient(token=self.slack.bot_token, base_url=self.slack.base_url)

    def service(
        self,
        *,
        store: JobStore | None = None,
        settings: PollSettings | None = None,
        worker_id: str | None = None,
        notifier: Notifier | None = None,
    ) -> JobService:
        """A worker with its own target clients and rate limiters (another Lambda container)."""
        service = JobService(
            store or self.store,
            self.staging,
            self.tables,
            TargetClients(self.http, SANDBOX_ENV, LimiterRegistry()),
            notifier or SlackNotifier(self.web_client(), self.tables),
            settings=settings or self.settings,
            worker_id=worker_id or f"test-worker-{len(self.services) + 1}",
        )
        self.services.append(service)
        return service

    def poller(self, service: JobService | None = None, settings: PollerSettings = FAST_LOOP) -> Poller:
        service = service or self.service()
        return Poller(service.store, service, settings)

    def queue_job(
        self,
        table: str,
        data: bytes,
        *,
        file_name: str | None = None,
        stage: bool = True,
        sha256: str | None = None,
        identity: str | None = None,
    ) -> Job:
        """A job as the Slack front end leaves it: a thread with a status message, the normalized
        file staged at its layout key (`uploads/<table>/<job id>/normalized.csv`), validated, queued."""
        n = next(_delivery)
        parent = self.slack.post_user_message(CHANNEL, ALICE, f"upload {table} #{n}")
        client = self.web_client()
        status = client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="Validating…")
        job, _ = self.store.create_job(
            f"Ev{n}-{time.monotonic_ns()}",
            NewJob(
                table=table,
                target=self.tables.table(table).target.name,
                requested_by=ALICE,
                source=f"F{n}",
                file_name=file_name or f"{table}.csv",
                channel_id=CHANNEL,
                thread_ts=parent["ts"],
                status_ts=status["ts"],
                size_bytes=len(data),
                sha256=sha256,
            ),
        )
        key = normalized_key(table, job.job_id)
        if stage:
            self.staging.put(key, [data])
        job = self.store.transition(job, S.VALIDATING, actor="front", reason="validating", changes={"staging_key": key})
        changes = {"target_identity": identity} if identity is not None else None
        return self.store.transition(job, S.QUEUED, actor="front", reason="valid", changes=changes)

    def endings(self, job: Job) -> list[dict[str, Any]]:
        """The ending posts in the job's thread (everything after the status message)."""
        assert job.thread_ts is not None
        thread = self.slack.thread(CHANNEL, job.thread_ts)
        return [m for m in thread[1:] if m["ts"] != job.status_ts]

    def status_text(self, job: Job) -> str:
        assert job.status_ts is not None
        return str(self.slack.message(CHANNEL, job.status_ts)["text"])


def run_until(
    pollers: Iterable[Poller], done: Callable[[], bool], *, timeout: float = 30.0, run_seconds: float = 0.5
) -> None:
    """Run the pollers side by side (threads), a short run after another, until `done()`."""
    pollers = list(pollers)
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the pollers did not reach the expected state in time")
        threads = [threading.Thread(target=p.run, args=(run_seconds,)) for p in pollers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def ended_and_told(job: Job) -> bool:
    """Ended, and its ending notice is no longer pending (posted, found, or not needed)."""
    return job.is_terminal and not job.notice_pending


def all_ended(store: JobStore, jobs: Iterable[Job]) -> Callable[[], bool]:
    ids = [j.job_id for j in jobs]
    return lambda: all(ended_and_told(store.get_job(i)) for i in ids)


def write_poller_tables(path: Path, bigpanda_url: str, dengage_url: str, dengage_extra: str = "") -> TablesFile:
    from bot.config import load_tables_file
    from tests.fixtures_upstream import write_tables_file

    write_tables_file(path, bigpanda_url=bigpanda_url, dengage_url=dengage_url)
    if dengage_extra:
        text = path.read_text().replace("[tables.hosts]", f"{dengage_extra}\n\n[tables.hosts]", 1)
        path.write_text(text)
    return load_tables_file(path)
