"""Builds the Slack front end's parts from the typed settings (`build_slack_deps`); every
variable it reads is defined in `bot.settings`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import httpx
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.config import TableConfig, TablesFile, load_tables
from bot.errors import ConfigError
from bot.intake import Fetcher, Intake, IntakeSettings
from bot.schema import TableSchema
from bot.settings import Settings, load_settings
from bot.slack.context import SlackDeps
from bot.slack.permissions import GroupCache, Permissions
from bot.sources import SourceSettings
from bot.staging import Staging, staging_from_settings
from bot.store import JobStore
from bot.targets.check import check_table
from bot.targets.shared_pacing import StorePacing
from bot.wiring import UPSTREAM_TIMEOUT, TargetClients, build_service, store_from_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def slack_client(settings: Settings) -> WebClient:
    if not settings.slack_bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set: the bot cannot talk to Slack")
    # 429s are retried inside the call (Retry-After honoured), twice, then surface as errors.
    return WebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_base_url or WebClient.BASE_URL,
        timeout=15,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )


def _group_fetcher(client: WebClient) -> Callable[[str], Iterable[str]]:
    def fetch(group: str) -> Iterable[str]:
        try:
            users = client.usergroups_users_list(usergroup=group)["users"]
        except (SlackApiError, SlackClientError, OSError) as exc:
            raise LookupError(f"usergroups.users.list failed for {group}: {type(exc).__name__}") from None
        return [str(u) for u in users or []]

    return fetch


def build_slack_deps(
    environ: Mapping[str, str] | None = None,
    *,
    settings: Settings | None = None,
    tables: TablesFile | None = None,
    store: JobStore | None = None,
    staging: Staging | None = None,
    client: WebClient | None = None,
    http: httpx.Client | None = None,
    s3_client: S3Client | None = None,
) -> SlackDeps:
    """Everything the Bolt app needs, from the environment (parts may be given, e.g. in tests)."""
    settings = settings or load_settings(environ)
    tables = tables or load_tables(settings)
    store = store or store_from_settings(settings)
    staging = staging or staging_from_settings(settings)
    client = client or slack_client(settings)
    http = http or httpx.Client(timeout=UPSTREAM_TIMEOUT)
    sources = SourceSettings.from_settings(settings)
    if s3_client is None and sources.s3_allowed_prefixes:
        import boto3  # only when S3 reads are allowed at all

        s3_client = boto3.client("s3")
    targets = TargetClients(http, environ, StorePacing(store))  # rate limits shared through the store

    def schema_for(table: TableConfig) -> TableSchema:
        return table.configured_schema() or targets(table).fetch_schema(table)

    intake = Intake(
        store,
        staging,
        tables,
        schema_for,
        Fetcher(http, settings.slack_bot_token or "", sources, s3_client),
        work_dir=settings.work_dir,
        settings=IntakeSettings.from_settings(settings),
    )
    service = build_service(
        settings, environ=environ, tables=tables, store=store, staging=staging, http=http, worker_name="slack"
    )
    fetch = _group_fetcher(client)
    return SlackDeps(
        tables=tables,
        store=store,
        intake=intake,
        service=service,
        client=client,
        permissions=Permissions(tables, GroupCache(fetch, ttl_seconds=settings.usergroup_cache_seconds)),
        source_settings=sources,
        signing_secret=settings.slack_signing_secret,
        command=settings.slash_command,
        check_table=lambda table: check_table(table, http, environ),
    )
