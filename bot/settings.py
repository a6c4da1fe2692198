"""Every environment variable the bot reads, defined once and parsed once.

Each field of `Settings` is one variable: its name, its default and its meaning live in the
`setting(...)` call beside the field, and nothing else in `bot/` reads the environment for a
setting of its own. `load_settings(env)` parses them all at start (a bad value is a
`ConfigError` naming the variable), warns about `TABLEBOT_*` names it does not know (a typo
would otherwise silently mean the default), and the wiring passes the typed object on.

The README's table of variables is generated from here: `python -m bot.settings --markdown`
(a test fails when the README and this module differ).

Secrets (`secret=True`) are the only values read from SSM Parameter Store on Lambda
(`bot.secrets`), together with the vendor credentials the tables file names; `functions` says
which Lambda function needs each one, so each function's role reads only its own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import ConfigError

log = logging.getLogger(__name__)

MB = 1_000_000  # "500 MB" is read as 500,000,000 bytes, the stricter reading
PREFIX = "TABLEBOT_"
# The Lambda functions of serverless.yml; `tablebot serve` and the CLI read what they need.
SLACK_FUNCTION = "slack"
POLL_FUNCTION = "poll"
BOTH = frozenset({SLACK_FUNCTION, POLL_FUNCTION})

Parse = Callable[[str, str], Any]


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _path(name: str, raw: str) -> Path:
    return Path(raw.strip())


def _positive(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be a positive number, not {raw!r}")
    return value


def _count(name: str, raw: str) -> int:
    value = _positive(name, raw)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, not {raw!r}")
    return int(value)


def _megabytes(name: str, raw: str) -> int:
    return int(_positive(name, raw) * MB)


def _level(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"{name} must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {raw!r}")
    return value


def _seconds_or_zero(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds (0: none), not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more seconds, not {raw!r}")
    return value


def _cap(name: str, raw: str) -> int:
    """A whole number; 0 means no cap."""
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (0: no cap), not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 (no cap) or more, not {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _names(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Variable:
    """One environment variable as documented: what `setting(...)` records beside a field."""

    name: str
    meaning: str
    default_text: str
    parse: Parse
    secret: bool
    functions: frozenset[str]


def _shown(default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


def setting(
    name: str,
    default: Any,
    meaning: str,
    *,
    parse: Parse = _text,
    secret: bool = False,
    functions: frozenset[str] = BOTH,
    default_text: str | None = None,
) -> Any:
    """A field of `Settings` read from the variable `name` (unset or empty: `default`)."""
    shown = default_text if default_text is not None else _shown(default)
    return field(default=default, metadata={"variable": Variable(name, meaning, shown, parse, secret, functions)})


@dataclass(frozen=True)
class Settings:
    """The process's settings; `Settings()` is the defaults (tests build it with `replace`)."""

    # -- where things are ---------------------------------------------------------------------
    config_path: Path | None = setting(
        "TABLEBOT_CONFIG", None, "the tables file (TOML); `--config` overrides it in the CLI", parse=_path
    )
    jobs_table: str | None = setting(
        "TABLEBOT_JOBS_TABLE", None, "DynamoDB table of the job store; unset: the embedded SQLite store"
    )
    store_path: Path = setting(
        "TABLEBOT_STORE_PATH",
        Path(".tablebot/jobs.sqlite3"),
        "SQLite file of the embedded store (local runs)",
        parse=_path,
        default_text="`.tablebot/jobs.sqlite3`",
    )
    staging_bucket: str | None = setting(
        "TABLEBOT_STAGING_BUCKET", None, "S3 bucket of staged files; unset: a local folder"
    )
    staging_prefix: str = setting("TABLEBOT_STAGING_PREFIX", "staging/", "key prefix of staged files in the bucket")
    staging_dir: Path = setting(
        "TABLEBOT_STAGING_DIR",
        Path(".tablebot/staging"),
        "folder of staged files when no bucket is set",
        parse=_path,
        default_text="`.tablebot/staging`",
    )
    work_dir: Path | None = setting(
        "TABLEBOT_WORK_DIR",
        None,
        "where a staged file is copied before sending",
        parse=_path,
        default_text="the system temp dir",
    )
    ssm_path: str | None = setting(
        "TABLEBOT_SSM_PATH",
        None,
        "on Lambda: the SSM path (`/tablebot/<stage>/`) holding this deployment's secrets (only those named here and in the tables file are read)",
    )

    # -- files people send --------------------------------------------------------------------
    max_file_bytes: int = setting(
        "TABLEBOT_MAX_FILE_MB",
        500 * MB,
        "size cap of a file, in MB of 1,000,000 bytes",
        parse=_megabytes,
        default_text="`500`",
    )
    s3_allowed_prefixes: tuple[str, ...] = setting(
        "TABLEBOT_S3_ALLOWED_PREFIXES",
        (),
        "comma-separated `s3://bucket/folder/` a user may name in `/table upload`",
        parse=_names,
        default_text="none",
    )
    slack_file_hosts: tuple[str, ...] = setting(
        "TABLEBOT_SLACK_FILE_HOSTS",
        ("files.slack.com",),
        "comma-separated hosts Slack files are downloaded from",
        parse=_names,
        default_text="`files.slack.com`",
    )
    allow_http_downloads: bool = setting(
        "TABLEBOT_ALLOW_HTTP_DOWNLOADS",
        False,
        "allow plain-HTTP file downloads (a local Slack stand-in in tests and the demo; never in production)",
        parse=_flag,
    )

    # -- Slack --------------------------------------------------------------------------------
    slack_bot_token: str | None = setting(
        "SLACK_BOT_TOKEN", None, "the bot token (`xoxb-…`)", secret=True, default_text="required"
    )
    slack_signing_secret: str | None = setting(
        "SLACK_SIGNING_SECRET",
        None,
        "verifies requests from Slack (HTTP / Lambda)",
        secret=True,
        functions=frozenset({SLACK_FUNCTION}),
        default_text="required over HTTP",
    )
    slack_app_token: str | None = setting(
        "SLACK_APP_TOKEN",
        None,
        "Socket Mode app-level token (`xapp-…`), `tablebot serve` only",
        secret=True,
        functions=frozenset(),
    )
    slack_api_base_url: str | None = setting(
        "SLACK_API_BASE_URL",
        None,
        "points the Slack client elsewhere (the local Slack API server in tests and the demo)",
        default_text="Slack itself",
    )
    slash_command: str = setting("TABLEBOT_SLASH_COMMAND", "/table", "the slash command's name")
    usergroup_cache_seconds: float = setting(
        "TABLEBOT_USERGROUP_CACHE_SECONDS", 60.0, "how long a user group's members are cached", parse=_positive
    )

    # -- checking a file ----------------------------------------------------------------------
    intake_lease_seconds: float = setting(
        "TABLEBOT_INTAKE_LEASE_SECONDS",
        960.0,
        "the check of a file holds its job this long (more than Lambda's 15 minutes); a job left behind longer is cancelled with a notice",
        parse=_positive,
    )
    approval_timeout_seconds: float = setting(
        "TABLEBOT_APPROVAL_TIMEOUT_SECONDS",
        86400.0,
        "an approval or confirmation nobody gives is cancelled with a notice after this",
        parse=_positive,
    )

    # -- the poller ---------------------------------------------------------------------------
    poll_run_seconds: float = setting(
        "TABLEBOT_POLL_RUN_SECONDS", 50.0, "how long one scheduled poller run keeps working", parse=_positive
    )
    poll_workers: int = setting("TABLEBOT_POLL_WORKERS", 4, "jobs worked on at once by one poller", parse=_count)
    poll_per_target: int = setting(
        "TABLEBOT_POLL_PER_TARGET", 2, "jobs of one target worked on at once by one poller", parse=_count
    )
    first_check_seconds: float = setting(
        "TABLEBOT_POLL_FIRST_CHECK_SECONDS", 2.0, "first upstream status check after an upload starts", parse=_positive
    )
    max_check_seconds: float = setting(
        "TABLEBOT_POLL_MAX_CHECK_SECONDS", 30.0, "status checks of long jobs back off up to this", parse=_positive
    )
    job_timeout_seconds: float = setting(
        "TABLEBOT_JOB_TIMEOUT_SECONDS", 3600.0, "from upload start to `timed_out`", parse=_positive
    )
    lease_seconds: float = setting(
        "TABLEBOT_LEASE_SECONDS", 600.0, "a worker's hold on a job; longer than one upload", parse=_positive
    )
    notice_retry_seconds: float = setting(
        "TABLEBOT_NOTICE_RETRY_SECONDS", 30.0, "wait after Slack trouble before posting again", parse=_positive
    )
    error_retry_seconds: float = setting(
        "TABLEBOT_ERROR_RETRY_SECONDS", 30.0, "wait after upstream trouble before trying again", parse=_positive
    )
    notice_lease_seconds: float = setting(
        "TABLEBOT_NOTICE_LEASE_SECONDS",
        120.0,
        "a worker's hold on an ending notice it is posting (then another looks in the thread first)",
        parse=_positive,
    )

    start_upload_at_once: bool = setting(
        "TABLEBOT_START_UPLOAD_AT_ONCE",
        True,
        "the Slack function starts the upload right after the check (and after Approve, Confirm, Retry); false: the poller starts every upload",
        parse=_flag,
    )
    follow_seconds: float = setting(
        "TABLEBOT_FOLLOW_SECONDS",
        60.0,
        "after starting an upload, the Slack function follows it this long (status checks, the ending notice) before leaving it to the poller; 0: at once",
        parse=_seconds_or_zero,
    )

    # -- limits -------------------------------------------------------------------------------
    max_uploads_per_user: int = setting(
        "TABLEBOT_MAX_UPLOADS_PER_USER",
        3,
        "uploads one person may have in flight (checking, waiting, queued, uploading) at once; 0: no cap",
        parse=_cap,
    )
    max_uploads_per_table: int = setting(
        "TABLEBOT_MAX_UPLOADS_PER_TABLE",
        5,
        "uploads one table may have in flight at once (they are sent one after another anyway); 0: no cap",
        parse=_cap,
    )

    # -- operations ---------------------------------------------------------------------------
    log_level: str = setting(
        "TABLEBOT_LOG_LEVEL", "INFO", "log level: DEBUG, INFO, WARNING, ERROR (JSON lines on Lambda)", parse=_level
    )
    metrics_namespace: str = setting(
        "TABLEBOT_METRICS_NAMESPACE", "tablebot", "CloudWatch namespace of the bot's metrics (EMF, on Lambda)"
    )


