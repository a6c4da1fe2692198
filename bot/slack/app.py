"""The one Bolt app, and the one module where its listeners are registered (`build_app`).

Every listener acknowledges at once (Slack wants an answer within 3 seconds) and does its work in
a lazy listener behind the guard (`bot.slack.guard.guarded`: answered once per delivery, who
asks and from where, the permission checks, errors told, never shown). On Lambda Bolt re-invokes
the function for the lazy work; in a process (Socket Mode, tests) it runs on Bolt's thread pool.
Nothing here reads the environment: `bot.slack.wiring` builds the parts.

| Slack sends | the bot |
|---|---|
| `/table ...` | one function per command (`bot.slack.commands`); `help` in the acknowledgement |
| `message` with subtype `file_share` (a channel, a private channel, a DM) | each file resolved on its own (`bot.slack.files`) |
| `app_mention`, or a plain direct message | the help, in a thread |
| the "which table?" menu | the first pick wins (`bot.slack.files.on_table_chosen`) |
| Approve / Reject / Confirm / Cancel / Retry | `bot.slack.buttons` |

Other messages are acknowledged and left alone. The `file_shared` event is not subscribed (the
manifest's `bot_events` are `BOT_EVENTS`): a shared file is handled from its `message` event.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App

from bot.errors import ConfigError
from bot.slack import render
from bot.slack.buttons import BUTTONS
from bot.slack.commands import help_message, parse_command, run_command
from bot.slack.context import SlackDeps
from bot.slack.files import on_file_share, on_table_chosen
from bot.slack.guard import Request, guarded

__all__ = ["BOT_EVENTS", "SlackDeps", "build_app"]

log = logging.getLogger(__name__)

# The Events API subscriptions the listeners below need (slack-app-manifest.yml, `bot_events`).
BOT_EVENTS = ("app_mention", "message.channels", "message.groups", "message.im")


def build_app(deps: SlackDeps, *, socket_mode: bool = False, process_before_response: bool | None = None) -> App:
    """The bot's Bolt app. HTTP (Lambda): requests are verified with the signing secret and
    answered after the ack (`process_before_response`); Socket Mode: no HTTP signature to check."""
    if not socket_mode and not deps.signing_secret:
        raise ConfigError("SLACK_SIGNING_SECRET is not set: requests from Slack cannot be verified")
    app = App(
        client=deps.client,
        signing_secret=deps.signing_secret,
        process_before_response=(not socket_mode) if process_before_response is None else process_before_response,
        request_verification_enabled=not socket_mode,
        token_verification_enabled=False,  # auth.test runs on the first request, not at cold start
        name="tablebot",
    )

    def ack_only(ack: Ack) -> None:
        ack()

    # -- the slash command -------------------------------------------------------------------------

    def ack_command(ack: Ack, command: dict[str, Any]) -> None:
        parsed = parse_command(command.get("text", ""))
        if parsed.name == "help":
            text, blocks = help_message(deps.command, parsed.note)
            ack(text=text, blocks=blocks)
        elif parsed.name in ("upload", "validate", "restore"):
            said = render.code(str(command.get("text", "")).strip(), 200)
            ack(text=f":hourglass_flowing_sand: On it: {render.esc(deps.command)} {said}")
        else:
            ack()

    app.command(deps.command)(ack=ack_command, lazy=[guarded(deps, "command")(run_command)])

    # -- messages: file shares, mentions, direct messages -----------------------------------------

    app.event({"type": "message", "subtype": "file_share"})(
        ack=ack_only, lazy=[guarded(deps, "file_share")(on_file_share)]
    )

    @guarded(deps, "help")
    def answer_with_help(req: Request) -> None:
        event = req.body["event"]
        if event.get("files") or event.get("bot_id"):
            return  # a file share is handled from its message event; bots are not answered
        text, blocks = help_message(deps.command)
        req.replies.post(req.channel, req.thread_ts, (text, blocks))

    app.event("app_mention")(ack=ack_only, lazy=[answer_with_help])

    def is_direct_message(event: dict[str, Any]) -> bool:
        return event.get("channel_type") == "im" and not event.get("subtype") and not event.get("bot_id")

    app.event({"type": "message"}, matchers=[is_direct_message])(ack=ack_only, lazy=[answer_with_help])
    # Other messages (channel chatter, edits, the bot's own posts) are acknowledged and left alone:
    # an unanswered event would be redelivered by Slack.
    app.event("message")(ack_only)

    # -- menus and buttons ---------------------------------------------------------------------------

    app.action(render.CHOOSE_TABLE_ACTION_ID)(ack=ack_only, lazy=[guarded(deps, "choose_table")(on_table_chosen)])
    for action_id, work in BUTTONS.items():
        app.action(action_id)(ack=ack_only, lazy=[guarded(deps, action_id)(work)])
    return app
