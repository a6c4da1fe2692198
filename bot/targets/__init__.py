"""Upstream clients, one module per API, behind one small interface (`TargetClient`).

`build_client` is the one wiring place: it reads the target's credentials from the environment
names in the tables file and shares pacing (rate limiters, per-table spacing) through a `Pacing`:
the process's `LimiterRegistry` by default, or `shared_pacing.StorePacing`, which books every
request in the job store so all containers, pollers and Slack functions share the vendor's limits.

Modules: `base` (the protocol, errors' kinds, bodies, pacing, retries), `bigpanda`, `dengage`,
`statuses` (status words as families, a failed job's text), `identity` (what a job was checked
against), `check` (`tablebot check`), `runner` (`tablebot upload`), `shared_pacing`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx

from bot.config import TableConfig, TargetConfig
from bot.errors import ConfigError, UpstreamError
from bot.schema import TableSchema
from bot.targets.base import (
    DEFAULT_PACING,
    ByteSource,
    BytesSource,
    Clock,
    FileSource,
    LimiterRegistry,
    Pacing,
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
from bot.targets.identity import identity_changes, identity_json

__all__ = [
    "BigPandaClient",
    "ByteSource",
    "BytesSource",
    "DengageClient",
    "FileSource",
    "LimiterRegistry",
    "Pacing",
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
    "check_target_options",
    "fetch_schema",
    "identity_changes",
    "identity_json",
    "label_of",
    "plan_parts",
    "replaces_table",
]

# The one place a target kind meets its client class: what the use cases may ask without a client.
_CLIENT_CLASSES: dict[str, type[BigPandaClient] | type[DengageClient]] = {
    BigPandaClient.kind: BigPandaClient,
    DengageClient.kind: DengageClient,
}


def label_of(kind: str) -> str:
    """The vendor's name for people ("BigPanda", "D·engage"); the kind itself if unknown."""
    found = _CLIENT_CLASSES.get(kind)
    return found.label if found else kind


def replaces_table(kind: str) -> bool:
    """Does an upload replace the whole table (so a change preview against the last version means something)?"""
    found = _CLIENT_CLASSES.get(kind)
    return bool(found and found.replaces_table)


DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


# The settings each kind of target reads from `[targets.X]` (each module's docstring lists their
# defaults); anything else there is a typo that would silently keep a default.
_COMMON_OPTIONS = frozenset(
    {
        "requests_per_second",
        "max_attempts",
        "backoff_seconds",
        "max_backoff_seconds",
        "max_retry_after_seconds",
        "timeout_seconds",
        "done_statuses",
        "failed_statuses",
        "running_statuses",
        "status_grace_seconds",
        "unknown_status_reads",
    }
)
TARGET_OPTIONS: dict[str, frozenset[str]] = {
    "bigpanda": _COMMON_OPTIONS | {"max_file_bytes", "error_text_limit"},
    "dengage": _COMMON_OPTIONS
    | {
        "status_path",
        "list_page_size",
        "constant_field",
        "overwrite_field",
        "overwrite_with_empty",
        "part_spacing_seconds",
        "max_request_bytes",
        "token_refresh_seconds",
    },
}


def check_target_options(target: TargetConfig) -> None:
    """ConfigError naming any key under `[targets.X]` the target does not read (a typo)."""
    known = TARGET_OPTIONS.get(target.kind, frozenset())
    unknown = sorted(set(target.options) - known)
    if unknown:
        raise ConfigError(
            f"[targets.{target.name}] has unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)} (a typo?); a {target.kind} target also takes: "
            f"{', '.join(sorted(known))}"
        )


def build_client(
    target: TargetConfig,
    http: httpx.Client,
    environ: Mapping[str, str] | None = None,
    *,
    pacing: Pacing | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> BigPandaClient | DengageClient:
    """The client for `target`. Raises ConfigError when a credential's variable is not set, or a
    key under `[targets.X]` is one the target does not read."""
    check_target_options(target)
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
