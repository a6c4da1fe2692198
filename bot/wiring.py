"""The one place that builds the bot's parts (store, staging, target clients, the job service
and the poller) from the typed settings of `bot.settings`. Entry points parse the environment
once (`load_settings`) and hand the result here; parts may be given instead (tests).

The schedule itself (every minute) is in serverless.yml.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping

import httpx

from bot.config import TableConfig, TablesFile, load_tables
from bot.errors import ConfigError
from bot.limits import InFlightCaps
from bot.poller import Poller, PollerSettings
from bot.service import JobService, Notifier, PollSettings
from bot.settings import Settings, load_settings
from bot.staging import Staging, staging_from_settings
from bot.store import DynamoJobStore, JobStore, SqliteJobStore
from bot.targets import BigPandaClient, DengageClient, Pacing, build_client
from bot.targets.base import DEFAULT_PACING
from bot.targets.shared_pacing import StorePacing

UPSTREAM_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def poll_settings(settings: Settings) -> PollSettings:
    return PollSettings(
        lease_seconds=settings.lease_seconds,
        first_check_seconds=settings.first_check_seconds,
        max_check_seconds=settings.max_check_seconds,
        job_timeout_seconds=settings.job_timeout_seconds,
        error_retry_seconds=settings.error_retry_seconds,
        notice_retry_seconds=settings.notice_retry_seconds,
        notice_lease_seconds=settings.notice_lease_seconds,
        intake_lease_seconds=settings.intake_lease_seconds,
        approval_timeout_seconds=settings.approval_timeout_seconds,
        caps=InFlightCaps.from_settings(settings),
        start_at_once=settings.start_upload_at_once,
        follow_seconds=settings.follow_seconds,
    )


def poller_settings(settings: Settings) -> PollerSettings:
    return PollerSettings(
        run_seconds=settings.poll_run_seconds,
        workers=settings.poll_workers,
        per_target=settings.poll_per_target,
    )


def store_from_settings(settings: Settings) -> JobStore:
    if settings.jobs_table:
        import boto3  # AWS_ENDPOINT_URL, when set, points it at DynamoDB Local

        return DynamoJobStore(boto3.client("dynamodb"), settings.jobs_table)
    settings.store_path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteJobStore(settings.store_path)


class TargetClients:
    """One client per target for the life of the process, on one HTTP connection pool, with the
    targets' rate limiters shared by every job (BigPanda: 5 requests a second per organization):
    `build_service` passes the store's pacing (shared by every process of the deployment); the
    default is the process-wide registry of `bot.targets`."""

    def __init__(
        self, http: httpx.Client, environ: Mapping[str, str] | None = None, pacing: Pacing | None = None
    ) -> None:
        self.http = http
        self.environ = environ
        self.pacing = pacing or DEFAULT_PACING
        self._clients: dict[str, BigPandaClient | DengageClient] = {}
        self._lock = threading.Lock()

    def __call__(self, table: TableConfig) -> BigPandaClient | DengageClient:
        with self._lock:
            client = self._clients.get(table.target.name)
            if client is None:
                client = build_client(table.target, self.http, self.environ, pacing=self.pacing)
                self._clients[table.target.name] = client
            return client


def slack_notifier(settings: Settings, tables: TablesFile | None = None) -> Notifier:
    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    from bot.slack.notify import SlackNotifier

    if not settings.slack_bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set: the poller cannot post endings in Slack")
    # One quick retry of a 429 inside the call; longer outages are retried by the next run.
    client = WebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_base_url or WebClient.BASE_URL,
        timeout=10,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    return SlackNotifier(client, tables)


def build_service(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    tables: TablesFile | None = None,
    store: JobStore | None = None,
    staging: Staging | None = None,
    notifier: Notifier | None = None,
    http: httpx.Client | None = None,
    worker_name: str = "poller",
) -> JobService:
    """`environ` holds the vendor credentials the tables file names (default: the process's).
    `worker_name` starts the worker id in leases, history and logs (`slack` for the Slack
    function, which starts and follows uploads too)."""
    tables = tables or load_tables(settings)
    http = http or httpx.Client(timeout=UPSTREAM_TIMEOUT)
    store = store or store_from_settings(settings)
    return JobService(
        store,
        staging or staging_from_settings(settings),
        tables,
        # Rate limits shared by every container and poller, through the job store.
        TargetClients(http, environ, StorePacing(store)),
        notifier or slack_notifier(settings, tables),
        settings=poll_settings(settings),
        worker_id=f"{worker_name}-{secrets.token_hex(4)}",
        work_dir=settings.work_dir,
    )


def build_poller(environ: Mapping[str, str] | None = None, **parts: object) -> Poller:
    """The poller of this process, everything built from the environment (parts may be given)."""
    settings = load_settings(environ)
    service = build_service(settings, environ=environ, **parts)  # type: ignore[arg-type]
    return Poller(service.store, service, poller_settings(settings))
