"""The one place where an error of the bot's tree becomes a Slack reply.

Each branch of `bot.errors` gets its own lead-in; the message itself is the error's `message`,
escaped here (it may quote a file name, a header or a value someone sent).
"""

from __future__ import annotations

from bot.errors import (
    ConfigError,
    InputError,
    NoticeFailed,
    Refused,
    SourceError,
    StagingError,
    StoreError,
    TablebotError,
    UpstreamError,
)
from bot.slack.render import esc

_LEAD = (
    (Refused, ":no_entry:"),
    (SourceError, ":no_entry: Not uploaded."),
    (InputError, ":x: The file cannot be checked:"),
    (ConfigError, ":warning: The bot's configuration is wrong; tell its operators:"),
    (UpstreamError, ":warning: The upstream service answered:"),
    (StagingError, ":warning: The bot could not store the file; try again in a minute."),
    (StoreError, ":warning: The bot could not record this; try again in a minute."),
    (NoticeFailed, ":warning: Slack did not take the message; try again in a minute."),
)


def reply_for(exc: TablebotError) -> str:
    """The reply to the person whose request ended in `exc`."""
    lead = next((text for kind, text in _LEAD if isinstance(exc, kind)), ":warning:")
    if isinstance(exc, StagingError | StoreError | NoticeFailed):
        return lead  # the details are for the operators' log, not the channel
    return f"{lead} {esc(exc.message)}"
