"""What every Slack listener works with: the bot's parts (`SlackDeps`) and `Replies`, the few
ways the bot speaks in Slack (a thread post, an edit, a note to one person)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.config import TableConfig, TablesFile
from bot.intake import Intake
from bot.service import JobService
from bot.slack.permissions import Permissions
from bot.slack.render import Message, message
from bot.sources import SourceSettings
from bot.store import Job, JobStore
from bot.targets.check import CheckResult

log = logging.getLogger(__name__)

SLACK_ERRORS = (SlackApiError, SlackClientError, OSError)
# How long a Slack delivery (event id, command or click) is remembered as answered. Slack retries
# an event for about an hour at most; a day leaves room for Lambda's own async retries too.
DELIVERY_MEMORY_SECONDS = 86400.0


@dataclass
class SlackDeps:
    """What the Slack front end needs, built once per process (`bot.slack.wiring`)."""

    tables: TablesFile
    store: JobStore
    intake: Intake
    service: JobService  # Retry
    client: WebClient
    permissions: Permissions
    source_settings: SourceSettings
    signing_secret: str | None = None
    command: str = "/table"
    delivery_memory_seconds: float = DELIVERY_MEMORY_SECONDS
    # `/table check TABLE` (approvers): `bot.targets.check` against the table's upstream.
    check_table: Callable[[TableConfig], CheckResult] | None = None
    _home_team: list[str] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def home_team(self) -> str:
        """The bot's own workspace (`auth.test`, asked once): anyone of another team is external."""
        with self._lock:
            if not self._home_team:
                answer = self.client.auth_test()
                self._home_team.append(str(answer["team_id"]))
            return self._home_team[0]


class Replies:
    """How the bot speaks: posts in a thread, edits a message, a note to one person."""

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post(self, channel: str, thread_ts: str | None, rendered: Message) -> dict[str, Any]:
        text, blocks = rendered
        response = self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text, blocks=blocks)
        return dict(response.data) if isinstance(response.data, dict) else {}

    def edit(self, channel: str, ts: str, rendered: Message) -> None:
        text, blocks = rendered
        try:
            self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SLACK_ERRORS as exc:
            log.warning("message %s not updated (%s)", ts, type(exc).__name__)

    def tell(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> None:
        """An ephemeral note to one person (refusals: the channel does not need to see them).
        `text` is rendered already."""
        plain, blocks = message(text)
        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=plain, blocks=blocks, thread_ts=thread_ts)
        except SLACK_ERRORS as exc:
            log.warning("ephemeral message not posted: %s", type(exc).__name__)

    def status(self, job: Job, rendered: Message) -> None:
        """Edit the job's status message, if it has one."""
        if job.channel_id and job.status_ts:
            self.edit(job.channel_id, job.status_ts, rendered)
