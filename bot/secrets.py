"""Secrets from SSM Parameter Store, read at run time into the environment the bot reads.

serverless.yml gives each function `TABLEBOT_SSM_PATH=/tablebot/<stage>/` instead of the secrets
themselves (resolving them at deploy time would write them into the template and needs AWS at
package time). Only an allow-list is read: the secrets `bot.settings` marks as needed by this
function (the poller never reads the Slack signing secret) and the vendor credentials the
tables file names. Any other parameter under the path is never fetched, so a parameter named
like a setting (`SLACK_API_BASE_URL`, `TABLEBOT_ALLOW_HTTP_DOWNLOADS`) cannot change how the bot
behaves. The environment wins over SSM. Values are never logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence

from bot.config import load_tables
from bot.settings import load_settings, secret_names

log = logging.getLogger(__name__)

# Fetch parameters by their full names: full name -> decrypted value (missing ones left out).
FetchParameters = Callable[[Sequence[str]], Mapping[str, str]]


def _powertools_fetch(names: Sequence[str]) -> Mapping[str, str]:
    from aws_lambda_powertools.utilities import parameters

    values = parameters.get_parameters_by_name(
        parameters={name: {} for name in names}, decrypt=True, max_age=300, raise_on_error=False
    )
    return {name: str(value) for name, value in values.items() if name != "_errors"}


def load_ssm_secrets(
    function: str, environ: MutableMapping[str, str] | None = None, fetch: FetchParameters | None = None
) -> list[str]:
    """Fill the environment with `function`'s secrets from `TABLEBOT_SSM_PATH`; returns the names
    set (never the values)."""
    env = os.environ if environ is None else environ
    settings = load_settings(env)
    path = (settings.ssm_path or "").rstrip("/")
    if not path:
        return []
    credentials = load_tables(settings).credential_names() if settings.config_path else set()
    wanted = [name for name in secret_names(function, credentials) if not env.get(name)]
    if not wanted:
        return []
    values = (fetch or _powertools_fetch)([f"{path}/{name}" for name in wanted])
    loaded = []
    for name in wanted:
        value = values.get(f"{path}/{name}")
        if value:
            env[name] = value
            loaded.append(name)
    missing = sorted(set(wanted) - set(loaded))
    if missing:
        log.warning("SSM path %s has no parameter for %s", path, ", ".join(missing))
    log.info("loaded %d secrets from SSM path %s: %s", len(loaded), path, ", ".join(loaded))
    return loaded
