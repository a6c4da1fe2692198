"""Secrets from SSM Parameter Store, read at run time into the environment the bot reads.

serverless.yml gives each function `TABLEBOT_SSM_PATH=/tablebot/<stage>/` instead of the secrets
themselves (resolving them at deploy time would write them into the template and needs AWS at
package time). Every parameter under that path whose name is an environment variable name
(`/tablebot/prod/SLACK_BOT_TOKEN`, or the vendor credential names the tables file gives) supplies
that variable, unless the environment already sets it. Values are never logged.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, MutableMapping

log = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# Fetch every parameter directly under a path: name (relative to the path) -> decrypted value.
FetchParameters = Callable[[str], Mapping[str, str]]


def _powertools_fetch(path: str) -> Mapping[str, str]:
    from aws_lambda_powertools.utilities import parameters

    values: Mapping[str, str] = parameters.get_parameters(path, decrypt=True, max_age=300)
    return values


def load_ssm_environment(
    environ: MutableMapping[str, str] | None = None, fetch: FetchParameters | None = None
) -> list[str]:
    """Fill the environment from `TABLEBOT_SSM_PATH`; returns the names set (never the values)."""
    env = os.environ if environ is None else environ
    path = env.get("TABLEBOT_SSM_PATH", "").rstrip("/")
    if not path:
        return []
    values = (fetch or _powertools_fetch)(path)
    loaded = []
    for name, value in values.items():
        key = name.rsplit("/", 1)[-1]
        if not _ENV_NAME.fullmatch(key):
            log.warning("SSM parameter %s/%s is not an environment variable name; ignored", path, name)
            continue
        if key not in env:
            env[key] = str(value)
            loaded.append(key)
    log.info("loaded %d settings from SSM path %s: %s", len(loaded), path, ", ".join(sorted(loaded)))
    return sorted(loaded)
