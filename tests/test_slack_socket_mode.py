"""The local Slack's Socket Mode (devtools/socket_mode.py), driven by slack_sdk's own built-in
Socket Mode client over a real WebSocket on 127.0.0.1: the URL from `apps.connections.open`,
`hello`, the three envelope kinds with their acks, redelivery of unacknowledged events, and
`disconnect` with the client's reconnection."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from devtools.slack_api import LocalSlackApi

OPS, ALICE = "C0OPS0001", "U0ALICE01"


class App:
    """A minimal Socket Mode app: records what arrives and acks it unless told not to."""

    def __init__(self, slack: LocalSlackApi, *, ack: bool = True) -> None:
        self.ack = ack
        self.received: list[SocketModeRequest] = []
        self.lock = threading.Lock()
        web = WebClient(token=slack.bot_token, base_url=slack.base_url)
        self.client = SocketModeClient(app_token=slack.app_token, web_client=web, ping_interval=1)
        self.client.socket_mode_request_listeners.append(self.on_request)  # type: ignore[arg-type]

    def on_request(self, client: SocketModeClient, request: SocketModeRequest) -> None:
        with self.lock:
            self.received.append(request)
        if not self.ack:
            return
        payload: dict[str, Any] | None = None
        if request.type == "slash_commands":
            payload = {"text": f"got {request.payload['text']}"}
        client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id, payload=payload))


@pytest.fixture
def slack() -> Iterator[LocalSlackApi]:
    with LocalSlackApi(socket_ack_timeout=0.3, socket_retry_delays=(0.0, 0.1, 0.1)) as api:
        api.add_channel(OPS, "ops-tables")
        yield api


@pytest.fixture
def app(slack: LocalSlackApi) -> Iterator[App]:
    app = App(slack)
    app.client.connect()
    slack.socket_mode.wait_connected()
    yield app
    app.client.close()


def test_connections_open_needs_the_app_level_token(slack: LocalSlackApi) -> None:
    with pytest.raises(SlackApiError) as refused:
        WebClient(base_url=slack.base_url).apps_connections_open(app_token=slack.bot_token)
    assert refused.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as wrong:
        WebClient(base_url=slack.base_url).apps_connections_open(app_token="xapp-1-other")
    assert wrong.value.response["error"] == "invalid_auth"
    url = WebClient(base_url=slack.base_url).apps_connections_open(app_token=slack.app_token)["url"]
    assert url.startswith(f"ws://127.0.0.1:{slack.socket_mode.port}/link/?ticket=")


def test_a_ticket_opens_one_connection(slack: LocalSlackApi) -> None:
    url = slack.socket_mode.new_url()
    with connect(url) as first:
        hello = json.loads(first.recv(timeout=5))
        assert hello["type"] == "hello" and hello["connection_info"]["app_id"] == slack.app_id
        with pytest.raises(InvalidStatus) as again:
            connect(url)
        assert again.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as forged:
        connect(url.replace("ticket=", "ticket=x"))
    assert forged.value.response.status_code == 401


def test_hello_then_each_envelope_kind_is_delivered_and_its_ack_recorded(slack: LocalSlackApi, app: App) -> None:
    signer = slack.signer()
    command = signer.slash_command("/table", "help", user_id=ALICE, channel_id=OPS)
    event = signer.file_share_event(OPS, slack.post_user_message(OPS, ALICE, "hello"))
    message = {
        "ts": "1.000001",
        "blocks": [{"type": "actions", "elements": [{"type": "button", "action_id": "retry"}]}],
    }
    click = signer.click_button(message, "retry", user_id=ALICE, channel_id=OPS)

    ids = [slack.deliver(command), slack.deliver(event), slack.deliver(click)]
    acks = [slack.socket_mode.wait_ack(envelope_id) for envelope_id in ids]

    assert [r.type for r in app.received] == ["slash_commands", "events_api", "interactive"]
    assert [r.envelope_id for r in app.received] == ids
    assert app.received[0].accepts_response_payload is True
    assert app.received[1].payload["event_id"] == event.payload["event_id"]
    assert app.received[1].retry_attempt == 0
    assert acks[0].payload == {"text": "got help"}
    assert acks[1].payload is None
    # A slash command's answer in its ack is shown to the person who typed it.
    assert [m["text"] for m in slack.ephemeral_messages(user=ALICE)] == ["got help"]
    assert slack.socket_mode.stray_messages == []


def test_an_unacknowledged_event_is_delivered_again_until_acked(slack: LocalSlackApi) -> None:
    app = App(slack, ack=False)
    app.client.connect()
    try:
        slack.socket_mode.wait_connected()
        event = slack.signer().event_callback({"type": "message", "channel": OPS, "user": ALICE, "text": "x"})
        first = slack.deliver(event)
        deliveries = slack.socket_mode.wait_for(lambda: len(slack.socket_mode.deliveries_of(first)) >= 3 or None)
        app.ack = True  # the app recovers: the next delivery is acked and the retries stop
        ack = slack.socket_mode.wait_ack(first)
        deliveries = slack.socket_mode.deliveries_of(first)
    finally:
        app.client.close()
    attempts = [d.retry_attempt for d in deliveries]
    assert attempts == list(range(len(attempts))) and 3 <= len(attempts) <= 4
    assert len({d.envelope_id for d in deliveries}) == len(deliveries)
    assert {json.dumps(d.payload, sort_keys=True) for d in deliveries} == {json.dumps(event.payload, sort_keys=True)}
    assert ack.envelope_id == deliveries[-1].envelope_id
    received = [(r.retry_attempt, r.retry_reason) for r in app.received]
    assert received[0] == (0, None) or received[0] == (0, "")
    assert received[1] == (1, "timeout")


def test_retries_stop_after_the_last_delay(slack: LocalSlackApi) -> None:
    app = App(slack, ack=False)
    app.client.connect()
    try:
        slack.socket_mode.wait_connected()
        first = slack.deliver(slack.signer().event_callback({"type": "message", "channel": OPS, "text": "x"}))
        slack.socket_mode.wait_for(lambda: len(app.received) >= 4 or None)
        with pytest.raises(TimeoutError):
            slack.socket_mode.wait_for(lambda: len(slack.socket_mode.deliveries_of(first)) > 4 or None, timeout=1.0)
    finally:
        app.client.close()
    assert [d.retry_attempt for d in slack.socket_mode.deliveries_of(first)] == [0, 1, 2, 3]


@pytest.mark.parametrize("reason", ["refresh_requested", "warning"])
def test_after_a_disconnect_the_client_reconnects_and_the_next_envelope_arrives(
    slack: LocalSlackApi, app: App, reason: Any
) -> None:
    assert slack.socket_mode.disconnect(reason) == 1
    slack.socket_mode.wait_connected(hellos=2)
    slack.socket_mode.wait_for(lambda: slack.socket_mode.open_connections == 1)
    envelope_id = slack.deliver(slack.signer().event_callback({"type": "message", "channel": OPS, "text": "after"}))
    ack = slack.socket_mode.wait_ack(envelope_id)
    assert ack.connection >= 2  # a new connection (the client may race itself into a third)
    assert len(slack.calls_to("apps.connections.open")) >= 2


def test_an_envelope_sent_while_no_connection_is_open_waits_for_the_next_one(slack: LocalSlackApi) -> None:
    envelope_id = slack.deliver(slack.signer().event_callback({"type": "message", "channel": OPS, "text": "early"}))
    app = App(slack)
    app.client.connect()
    try:
        assert slack.socket_mode.wait_ack(envelope_id).connection == 1
    finally:
        app.client.close()


def test_a_socket_dropped_without_a_word_is_reopened_by_the_client(slack: LocalSlackApi, app: App) -> None:
    assert slack.socket_mode.drop() == 1
    slack.socket_mode.wait_connected(hellos=2)
    envelope_id = slack.deliver(slack.signer().event_callback({"type": "message", "channel": OPS, "text": "after"}))
    assert slack.socket_mode.wait_ack(envelope_id).connection >= 2
