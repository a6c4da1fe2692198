"""The poller's notifier on Slack: job progress in the status message, endings in the thread.

`ending` updates the status message first (an edit, harmless to repeat) and posts in the thread
last, with Slack message metadata naming the job, its ending and attempt (`ending_metadata`).
It raises `NoticeFailed` when Slack answered "not now" (rate limited, 5xx, no connection); the
service then tries again later, and that later attempt first asks `ending_posted`, which reads
the thread (`conversations.replies`, metadata included) for that post: a timed-out post that
did land is not posted twice. A status message that cannot be edited, or a thread that cannot
be posted in, for a lasting reason (deleted, not in channel) is logged and skipped, not retried
forever. Reading threads needs the `channels:history` / `groups:history` scopes.

Team channels: a table's `notify_channels` each get one line per ending (`render.announcement`:
the ending, who asked, a link to the thread), posted after the thread post with metadata of
event type `ANNOUNCEMENT_EVENT_TYPE`. When an announcement fails for a passing reason the notice
as a whole is tried again; that later attempt finds the thread post (`ending_posted`) and then
posts only the announcements it does not find in their channels. A channel the bot is not in is
logged and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.config import TablesFile
from bot.errors import ConfigError, NoticeFailed
from bot.service import ENDING_EVENT_TYPE, Ending, ending_metadata
from bot.slack.render import announcement, ending_message, ending_summary, progress_message, status_message
from bot.store import Job

ANNOUNCEMENT_EVENT_TYPE = "tablebot_job_announcement"

log = logging.getLogger(__name__)

# Messages read per conversations.replies page while looking for an earlier ending post.
REPLIES_PAGE = 200

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
    def __init__(self, client: WebClient, tables: TablesFile | None = None) -> None:
        self.client = client
        self.tables = tables

    def _notify_channels(self, job: Job) -> tuple[str, ...]:
        if self.tables is None:
            return ()
        try:
            channels = self.tables.table(job.table).access.notify_channels
        except ConfigError:
            return ()
        return channels

    def _approvers(self, job: Job) -> tuple[str, ...]:
        if self.tables is None:
            return ()
        try:
            return self.tables.table(job.table).access.approvers
        except ConfigError:
            return ()

    def _announce(self, job: Job, ending: Ending, *, look_first: bool) -> None:
        """One line per team channel; `look_first`: skip channels that have it already."""
        channels = self._notify_channels(job)
        if not channels:
            return
        permalink = None
        anchor = job.thread_ts or job.status_ts
        if job.channel_id and anchor:
            try:
                answer = self.client.chat_getPermalink(channel=job.channel_id, message_ts=anchor)
                permalink = str(answer.get("permalink") or "") or None
            except (SlackApiError, SlackClientError, OSError) as exc:
                log.warning("job %s: no link to its thread (%s)", job.job_id, _describe(exc))
        metadata = {
            "event_type": ANNOUNCEMENT_EVENT_TYPE,
            "event_payload": ending_metadata(job, ending.state)["event_payload"],
        }
        plain, blocks = announcement(job, ending_summary(job, ending), permalink)
        for channel in channels:
            try:
                if look_first and self._announced(job, channel, metadata["event_payload"]):
                    continue
                self.client.chat_postMessage(channel=channel, text=plain, blocks=blocks, metadata=metadata)
            except (SlackApiError, SlackClientError, OSError) as exc:
                if is_transient(exc):
                    raise NoticeFailed(f"announcement in {channel}: {_describe(exc)}") from None
                log.error("job %s: the ending cannot be announced in %s (%s)", job.job_id, channel, _describe(exc))

    def _announced(self, job: Job, channel: str, payload: object) -> bool:
        oldest = f"{job.notice_claimed_at.timestamp() - 600:.6f}" if job.notice_claimed_at else None
        page = self.client.conversations_history(
            channel=channel, include_all_metadata=True, limit=REPLIES_PAGE, oldest=oldest
        )
        for message in page.get("messages") or []:
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") == ANNOUNCEMENT_EVENT_TYPE and metadata.get("event_payload") == payload:
                return True
        return False

    def progress(self, job: Job, text: str) -> None:
        if not (job.channel_id and job.status_ts):
            return
        plain, blocks = progress_message(job, text)
        try:
            self.client.chat_update(channel=job.channel_id, ts=job.status_ts, text=plain, blocks=blocks)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("job %s: status message not updated (%s)", job.job_id, _describe(exc))

    def ending(self, job: Job, ending: Ending) -> None:
        if not job.channel_id:  # a job without a Slack thread (CLI, pipeline): only its team channels
            self._announce(job, ending, look_first=False)
            return
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
        plain, blocks = ending_message(job, ending, self._approvers(job))
        try:
            self.client.chat_postMessage(
                channel=job.channel_id,
                thread_ts=job.thread_ts,
                text=plain,
                blocks=blocks,
                metadata=ending_metadata(job, ending.state),
            )
        except (SlackApiError, SlackClientError, OSError) as exc:
            if is_transient(exc):
                raise NoticeFailed(f"thread post: {_describe(exc)}") from None
            # channel_not_found, not_in_channel, ...: trying again will not help; the job still ends.
            log.error("job %s: the ending cannot be posted in its thread (%s)", job.job_id, _describe(exc))
        self._announce(job, ending, look_first=False)

    def ending_posted(self, job: Job, ending: Ending) -> bool:
        if not job.channel_id:
            self._announce(job, ending, look_first=True)
            return True  # no thread: only the team channels, now checked
        wanted = ending_metadata(job, ending.state)["event_payload"]
        try:
            for message in self._messages_after_claim(job):
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") == ENDING_EVENT_TYPE and metadata.get("event_payload") == wanted:
                    # The thread has it; an announcement may still be missing (posted after it).
                    self._announce(job, ending, look_first=True)
                    return True
        except (SlackApiError, SlackClientError, OSError) as exc:
            if is_transient(exc):
                raise NoticeFailed(f"reading the thread: {_describe(exc)}") from None
            # missing_scope, channel_not_found, thread_not_found: we cannot tell; posting (a rare
            # duplicate) is better than a thread without its ending.
            log.warning(
                "job %s: cannot look for an earlier ending post (%s; the bot needs channels:history / "
                "groups:history); posting it",
                job.job_id,
                _describe(exc),
            )
        return False

    def _messages_after_claim(self, job: Job) -> Iterator[dict[str, Any]]:
        """The job's thread (or, without one, the channel) from shortly before the first claim on."""
        assert job.channel_id is not None
        # Slack's clock and ours differ a little: look from well before the claim.
        oldest = f"{job.notice_claimed_at.timestamp() - 600:.6f}" if job.notice_claimed_at else None
        cursor: str | None = None
        while True:
            if job.thread_ts:
                page = self.client.conversations_replies(
                    channel=job.channel_id,
                    ts=job.thread_ts,
                    include_all_metadata=True,
                    limit=REPLIES_PAGE,
                    cursor=cursor,
                )
            else:
                page = self.client.conversations_history(
                    channel=job.channel_id, include_all_metadata=True, limit=REPLIES_PAGE, cursor=cursor, oldest=oldest
                )
            messages: list[dict[str, Any]] = page.get("messages") or []
            yield from messages
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not page.get("has_more", True):
                return


def _describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        response: Any = exc.response
        return f"Slack answered {getattr(response, 'status_code', '?')} {response.get('error', '')}".strip()
    return type(exc).__name__
