"""Slack's Socket Mode, served locally: the WebSocket side of `devtools.slack_api.LocalSlackApi`.

Built on the `websockets` package's threaded server (a dev dependency). It plays Slack's part of
the protocol as Slack documents it for apps:

- `apps.connections.open` (called with the app-level token, on `LocalSlackApi`) hands out
  `ws://127.0.0.1:PORT/link/?ticket=...&app_id=...`; each ticket opens one connection, an
  unknown or used ticket is refused with HTTP 401. No TLS: slack_sdk's built-in client connects
  without it to any port but 443.
- On connect the server sends `hello` (`num_connections`, `debug_info`, `connection_info`).
- `deliver(kind, payload)` sends an envelope (`envelope_id`, `type` = `events_api`,
  `slash_commands` or `interactive`, `payload`, `accepts_response_payload`; events also
  `retry_attempt` and `retry_reason`) to the newest open connection, or as soon as one opens.
- The app acknowledges with `{"envelope_id": ..., "payload": ...}`; every ack is recorded with
  its payload (a slash command's answer) and handed to `on_ack` (LocalSlackApi shows a slash
  command's answer to its user, as Slack does).
- An `events_api` envelope not acknowledged within `ack_timeout` seconds is delivered again, as
  Slack does: the same payload (same `event_id`) in a new envelope with `retry_attempt` 1, 2, 3
  and `retry_reason` "timeout", after the delays of `retry_delays` (Slack's HTTP retries come
  at once, after a minute, after five; the defaults here). An ack of any delivery of the event
  stops its retries. Slash commands and interactions are not redelivered (Slack tells the
  user the app did not answer instead).
- `disconnect(reason)` sends `{"type": "disconnect", "reason": ...}` (`refresh_requested`,
  `warning`, `link_disabled`) and, unless told otherwise, drops the socket afterwards (a close
  frame, as Slack's servers send); `drop()` closes the connections without a word.

Not emulated: Slack's limit of ten connections per app, spreading envelopes over several open
connections (the newest gets them all), and a TCP reset without a close frame.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

EnvelopeKind = Literal["events_api", "slash_commands", "interactive"]
DisconnectReason = Literal["refresh_requested", "warning", "link_disabled"]
JsonDict = dict[str, Any]

DEFAULT_ACK_TIMEOUT = 3.0  # Slack waits 3 seconds for an acknowledgement
DEFAULT_RETRY_DELAYS = (0.0, 60.0, 300.0)  # after each missed ack: at once, a minute, five minutes
_HOST = "applink-local-0"


@dataclass(frozen=True)
class Ack:
    """An acknowledgement the app sent: which envelope, its payload (if any), on which connection."""

    envelope_id: str
    payload: JsonDict | None
    connection: int
    at: float


@dataclass
class Delivery:
    """One envelope sent (or waiting to be sent) to the app."""

    envelope_id: str
    kind: EnvelopeKind
    payload: JsonDict
    event_key: str  # the first delivery's envelope id: the same for an event and its retries
    retry_attempt: int = 0
    sent_at: float | None = None
    connection: int | None = None
    ack: Ack | None = None

    def envelope(self) -> JsonDict:
        envelope: JsonDict = {
            "envelope_id": self.envelope_id,
            "payload": self.payload,
            "type": self.kind,
            "accepts_response_payload": self.kind == "slash_commands",
        }
        if self.kind == "events_api":
            envelope["retry_attempt"] = self.retry_attempt
            envelope["retry_reason"] = "timeout" if self.retry_attempt else ""
        return envelope


@dataclass
class _Link:
    number: int
    ws: ServerConnection
    opened_at: float
    greeted: bool = False
    closed: bool = False


@dataclass
class _Event:
    """Retry bookkeeping of one events_api payload across its deliveries."""

    key: str
    acked: bool = False
    deliveries: list[Delivery] = field(default_factory=list)


class SocketModeServer:
    """The Socket Mode WebSocket endpoint of a local Slack (see the module docstring)."""

    def __init__(
        self,
        *,
        app_id: str,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        on_ack: Callable[[Delivery, JsonDict], None] | None = None,
    ) -> None:
        self.app_id = app_id
        self.ack_timeout = ack_timeout
        self.retry_delays = tuple(retry_delays)
        self.on_ack = on_ack
        self._cond = threading.Condition(threading.RLock())
        self._server: Server | None = None
        self._threads: list[threading.Thread] = []
        self._tickets: set[str] = set()
        self._links: list[_Link] = []
        self._hellos = 0
        self._outbox: list[tuple[float, Delivery]] = []  # (not before, delivery)
        self._deliveries: list[Delivery] = []
        self._by_envelope: dict[str, Delivery] = {}
        self._events: dict[str, _Event] = {}
        self._acks: list[Ack] = []
        self._stray_messages: list[str] = []
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        self._server = serve(
            self._session,
            "127.0.0.1",
            0,
            process_request=self._check_ticket,
            compression=None,
            server_header="LocalSlackApi",
        )
        for target, name in ((self._server.serve_forever, "socket-mode-accept"), (self._pump, "socket-mode-pump")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        if self._server is None:
            return
        with self._cond:
            self._stopping = True
            links = [link for link in self._links if not link.closed]
            self._cond.notify_all()
        self._server.shutdown()
        for link in links:
            link.ws.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Socket Mode server is not started")
        return int(self._server.socket.getsockname()[1])

    def new_url(self) -> str:
        """A one-use WebSocket URL, as `apps.connections.open` answers it."""
        ticket = secrets.token_hex(16)
        with self._cond:
            self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"

    # -- what the test (or the demo) does ------------------------------------------------------

    def deliver(self, kind: EnvelopeKind, payload: JsonDict) -> str:
        """Send an envelope to the app (now, or when a connection opens); returns its envelope id."""
        envelope_id = str(uuid.uuid4())
        delivery = Delivery(envelope_id, kind, payload, event_key=envelope_id)
        with self._cond:
            if kind == "events_api":
                self._events[envelope_id] = _Event(envelope_id, deliveries=[delivery])
            self._queue(delivery, not_before=0.0)
        return envelope_id

    def disconnect(self, reason: DisconnectReason = "refresh_requested", *, drop_after: float | None = 0.0) -> int:
        """Send `disconnect` on every open connection; close them `drop_after` seconds later
        (None: leave them open). Returns how many connections were told."""
        message = json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": _HOST}})
        with self._cond:
            links = [link for link in self._links if not link.closed]
        for link in links:
            self._send(link, message)
        if drop_after is not None:
            timer = threading.Timer(drop_after, self._close_links, args=(links,))
            timer.daemon = True
            timer.start()
        return len(links)

    def drop(self) -> int:
        """Close every open connection (a close frame, no disconnect message first)."""
        with self._cond:
            links = [link for link in self._links if not link.closed]
        self._close_links(links)
        return len(links)

    # -- what the test reads ----------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        with self._cond:
            return sum(not link.closed for link in self._links)

    @property
    def hellos(self) -> int:
        """How many connections were greeted with `hello` since the start."""
        with self._cond:
            return self._hellos

    @property
    def acks(self) -> list[Ack]:
        with self._cond:
            return list(self._acks)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self._deliveries)

    def deliveries_of(self, envelope_id: str) -> list[Delivery]:
        """Every delivery of the event first sent as `envelope_id` (the first, then its retries)."""
        with self._cond:
            first = self._by_envelope.get(envelope_id)
            if first is None:
                raise KeyError(f"no envelope {envelope_id}")
            event = self._events.get(first.event_key)
            return list(event.deliveries) if event else [first]

    @property
    def stray_messages(self) -> list[str]:
        """Messages from the app that were not acks of an envelope sent (a test asserts none)."""
        with self._cond:
            return list(self._stray_messages)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"Socket Mode condition not met within {timeout} s")
                self._cond.wait(min(left, 0.1))

    def wait_connected(self, hellos: int = 1, timeout: float = 10.0) -> None:
        """Wait until `hellos` connections were greeted in all and one is open."""
        self.wait_for(lambda: self._hellos >= hellos and self.open_connections, timeout)

    def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> Ack:
        """The ack of this envelope or of any redelivery of the same event."""

        def acked() -> Ack | None:
            return next((d.ack for d in self.deliveries_of(envelope_id) if d.ack is not None), None)

        ack: Ack = self.wait_for(acked, timeout)
        return ack

    # =============================================================================================
    # Internals

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        ticket = dict(parse_qsl(split.query)).get("ticket", "")
        with self._cond:
            known = split.path.rstrip("/") == "/link" and ticket in self._tickets
            self._tickets.discard(ticket)
        if known:
            return None
        body = b"invalid or used ticket: ask apps.connections.open for a new URL\n"
        headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return Response(HTTPStatus.UNAUTHORIZED, "Unauthorized", headers, body)

    def _session(self, ws: ServerConnection) -> None:
        with self._cond:
            link = _Link(len(self._links) + 1, ws, time.monotonic())
            self._links.append(link)
            open_count = sum(not other.closed for other in self._links)
        hello = {
            "type": "hello",
            "num_connections": open_count,
            "debug_info": {"host": _HOST, "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }
        try:
            ws.send(json.dumps(hello))
            with self._cond:
                self._hellos += 1
                link.greeted = True
                self._cond.notify_all()
            for raw in ws:
                self._on_message(link, raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                link.closed = True
                self._cond.notify_all()

    def _on_message(self, link: _Link, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        with self._cond:
            delivery = self._by_envelope.get(str(envelope_id)) if envelope_id else None
            if delivery is None or not isinstance(message, dict):
                self._stray_messages.append(raw[:500])
                return
            payload = message.get("payload")
            ack = Ack(delivery.envelope_id, payload if isinstance(payload, dict) else None, link.number, time.time())
            self._acks.append(ack)
            if delivery.ack is None:
                delivery.ack = ack
            event = self._events.get(delivery.event_key)
            if event is not None:
                event.acked = True
            self._cond.notify_all()
        if self.on_ack is not None and isinstance(payload, dict):
            self.on_ack(delivery, payload)

    def _queue(self, delivery: Delivery, not_before: float) -> None:
        """Caller holds the lock."""
        self._deliveries.append(delivery)
        self._by_envelope[delivery.envelope_id] = delivery
        self._outbox.append((not_before, delivery))
        self._cond.notify_all()

    def _current_link(self) -> _Link | None:
        live = [link for link in self._links if link.greeted and not link.closed]
        return live[-1] if live else None

    def _pump(self) -> None:
        """Send what is due on the newest connection; schedule retries of unacked events."""
        checks: list[tuple[float, Delivery]] = []  # (check at, delivery)
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                for _, delivery in [item for item in checks if item[0] <= now]:
                    self._retry_if_unacked(delivery, now)
                checks = [item for item in checks if item[0] > now]
                link = self._current_link()
                ready = [d for t, d in self._outbox if t <= now] if link else []
                self._outbox = [(t, d) for t, d in self._outbox if not (link and t <= now)]
                if not ready:
                    # Woken by a new delivery, a new connection or an ack; else at the next due time.
                    waits = [t for t, _ in checks] + ([t for t, _ in self._outbox] if link else [])
                    self._cond.wait(max(0.01, min(waits) - now) if waits else 0.5)
                    continue
            for delivery in ready:
                assert link is not None
                if self._acked_meanwhile(delivery):
                    continue  # a retry whose event was acknowledged while it waited: Slack sends nothing
                if self._send(link, json.dumps(delivery.envelope())):
                    with self._cond:
                        delivery.sent_at, delivery.connection = time.monotonic(), link.number
                        self._cond.notify_all()
                    if delivery.kind == "events_api":
                        checks.append((time.monotonic() + self.ack_timeout, delivery))
                else:
                    with self._cond:  # the connection went away: wait for the next one
                        self._outbox.append((0.0, delivery))

    def _acked_meanwhile(self, delivery: Delivery) -> bool:
        with self._cond:
            event = self._events.get(delivery.event_key)
            if event is None or not event.acked or delivery.retry_attempt == 0:
                return False
            event.deliveries.remove(delivery)
            self._deliveries.remove(delivery)
            del self._by_envelope[delivery.envelope_id]
            return True

    def _retry_if_unacked(self, delivery: Delivery, now: float) -> None:
        """Caller holds the lock."""
        event = self._events.get(delivery.event_key)
        if event is None or event.acked or delivery.ack is not None:
            return
        attempt = delivery.retry_attempt + 1
        if attempt > len(self.retry_delays):
            return
        retry = Delivery(str(uuid.uuid4()), delivery.kind, delivery.payload, delivery.event_key, retry_attempt=attempt)
        event.deliveries.append(retry)
        self._queue(retry, not_before=now + self.retry_delays[attempt - 1])

    def _send(self, link: _Link, message: str) -> bool:
        try:
            link.ws.send(message)
            return True
        except (ConnectionClosed, OSError, RuntimeError):
            return False  # it is closing: the caller waits for the next connection

    def _close_links(self, links: list[_Link]) -> None:
        for link in links:
            link.ws.close(code=1001, reason="refresh")
