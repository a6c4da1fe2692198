"""Upstream clients, one module per API, behind one small interface (`TargetClient`).

`build_client` is the one wiring place: it reads the target's credentials from the environment
names in the tables file and shares pacing (rate limiters, per-table spacing) through a registry,
so every client of one account in a process respects the vendor's limits together.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx

from bot.config import TableConfig, TargetConfig
from bot.errors import UpstreamError
from bot.schema import TableSchema
from bot.targets.base import (
    DEFAULT_PACING,
    ByteSource,
    BytesSource,
    Clock,
    FileSource,
    LimiterRegistry,
    RateLimiter,
    RetryPolicy,
    Sleep,
    TableSpacer,
    TargetClient,
    UpstreamJob,
    UpstreamStatus,
)
from bot.targets.bigpanda import DEFAULT_REQUESTS_PER_SECOND as BIGPANDA_RPS
from bot.targets.bigpanda import BigPandaClient
from bot.targets.dengage import DengageClient, DengageSettings, PartPlan, PartRange, plan_parts

__all__ = [
    "BigPandaClient",
    "ByteSource",
    "BytesSource",
    "DengageClient",
    "FileSource",
    "LimiterRegistry",
    "PartPlan",
    "PartRange",
    "RateLimiter",
    "RetryPolicy",
    "TableSpacer",
    "TargetClient",
    "UpstreamError",
    "UpstreamJob",
    "UpstreamStatus",
    "build_client",
    "fetch_schema",
    "plan_parts",
]

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def build_client(
    target: TargetConfig,
    http: httpx.Client,
    environ: Mapping[str, str] | None = None,
    *,
    pacing: LimiterRegistry | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> BigPandaClient | DengageClient:
    """The client for `target`. Raises ConfigError when a credential's variable is not set."""
    pacing = pacing or DEFAULT_PACING
    if target.kind == "bigpanda":
        token = target.secret(target.token_env, environ)
        rate = float(target.options.get("requests_per_second", BIGPANDA_RPS))
        # BigPanda limits per organization, i.e. per token: key on the variable, never the value.
        limiter = pacing.limiter(f"bigpanda|{target.base_url}|{target.token_env}", rate, clock=clock, sleep=sleep)
        return BigPandaClient(target, http, token=token, limiter=limiter, sleep=sleep)
    settings = DengageSettings.from_options(target.options)
    userkey = target.secret(target.userkey_env, environ)
    password = target.secret(target.password_env, environ)
    # D·engage limits per caller address: one limiter per API host for this process.
    limiter = pacing.limiter(f"dengage|{target.base_url}", settings.requests_per_second, clock=clock, sleep=sleep)
    spacer = pacing.spacer(f"dengage|{target.base_url}", settings.part_spacing_seconds, clock=clock, sleep=sleep)
    return DengageClient(
        target,
        http,
        userkey=userkey,
        password=password,
        limiter=limiter,
        spacer=spacer,
        settings=settings,
        clock=clock,
        sleep=sleep,
    )


def fetch_schema(table: TableConfig, http: httpx.Client | None = None) -> TableSchema:
    """The table's schema read from its target (for tables whose columns the tables file omits)."""
    if http is not None:
        return build_client(table.target, http).fetch_schema(table)
    with httpx.Client(timeout=DEFAULT_TIMEOUT) as own:
        return build_client(table.target, own).fetch_schema(table)
