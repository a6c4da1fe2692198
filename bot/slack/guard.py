"""The one guard every listener and button runs behind (`guarded`, a decorator).

For each Slack delivery (an event, a slash command, a click) it:

1. answers it once: the delivery's key (the Events API `event_id`, which Slack keeps on every
   retry with `X-Slack-Retry-Num`; a command's or a click's `trigger_id`) is claimed in the job
   store with one conditional write. A retry, a second lazy invocation or Lambda's own async
   retry finds the claim and does nothing: no second menu, dry run, refusal or download. (The
   price: a delivery whose first run died half-way is not redone by Slack's retry; the jobs it
   started are ended by the poller, and the person shares the file again.)
2. says who asks and from where (`Request`): the user, whether they belong to another
   organisation (Slack Connect: their team is not the bot's own, from `auth.test`), the channel
   and whether it is a direct message;
3. binds the permission rules to them (`Request.can_upload`, `can_approve`, `can_confirm`,
   `can_manage`, `visible_tables`): listeners never ask `Permissions` directly;
4. catches what goes wrong: an error of the bot's tree (`bot.errors`: a `Refused`, a
   `SourceError`, ...) is told to the person through `bot.slack.errors.reply_for`; anything else
   is logged and the person gets a short "nothing was changed" note, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Respond

from bot.errors import TablebotError
from bot.slack.context import SLACK_ERRORS, Replies, SlackDeps
from bot.slack.errors import reply_for
from bot.slack.permissions import Decision, Person, Place
from bot.slack.render import message

log = logging.getLogger(__name__)

OOPS = (
    "Something went wrong on the bot's side; nothing was changed. Try again, and tell the bot's admins if it repeats."
)

Body = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One Slack delivery, as the listeners see it."""

    deps: SlackDeps
    replies: Replies
    body: Body
    person: Person
    place: Place
    thread_ts: str | None  # the thread this delivery belongs to (None: a new one)
    respond: Respond | None = None

    @property
    def user(self) -> str:
        return self.person.user

    @property
    def channel(self) -> str:
        return self.place.channel

    def can_upload(self, table: str) -> Decision:
        return self.deps.permissions.can_upload(table, self.person, self.place)

    def can_approve(self, table: str, requested_by: str) -> Decision:
        return self.deps.permissions.can_approve(table, self.person, requested_by)

    def can_confirm(self, table: str, requested_by: str) -> Decision:
        return self.deps.permissions.can_confirm(table, self.person, requested_by)

    def can_manage(self, table: str, requested_by: str) -> Decision:
        return self.deps.permissions.can_manage(table, self.person, requested_by, self.place)

    def visible_tables(self) -> set[str]:
        return self.deps.permissions.visible_tables(self.person)

    def tell(self, text: str) -> None:
        """A note only the person sees (rendered text)."""
        if self.respond is not None and "command" in self.body:
            plain, blocks = message(text)
            self.respond(text=plain, blocks=blocks, response_type="ephemeral")
        else:
            self.replies.tell(self.channel, self.user, text, self.thread_ts)


def delivery_key(body: Body) -> str | None:
    """What stays the same when Slack (or Lambda) delivers the same thing again."""
    if body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("trigger_id"):
        return f"trigger:{body['trigger_id']}"
    actions = body.get("actions") or []
    if actions and actions[0].get("action_ts"):
        user = (body.get("user") or {}).get("id", "")
        return f"action:{user}:{actions[0]['action_ts']}"
    return None


def _who_and_where(body: Body) -> tuple[str, str | None, str, bool, str | None]:
    """user, their team, channel, is a DM, thread — from an event, a command or an interaction."""
    event = body.get("event")
    if isinstance(event, dict):
        channel = str(event.get("channel") or "")
        team = event.get("user_team") or event.get("team")
        is_dm = event.get("channel_type") == "im" or channel.startswith("D")
        thread = event.get("thread_ts") or event.get("ts")
        return str(event.get("user") or ""), team, channel, is_dm, thread
    if "command" in body:  # a slash command (form fields)
        channel = str(body.get("channel_id") or "")
        is_dm = channel.startswith("D") or body.get("channel_name") == "directmessage"
        return str(body.get("user_id") or ""), body.get("team_id"), channel, is_dm, None
    user = body.get("user") or {}
    channel = str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or "")
    message = body.get("message") or {}
    thread = message.get("thread_ts") or (body.get("container") or {}).get("thread_ts") or message.get("ts")
    return str(user.get("id") or ""), user.get("team_id"), channel, channel.startswith("D"), thread


def guarded(deps: SlackDeps, name: str) -> Callable[[Callable[[Request], None]], Callable[..., None]]:
    """Wrap a listener's work as a Bolt lazy listener named `name` (see the module docstring)."""

    def wrap(work: Callable[[Request], None]) -> Callable[..., None]:
        def lazy(body: Body, respond: Respond | None = None) -> None:
            replies = Replies(deps.client)
            user, team, channel, is_dm, thread = _who_and_where(body)
            if not user or not channel:
                return
            key = delivery_key(body)
            request: Request | None = None
            try:
                if key is not None:
                    first, _ = deps.store.claim_once(f"slack:{key}", name, ttl_seconds=deps.delivery_memory_seconds)
                    if not first:
                        log.info("%s: delivery %s was answered already; nothing more to do", name, key)
                        return
                external = bool(team) and team != deps.home_team()
                request = Request(deps, replies, body, Person(user, external), Place(channel, is_dm), thread, respond)
                work(request)
            except TablebotError as exc:  # a refusal, a file that cannot be fetched, ...: said, escaped
                log.info("%s: %s (%s)", name, exc.code, type(exc).__name__)
                if request is not None:
                    request.tell(reply_for(exc))
                else:  # the delivery could not even be claimed (the job store is down)
                    replies.tell(channel, user, reply_for(exc), thread)
            except Exception:
                log.exception("Slack listener %s failed", name)
                try:
                    if respond is not None and "command" in body:
                        respond(text=OOPS, response_type="ephemeral")
                    else:
                        replies.tell(channel, user, OOPS, thread)
                except SLACK_ERRORS:
                    log.warning("could not tell the user about the failure")

        # Bolt finds a lazy listener again by its name (Lambda re-invocation) and passes arguments
        # by parameter name: so a name of its own, and `lazy`'s own signature (no functools.wraps).
        lazy.__name__ = lazy.__qualname__ = f"lazy_{name}"
        lazy.__doc__ = work.__doc__
        return lazy

    return wrap
