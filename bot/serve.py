"""`tablebot serve`: the Slack app over Socket Mode and the poller in a thread, in one process.

The same Bolt app as on Lambda (`bot.slack.app.build_app`), connected with slack_sdk's built-in
Socket Mode client: it asks `apps.connections.open` (the app-level token) for a WebSocket URL,
acknowledges each envelope at once and runs the work in Bolt's listener threads. It reconnects
by itself when Slack sends `disconnect` (`refresh_requested`, `warning`) or closes the socket.
The poller (`bot.poller`) works through due jobs in a background thread, run after run.

Stopping (`stop` set: SIGTERM or Ctrl-C in `tablebot serve`): no new envelope is taken (the
socket is closed; Slack redelivers an event whose ack did not go out, and the job store's
delivery key turns it into the job already made), the listeners in flight (a file being checked)
and the poller's steps in flight (an upload being sent) finish and write their state, then
`serve` returns. The CLI stops at once on a second signal: a step cut short is then taken over
by the next run when its lease expires.
"""

from __future__ import annotations

import logging
import threading

from bot.errors import ConfigError, SlackUnreachable
from bot.poller import Poller
from bot.settings import Settings

log = logging.getLogger(__name__)

_POLLER_RESTART_SECONDS = 1.0  # after a poller run that raised


def _poll_until_stopped(poller: Poller, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            poller.run(stop=stop)
        except Exception:  # one bad run must not end the process's polling
            log.exception("a poller run failed; the next one starts in %.0f s", _POLLER_RESTART_SECONDS)
            stop.wait(_POLLER_RESTART_SECONDS)


def serve(settings: Settings, stop: threading.Event) -> None:
    """Run until `stop` is set, then finish the work in flight and return."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_sdk.errors import SlackApiError, SlackClientError

    from bot.slack.app import build_app
    from bot.slack.wiring import build_slack_deps
    from bot.wiring import poller_settings

    if not settings.slack_app_token:
        raise ConfigError("set SLACK_APP_TOKEN to the app-level token (xapp-..., scope connections:write)")
    deps = build_slack_deps(settings=settings)
    app = build_app(deps, socket_mode=True)
    poller = Poller(deps.service.store, deps.service, poller_settings(settings))
    handler = SocketModeHandler(app, settings.slack_app_token)
    try:
        handler.connect()  # type: ignore[no-untyped-call]
    except SlackApiError as exc:
        handler.close()  # type: ignore[no-untyped-call]
        error = exc.response.get("error", "unknown error")
        raise ConfigError(
            f"Slack refused to open a Socket Mode connection ({error}): check SLACK_APP_TOKEN "
            "(an app-level token, xapp-..., with connections:write) and that Socket Mode is on for the app"
        ) from None
    except (SlackClientError, OSError) as exc:
        handler.close()  # type: ignore[no-untyped-call]
        raise SlackUnreachable(
            f"cannot reach Slack at {app.client.base_url} to open a Socket Mode connection "
            f"({type(exc).__name__}); check the network (or SLACK_API_BASE_URL) and start again"
        ) from None
    poller_thread = threading.Thread(target=_poll_until_stopped, args=(poller, stop), name="poller", daemon=True)
    poller_thread.start()
    log.info("serving over Socket Mode; the poller runs in the background")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        stop.set()
        log.info("stopping: no new deliveries; finishing the work in flight")
        handler.close()  # type: ignore[no-untyped-call]  # waits for envelopes being acknowledged
        app.listener_runner.listener_executor.shutdown(wait=True)  # the listeners' work (checking files)
        poller_thread.join()  # the poller's steps in flight
        close = getattr(deps.store, "close", None)
        if callable(close):
            close()
        log.info("stopped")