# Not settings of this module (named by the tables file, or read by libraries); listed so the
# README's table is the whole story.
OTHER_VARIABLES: tuple[tuple[str, str], ...] = (
    (
        "the names in the tables file",
        "vendor credentials (`token_env`, `userkey_env`, `password_env`); secrets, read from SSM on Lambda",
    ),
    ("AWS_ENDPOINT_URL", "points boto3 (DynamoDB, S3) elsewhere: DynamoDB Local and SeaweedFS in tests"),
    ("AWS_REGION", "boto3's region (and its other usual settings: `AWS_PROFILE`, …)"),
    ("POWERTOOLS_SERVICE_NAME", "the service name in Powertools logs (set by serverless.yml)"),
)


def variables() -> tuple[tuple[str, Variable], ...]:
    """(field name, variable) of every setting, in the order of `Settings`."""
    return tuple((f.name, f.metadata["variable"]) for f in dataclasses.fields(Settings))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every variable once; `ConfigError` names the first bad one. Warns of unknown names."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for attr, var in variables():
        raw = env.get(var.name)
        if raw is not None and raw.strip() != "":
            values[attr] = var.parse(var.name, raw)
    for name in unknown_variables(env):
        log.warning("environment variable %s is not a tablebot setting and is ignored (a typo?)", name)
    return Settings(**values)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = {var.name for _, var in variables()}
    return sorted(name for name in environ if name.startswith(PREFIX) and name not in known)


def secret_names(function: str, credential_names: Iterable[str] = ()) -> list[str]:
    """The secrets `function` reads from SSM: its Slack secrets and the vendor credentials the
    tables file names (both functions talk to the vendors). Nothing else is ever read there."""
    own = [var.name for _, var in variables() if var.secret and function in var.functions]
    return sorted({*own, *credential_names})


def markdown_table() -> str:
    """The README's table of variables."""
    rows = ["| variable | what | default |", "|---|---|---|"]
    for _, var in variables():
        rows.append(f"| `{var.name}` | {var.meaning} | {var.default_text} |")
    for name, meaning in OTHER_VARIABLES:
        shown = name if " " in name else f"`{name}`"
        rows.append(f"| {shown} | {meaning} | |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m bot.settings --markdown")
    print(markdown_table())
