"""Builds the Slack front end's parts from environment settings (`build_slack_deps`).

| variable | what | default |
|---|---|---|
| `SLACK_BOT_TOKEN` | the bot token (`xoxb-...`) | required |
| `SLACK_SIGNING_SECRET` | verifies requests from Slack (HTTP / Lambda) | required over HTTP |
| `SLACK_API_BASE_URL` | the Slack Web API (a local server in tests) | Slack itself |
| `TABLEBOT_SLASH_COMMAND` | the slash command's name | `/table` |
| `TABLEBOT_USERGROUP_CACHE_SECONDS` | how long a user group's members are kept | 60 |
| store, staging, targets, sources | as in `bot.wiring` and `bot.sources.SourceSettings.from_env` | |
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.config import ConfigError, Settings, TableConfig, TablesFile
from bot.intake import Fetcher, Intake, IntakeSettings
from bot.schema import TableSchema
from bot.slack.app import SlackDeps
from bot.slack.permissions import GroupCache, Permissions
from bot.sources import SourceSettings
from bot.staging import Staging, staging_from_env
from bot.store import JobStore
from bot.targets.shared_pacing import StorePacing
from bot.wiring import UPSTREAM_TIMEOUT, TargetClients, build_service, store_from_env

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def slack_client(env: Mapping[str, str]) -> WebClient:
    token = env.get("SLACK_BOT_TOKEN")
    if not token:
        raise ConfigError("SLACK_BOT_TOKEN is not set: the bot cannot talk to Slack")
    # 429s are retried inside the call (Retry-After honoured), twice, then surface as errors.
    return WebClient(
        token=token,
        base_url=env.get("SLACK_API_BASE_URL") or WebClient.BASE_URL,
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
    tables: TablesFile | None = None,
    store: JobStore | None = None,
    staging: Staging | None = None,
    client: WebClient | None = None,
    http: httpx.Client | None = None,
    s3_client: S3Client | None = None,
) -> SlackDeps:
    """Everything the Bolt app needs, from the environment (parts may be given, e.g. in tests)."""
    env = os.environ if environ is None else environ
    tables = tables or Settings.from_env(env).load_tables()
    store = store or store_from_env(env)
    staging = staging or staging_from_env(env)
    client = client or slack_client(env)
    http = http or httpx.Client(timeout=UPSTREAM_TIMEOUT)
    sources = SourceSettings.from_env(env)
    if s3_client is None and sources.s3_allowed_prefixes:
        import boto3  # only when S3 reads are allowed at all

        s3_client = boto3.client("s3")
    targets = TargetClients(http, env, StorePacing(store))  # rate limits shared through the store

    def schema_for(table: TableConfig) -> TableSchema:
        return table.configured_schema() or targets(table).fetch_schema(table)

    work_dir = env.get("TABLEBOT_WORK_DIR")
    intake = Intake(
        store,
        staging,
        tables,
        schema_for,
        Fetcher(http, str(env.get("SLACK_BOT_TOKEN", "")), sources, s3_client),
        work_dir=Path(work_dir) if work_dir else None,
        settings=IntakeSettings.from_env(env),
    )
    service = build_service(env, tables=tables, store=store, staging=staging, http=http)
    try:
        ttl = float(env.get("TABLEBOT_USERGROUP_CACHE_SECONDS", "60"))
    except ValueError:
        raise ConfigError("TABLEBOT_USERGROUP_CACHE_SECONDS must be a number of seconds") from None
    fetch = _group_fetcher(client)
    return SlackDeps(
        tables=tables,
        store=store,
        intake=intake,
        service=service,
        client=client,
        permissions=Permissions(tables, GroupCache(fetch, ttl_seconds=ttl)),
        source_settings=sources,
        signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
        command=env.get("TABLEBOT_SLASH_COMMAND", "/table"),
    )
