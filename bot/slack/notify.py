"""The poller's notifier on Slack: job progress in the status message, endings in the thread.

`ending` raises `NoticeFailed` only while nothing has been posted in the thread, so the service
can give its claim back and post on a later run (see `bot.service`): the status message is
updated first (an edit, harmless to repeat), the thread post is the last call. A status message
that cannot be edited, or a thread that cannot be posted in, for a lasting reason (deleted,
not in channel) is logged and skipped, not retried forever.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.service import Ending, NoticeFailed
from bot.slack.messages import ending_message, progress_message, status_message
from bot.store import Job

log = logging.getLogger(__name__)

# Slack errors that say "not now" rather than "never": the notice is tried again later.
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "service_unavailable", "internal_error", "fatal_error", "request_timeout"}
)


def is_transient(exc: Exception) -> bool:
    if isinstance(exc, SlackApiError):
        response: Any = exc.response
        status = getattr(response, "status_code", 200)
        error = response.get("error") if hasattr(response, "get") else None
        return status == 429 or status >= 500 or error in TRANSIENT_ERRORS
    return True  # connection errors, timeouts


class SlackNotifier:
    def __init__(self, client: WebClient) -> None:
        self.client = client

    def progress(self, job: Job, text: str) -> None:
        if not (job.channel_id and job.status_ts):
            return
        plain, blocks = progress_message(job, text)
        try:
            self.client.chat_update(channel=job.channel_id, ts=job.status_ts, text=plain, blocks=blocks)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("job %s: status message not updated (%s)", job.job_id, _describe(exc))

    def ending(self, job: Job, ending: Ending) -> None:
        if not job.channel_id:
            return  # a job without a Slack thread (CLI, pipeline): nobody to tell here
        if job.status_ts:
            plain, blocks = status_message(job, ending)
            try:
                self.client.chat_update(channel=job.channel_id, ts=job.status_ts, text=plain, blocks=blocks)
            except (SlackApiError, SlackClientError, OSError) as exc:
                if is_transient(exc):
                    raise NoticeFailed(f"status message: {_describe(exc)}") from None
                log.warning(
                    "job %s: status message not updated (%s); posting in the thread", job.job_id, _describe(exc)
                )
        plain, blocks = ending_message(job, ending)
        try:
            self.client.chat_postMessage(channel=job.channel_id, thread_ts=job.thread_ts, text=plain, blocks=blocks)
        except (SlackApiError, SlackClientError, OSError) as exc:
            if is_transient(exc):
                raise NoticeFailed(f"thread post: {_describe(exc)}") from None
            # channel_not_found, not_in_channel, ...: trying again will not help; the job still ends.
            log.error("job %s: the ending cannot be posted in its thread (%s)", job.job_id, _describe(exc))


def _describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        response: Any = exc.response
        return f"Slack answered {getattr(response, 'status_code', '?')} {response.get('error', '')}".strip()
    return type(exc).__name__
