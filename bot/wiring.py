"""The one place that builds the poller's parts from environment settings.

| variable | what | default |
|---|---|---|
| `TABLEBOT_CONFIG` | the tables file | required |
| `TABLEBOT_JOBS_TABLE` | DynamoDB table of the job store (`AWS_ENDPOINT_URL` points boto3 elsewhere) | unset: SQLite |
| `TABLEBOT_STORE_PATH` | SQLite file of the embedded store (local runs) | `.tablebot/jobs.sqlite3` |
| `TABLEBOT_STAGING_*` | staging (see `bot.staging.staging_from_env`) | a local folder |
| `SLACK_BOT_TOKEN`, `SLACK_API_BASE_URL` | Slack Web API | Slack itself |
| `TABLEBOT_POLL_RUN_SECONDS` | how long one scheduled run keeps working | 50 |
| `TABLEBOT_POLL_WORKERS`, `TABLEBOT_POLL_PER_TARGET` | jobs at once, of one target at once | 4, 2 |
| `TABLEBOT_POLL_FIRST_CHECK_SECONDS`, `TABLEBOT_POLL_MAX_CHECK_SECONDS` | status check interval, growing from first to max | 2, 30 |
| `TABLEBOT_JOB_TIMEOUT_SECONDS` | upload start to `timed_out` | 3600 |
| `TABLEBOT_LEASE_SECONDS` | a worker's hold on a job (longer than one upload) | 600 |
| `TABLEBOT_NOTICE_RETRY_SECONDS`, `TABLEBOT_ERROR_RETRY_SECONDS` | wait after Slack / upstream trouble | 30, 30 |
| `TABLEBOT_NOTICE_LEASE_SECONDS` | a worker's hold on an ending notice it is posting (then another looks in the thread) | 120 |
| `TABLEBOT_INTAKE_LEASE_SECONDS` | the intake's hold on a job while it checks a file (> Lambda's 15 min) | 960 |
| `TABLEBOT_APPROVAL_TIMEOUT_SECONDS` | an approval or confirmation wait before it is cancelled | 86400 |
| `TABLEBOT_WORK_DIR` | where a staged file is copied before sending | the system temp dir |

The schedule itself (every minute) is in serverless.yml.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

import httpx

from bot.config import ConfigError, Settings, TableConfig, TablesFile
from bot.poller import Poller, PollerSettings
from bot.service import JobService, Notifier, PollSettings
from bot.staging import Staging, staging_from_env
from bot.store import DynamoJobStore, JobStore, SqliteJobStore
from bot.targets import BigPandaClient, DengageClient, Pacing, build_client
from bot.targets.base import DEFAULT_PACING
from bot.targets.shared_pacing import StorePacing

DEFAULT_STORE_PATH = ".tablebot/jobs.sqlite3"
UPSTREAM_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def _number(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number of seconds (or a count), not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{key} must be positive, not {raw!r}")
    return value


def poll_settings_from_env(env: Mapping[str, str]) -> PollSettings:
    d = PollSettings()
    return PollSettings(
        lease_seconds=_number(env, "TABLEBOT_LEASE_SECONDS", d.lease_seconds),
        first_check_seconds=_number(env, "TABLEBOT_POLL_FIRST_CHECK_SECONDS", d.first_check_seconds),
        max_check_seconds=_number(env, "TABLEBOT_POLL_MAX_CHECK_SECONDS", d.max_check_seconds),
        job_timeout_seconds=_number(env, "TABLEBOT_JOB_TIMEOUT_SECONDS", d.job_timeout_seconds),
        error_retry_seconds=_number(env, "TABLEBOT_ERROR_RETRY_SECONDS", d.error_retry_seconds),
        notice_retry_seconds=_number(env, "TABLEBOT_NOTICE_RETRY_SECONDS", d.notice_retry_seconds),
        notice_lease_seconds=_number(env, "TABLEBOT_NOTICE_LEASE_SECONDS", d.notice_lease_seconds),
        intake_lease_seconds=_number(env, "TABLEBOT_INTAKE_LEASE_SECONDS", d.intake_lease_seconds),
        approval_timeout_seconds=_number(env, "TABLEBOT_APPROVAL_TIMEOUT_SECONDS", d.approval_timeout_seconds),
    )


def poller_settings_from_env(env: Mapping[str, str]) -> PollerSettings:
    d = PollerSettings()
    return PollerSettings(
        run_seconds=_number(env, "TABLEBOT_POLL_RUN_SECONDS", d.run_seconds),
        workers=int(_number(env, "TABLEBOT_POLL_WORKERS", d.workers)),
        per_target=int(_number(env, "TABLEBOT_POLL_PER_TARGET", d.per_target)),
    )


def store_from_env(env: Mapping[str, str]) -> JobStore:
    table = env.get("TABLEBOT_JOBS_TABLE")
    if table:
        import boto3  # AWS_ENDPOINT_URL, when set, points it at DynamoDB Local

        return DynamoJobStore(boto3.client("dynamodb"), table)
    path = Path(env.get("TABLEBOT_STORE_PATH", DEFAULT_STORE_PATH))
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteJobStore(path)


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


def slack_notifier(env: Mapping[str, str]) -> Notifier:
    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    from bot.slack.notify import SlackNotifier

    token = env.get("SLACK_BOT_TOKEN")
    if not token:
        raise ConfigError("SLACK_BOT_TOKEN is not set: the poller cannot post endings in Slack")
    base_url = env.get("SLACK_API_BASE_URL") or WebClient.BASE_URL
    # One quick retry of a 429 inside the call; longer outages are retried by the next run.
    client = WebClient(
        token=token,
        base_url=base_url,
        timeout=10,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    return SlackNotifier(client)


def build_service(
    environ: Mapping[str, str] | None = None,
    *,
    tables: TablesFile | None = None,
    store: JobStore | None = None,
    staging: Staging | None = None,
    notifier: Notifier | None = None,
    http: httpx.Client | None = None,
) -> JobService:
    env = os.environ if environ is None else environ
    tables = tables or Settings.from_env(env).load_tables()
    http = http or httpx.Client(timeout=UPSTREAM_TIMEOUT)
    work_dir = env.get("TABLEBOT_WORK_DIR")
    store = store or store_from_env(env)
    return JobService(
        store,
        staging or staging_from_env(env),
        tables,
        # Rate limits shared by every container and poller, through the job store.
        TargetClients(http, env, StorePacing(store)),
        notifier or slack_notifier(env),
        settings=poll_settings_from_env(env),
        work_dir=Path(work_dir) if work_dir else None,
    )


def build_poller(environ: Mapping[str, str] | None = None, **parts: object) -> Poller:
    """The poller of this process, everything built from the environment (parts may be given)."""
    env = os.environ if environ is None else environ
    service = build_service(env, **parts)  # type: ignore[arg-type]
    return Poller(service.store, service, poller_settings_from_env(env))
