"""A local HTTP server that speaks the Slack Web API, for tests and `tablebot demo`.

Point the bot at it with `SLACK_API_BASE_URL` (`WebClient(base_url=api.base_url)`; the URL ends
with `/api/` as slack_sdk expects). It plays the Slack side of a conversation:

- Web API methods the bot uses, form-encoded, JSON or multipart as slack_sdk sends them, with
  Slack's response shapes and bearer-token checking: `auth.test`, `chat.postMessage`,
  `chat.update`, `chat.delete`, `chat.postEphemeral`, `chat.getPermalink`, `reactions.add`,
  `conversations.info`, `conversations.history`, `conversations.replies`, `users.info`,
  `usergroups.users.list`, `files.info`, `files.getUploadURLExternal` + the upload URL +
  `files.completeUploadExternal`, and legacy `files.upload`. Other methods answer
  `unknown_method` (and are recorded).
- File hosting: `register_file` returns a Slack file object whose `url_private_download` points
  here; downloads need the bot token (else a 200 HTML sign-in page, as Slack does), stream from
  disk for big files, and can be made to answer a redirect, HTML or 404 per file.
- Recording: every request (method, arguments, headers without credentials, time, answer), the
  messages per channel and thread with their edit history, ephemeral messages, `response_url`
  posts; `thread_transcript` renders a thread as a person reads it.
- Fault injection: `rate_limit` (429 + Retry-After), `server_error` (5xx), `api_error`
  (`{"ok": false}`) and `delay`, for the next N calls of a method or for a time.
- `SlackRequestSigner` builds Slack-signed requests to the bot: slash commands, Events API
  callbacks (`message`/`file_share`, `file_shared`), block_actions payloads, retries.
- Socket Mode: `apps.connections.open` with the app-level token (`app_token`, `xapp-...`)
  answers a `ws://127.0.0.1:PORT/link/...` URL served by `socket_mode`
  (`devtools.socket_mode.SocketModeServer`, started on first use; it needs the `websockets`
  package). `deliver(request)` sends a request built by the signer as the matching envelope
  (`slash_commands`, `events_api`, `interactive`) instead of over HTTP; a slash command's
  acknowledgement payload is shown to its user as an ephemeral message, as Slack does.

What it does not emulate: OAuth and scopes (one bot token is all-powerful), Slack's
own rate limits (only injected ones), pagination beyond `conversations.replies`/`history`,
mrkdwn escaping, message formatting or unfurling, and the asynchronous delay between
`files.completeUploadExternal` and the file appearing in the channel (here it is immediate).
It is deliberately stricter than Slack in places where strictness finds bugs: a `thread_ts`
that names no message answers `thread_not_found`, and Block Kit size limits answer
`invalid_blocks`. Message `metadata` given to `chat.postMessage` is kept and, as in Slack,
returned by `conversations.history`/`replies` only with `include_all_metadata`.
"""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from slack_sdk.signature import SignatureVerifier

if TYPE_CHECKING:
    from devtools.socket_mode import Delivery, EnvelopeKind, SocketModeServer

DEFAULT_BOT_TOKEN = "xoxb-local-0000-test-token"  # noqa: S105 - a fixed fake for the local server
DEFAULT_SIGNING_SECRET = "local-signing-secret"  # noqa: S105 - a fixed fake for the local server
DEFAULT_TEAM_ID = "T0LOCAL00"
DEFAULT_BOT_USER_ID = "U0BOT0000"
DEFAULT_BOT_ID = "B0BOT0000"
DEFAULT_APP_ID = "A0APP0000"
DEFAULT_APP_TOKEN = "xapp-1-A0APP0000-0000-local-app-token"  # noqa: S105 - a fixed fake for the local server

# Pseudo-method names under which non-API requests are recorded and can be faulted.
FILE_DOWNLOAD = "file.download"
FILE_UPLOAD = "file.upload"
RESPONSE_URL = "response_url"

FileAccess = Literal["ok", "html", "redirect", "not_found"]
JsonDict = dict[str, Any]
T = TypeVar("T")

_CHUNK = 1024 * 1024
_MAX_BLOCKS = 50
_MAX_TEXT = 40_000
_RESPONSE_URL_USES = 5  # Slack allows a response_url to be used five times
_SIGNIN_PAGE = (
    b"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Slack</title></head>"
    b"<body><h1>Sign in to your workspace</h1><form action='/signin' method='post'>"
    b"<input name='email'><button>Sign in</button></form></body></html>"
)


# ---------------------------------------------------------------------------------------------
# Value types


@dataclass
class RecordedCall:
    """One request the server received. `params` are the effective arguments (query, form or JSON)."""

    method: str
    params: JsonDict
    json_body: bool
    headers: dict[str, str]
    at: float
    status: int = 0
    response: JsonDict | None = None


@dataclass(frozen=True)
class ResponseUrlPost:
    """What the bot posted to a `response_url` this server handed out."""

    url: str
    payload: JsonDict
    at: float


@dataclass(frozen=True)
class SignedRequest:
    """A request as Slack would send it to the bot: body text and headers (signature included)."""

    body: str
    headers: dict[str, str]
    payload: JsonDict  # the decoded content, for assertions (event_id, response_url, ...)

    def lambda_event(self, path: str = "/slack/events") -> JsonDict:
        """The same request as an API Gateway HTTP API (payload 2.0) Lambda event."""
        return {
            "version": "2.0",
            "rawPath": path,
            "rawQueryString": "",
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "queryStringParameters": {},
            "requestContext": {"http": {"method": "POST", "path": path}},
            "body": self.body,
            "isBase64Encoded": False,
        }


@dataclass
class _Fault:
    method: str  # a method name, or "*" for every request
    kind: Literal["ratelimit", "status", "api_error", "delay"]
    remaining: int | None
    until: float | None
    status: int = 200
    error: str = ""
    retry_after: int = 1
    seconds: float = 0.0

    def matches(self, method: str, now: float) -> bool:
        return self.method in ("*", method) and self.live(now)

    def live(self, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.remaining is None or self.remaining > 0


@dataclass
class _HostedFile:
    info: JsonDict
    content: bytes | None = None
    path: Path | None = None
    access: FileAccess = "ok"
    redirect_to: str | None = None
    slack_connect: bool = False


@dataclass
class _Channel:
    info: JsonDict
    messages: list[JsonDict] = field(default_factory=list)


@dataclass
class _PendingUpload:
    file_id: str
    filename: str
    length: int
    path: Path | None = None


@dataclass
class _ResponseUrl:
    url: str
    channel: str | None
    user: str | None
    message_ts: str | None
    uses: int = 0


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    file: Path | None = None


class _ApiError(LookupError):
    """A Slack error code; a LookupError so the public helpers raise something callers can catch."""

    def __init__(self, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


@dataclass(frozen=True)
class _Upload:
    filename: str
    content: bytes


# ---------------------------------------------------------------------------------------------
# HTTP plumbing


class _BodyReader:
    """The request body, read at most once: whole, or copied in chunks to a file."""

    def __init__(self, stream: BinaryIO, headers: Mapping[str, str]) -> None:
        self._stream = stream
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._left = int(headers.get("content-length", "0") or "0")
        self._done = False

    def chunks(self) -> Iterator[bytes]:
        if self._done:
            return
        self._done = True
        yield from self._chunked_chunks() if self._chunked else self._sized_chunks()

    def read_all(self) -> bytes:
        return b"".join(self.chunks())

    def copy_to(self, out: BinaryIO) -> int:
        size = 0
        for chunk in self.chunks():
            out.write(chunk)
            size += len(chunk)
        return size

    def drain(self) -> None:
        for _ in self.chunks():
            pass

    def _sized_chunks(self) -> Iterator[bytes]:
        while self._left > 0:
            chunk = self._stream.read(min(_CHUNK, self._left))
            if not chunk:
                return
            self._left -= len(chunk)
            yield chunk

    def _chunked_chunks(self) -> Iterator[bytes]:
        while True:
            size = int(self._stream.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self._stream.readline().strip():  # trailers
                    pass
                return
            left = size
            while left > 0:
                chunk = self._stream.read(min(_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk
            self._stream.readline()


@dataclass
class _Request:
    verb: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: _BodyReader


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: LocalSlackApi


class _Handler(BaseHTTPRequestHandler):
    server_version = "LocalSlackApi/1.0"

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read the recorded calls instead of a request log."""

    def _handle(self, verb: str) -> None:
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = _BodyReader(cast(BinaryIO, self.rfile), headers)
        request = _Request(verb, split.path, dict(parse_qsl(split.query)), headers, body)
        api = cast(_Server, self.server).api
        try:
            try:
                reply = api._serve(request)
            except Exception as exc:  # a bug here must show in the test, not hang the client
                api._note_internal_error(request.path, exc)
                reply = _json_reply({"ok": False, "error": "internal_error"}, 500)
            body.drain()
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away mid-transfer; nothing to answer

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.file is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("Content-Length", str(reply.file.stat().st_size))
        self.end_headers()
        with reply.file.open("rb") as source:
            shutil.copyfileobj(source, self.wfile, _CHUNK)


def _json_reply(payload: JsonDict, status: int = 200, extra: list[tuple[str, str]] | None = None) -> _Reply:
    headers = [("Content-Type", "application/json; charset=utf-8"), *(extra or [])]
    return _Reply(status, headers, json.dumps(payload).encode())


def _html_reply(body: bytes, status: int = 200) -> _Reply:
    return _Reply(status, [("Content-Type", "text/html; charset=utf-8")], body)


def _read_params(request: _Request) -> tuple[JsonDict, bool]:
    """The effective arguments of an API call, and whether the body was JSON."""
    params: JsonDict = dict(request.query)
    content_type = request.headers.get("content-type", "")
    raw = request.body.read_all()
    if "application/json" in content_type:
        decoded = json.loads(raw or b"{}")
        if not isinstance(decoded, dict):
            raise _ApiError("invalid_json")
        params.update(decoded)
        return params, True
    if "multipart/form-data" in content_type:
        params.update(_parse_multipart(content_type, raw))
    elif raw:
        params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    return params, False


def _parse_multipart(content_type: str, raw: bytes) -> JsonDict:
    head = b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    fields: JsonDict = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        fields[str(name)] = _Upload(filename, data) if filename else data.decode("utf-8")
    return fields


def _for_record(params: JsonDict) -> JsonDict:
    """Arguments as recorded: no credentials, no file contents."""
    kept: JsonDict = {}
    for key, value in params.items():
        if key == "token":
            continue
        kept[key] = f"<{len(value.content)} bytes>" if isinstance(value, _Upload) else value
    return kept


def _headers_for_record(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in ("authorization", "cookie")}


# ---------------------------------------------------------------------------------------------
# Block Kit: limits and rendering


def _text_of(obj: Any) -> str:
    if isinstance(obj, dict):
        text = obj.get("text")
        return text if isinstance(text, str) else ""
    return obj if isinstance(obj, str) else ""


def _element_label(element: Any) -> str:
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "button":
        return f"[{_text_of(element.get('text'))}]"
    if kind == "image":
        return f"[image: {element.get('alt_text', '')}]"
    if kind in ("plain_text", "mrkdwn"):
        return _text_of(element)
    placeholder = _text_of(element.get("placeholder"))
    return f"[{kind}: {placeholder}]" if placeholder else f"[{kind}]"


def _rich_text(elements: Any) -> str:
    parts: list[str] = []
    for element in elements if isinstance(elements, list) else []:
        if not isinstance(element, dict):
            continue
        kind = element.get("type")
        if isinstance(element.get("elements"), list):  # section, list, quote, preformatted: own lines
            inner = _rich_text(element["elements"])
            parts.append(inner if inner.endswith("\n") else inner + "\n")
        elif kind in ("text", "link"):
            parts.append(str(element.get("text") or element.get("url", "")))
        elif kind == "user":
            parts.append(f"<@{element.get('user_id', '')}>")
        elif kind == "channel":
            parts.append(f"<#{element.get('channel_id', '')}>")
        elif kind == "emoji":
            parts.append(f":{element.get('name', '')}:")
    return "".join(parts)


def _render_block(block: Any) -> list[str]:
    if not isinstance(block, dict):
        return []
    kind = block.get("type")
    if kind == "section":
        lines = [_text_of(block.get("text"))] if block.get("text") else []
        lines += [_text_of(f) for f in block.get("fields", [])]
        accessory = _element_label(block.get("accessory"))
        return [*lines, accessory] if accessory else lines
    if kind in ("header", "markdown"):
        return [_text_of(block.get("text")) if kind == "header" else str(block.get("text", ""))]
    if kind in ("context", "actions"):
        labels = (_element_label(e) for e in block.get("elements", []))
        return [" ".join(label for label in labels if label)]
    if kind == "divider":
        return ["---"]
    if kind == "rich_text":
        return _rich_text(block.get("elements")).rstrip("\n").split("\n")
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    if kind == "input":
        return [_text_of(block.get("label"))]
    return [f"[{kind}]"]


def render_blocks(blocks: Any) -> list[str]:
    """Block Kit blocks as the lines of text a person sees (buttons as `[Label]`)."""
    lines: list[str] = []
    for block in blocks if isinstance(blocks, list) else []:
        lines.extend(line for rendered in _render_block(block) for line in rendered.split("\n"))
    return lines


def _too_long(text_object: Any, limit: int, pointer: str) -> list[str]:
    if len(_text_of(text_object)) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{pointer}/text]"]
    return []


def _block_problems(blocks: Any) -> list[str]:
    """Block Kit limits Slack enforces with `invalid_blocks`, in Slack's message style."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    problems = ["no more than 50 items allowed [json-pointer:/blocks]"] if len(blocks) > _MAX_BLOCKS else []
    for index, block in enumerate(blocks):
        pointer = f"/blocks/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problems.append(f"missing required field: type [json-pointer:{pointer}]")
            continue
        if block["type"] == "section":
            problems += _section_problems(block, pointer)
        elif block["type"] == "header":
            problems += _too_long(block.get("text"), 150, pointer)
        elif block["type"] in ("actions", "context") and len(block.get("elements", [])) > 25:
            problems.append(f"no more than 25 items allowed [json-pointer:{pointer}/elements]")
    return problems


def _section_problems(block: JsonDict, pointer: str) -> list[str]:
    if "text" not in block and "fields" not in block:
        return [f"must provide either text or fields [json-pointer:{pointer}]"]
    problems = _too_long(block.get("text"), 3000, pointer)
    fields = block.get("fields", [])
    if len(fields) > 10:
        problems.append(f"no more than 10 items allowed [json-pointer:{pointer}/fields]")
    for index, item in enumerate(fields):
        problems += _too_long(item, 2000, f"{pointer}/fields/{index}")
    return problems


# ---------------------------------------------------------------------------------------------
# Small argument helpers


def _truthy(value: Any) -> bool:
    return value is True or value == 1 or (isinstance(value, str) and value.lower() in ("1", "true"))


def _json_arg(params: JsonDict, key: str, error: str) -> Any:
    value = params.get(key)
    if not isinstance(value, str):
        return value
    if not value:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise _ApiError(error) from exc


def _str_arg(params: JsonDict, key: str) -> str:
    value = params.get(key)
    return "" if value is None else str(value)


def _filetype(name: str) -> str:
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return {"csv": "csv", "txt": "text", "json": "json", "tsv": "tsv", "gz": "gzip", "zip": "zip"}.get(suffix, "binary")


# ---------------------------------------------------------------------------------------------
# The server


class LocalSlackApi:
    """A Slack workspace with one bot, served over HTTP on 127.0.0.1 (see the module docstring).

    `start()` returns `base_url` (`http://127.0.0.1:PORT/api/`); `stop()` ends it; also a context
    manager. With `strict=False` (default) channels and users are created the first time a call
    names them; with `strict=True` unknown ones answer `channel_not_found`/`user_not_found`.
    """

    def __init__(
        self,
        *,
        bot_token: str = DEFAULT_BOT_TOKEN,
        team_id: str = DEFAULT_TEAM_ID,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        app_id: str = DEFAULT_APP_ID,
        bot_name: str = "tablebot",
        strict: bool = False,
        clock: Callable[[], float] = time.time,
        app_token: str = DEFAULT_APP_TOKEN,
        socket_ack_timeout: float = 3.0,
        socket_retry_delays: tuple[float, ...] = (0.0, 60.0, 300.0),
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self._socket_settings = (socket_ack_timeout, socket_retry_delays)
        self._socket: SocketModeServer | None = None
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.strict = strict
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmp: Path | None = None
        self._counter = 0
        self._last_ts_us = 0
        self._calls: list[RecordedCall] = []
        self._faults: list[_Fault] = []
        self._channels: dict[str, _Channel] = {}
        self._users: dict[str, JsonDict] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._files: dict[str, _HostedFile] = {}
        self._uploads: dict[str, _PendingUpload] = {}
        self._versions: dict[tuple[str, str], list[JsonDict]] = {}
        self._ephemerals: list[JsonDict] = []
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._response_posts: list[ResponseUrlPost] = []
        self._internal_errors: list[str] = []
        self._methods: dict[str, Callable[[JsonDict], JsonDict]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "reactions.add": self._reactions_add,
            "conversations.info": self._conversations_info,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "files.info": self._files_info,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "files.upload": self._files_upload,
            "apps.connections.open": self._apps_connections_open,
        }
        self.add_user(bot_user_id, bot_name, is_bot=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (a free port unless given) in a background thread; return `base_url`."""
        if self._server is not None:
            return self.base_url
        self._tmp = Path(tempfile.mkdtemp(prefix="local-slack-"))
        server = _Server(("127.0.0.1", port), _Handler)
        server.api = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="local-slack-api", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and remove uploaded files; recordings stay readable."""
        if self._socket is not None:
            self._socket.stop()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LocalSlackApi:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalSlackApi is not started: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The Web API base URL for slack_sdk (`WebClient(base_url=...)`), ending with `/api/`."""
        return f"{self.root_url}/api/"

    # -- Socket Mode ------------------------------------------------------------------------------

    @property
    def socket_mode(self) -> SocketModeServer:
        """The Socket Mode WebSocket server (started on first use; see `devtools.socket_mode`)."""
        with self._cond:
            if self._socket is None:
                from devtools.socket_mode import SocketModeServer  # needs `websockets`: only here

                ack_timeout, retry_delays = self._socket_settings
                server = SocketModeServer(
                    app_id=self.app_id, ack_timeout=ack_timeout, retry_delays=retry_delays, on_ack=self._on_socket_ack
                )
                server.start()
                self._socket = server
            return self._socket

    def deliver(self, request: SignedRequest) -> str:
        """Send a request built by `SlackRequestSigner` over Socket Mode; returns the envelope id."""
        payload = request.payload
        if "command" in payload:
            kind: EnvelopeKind = "slash_commands"
        elif payload.get("type") == "event_callback":
            kind = "events_api"
        else:
            kind = "interactive"
        return self.socket_mode.deliver(kind, copy.deepcopy(payload))

    def _on_socket_ack(self, delivery: Delivery, payload: JsonDict) -> None:
        """A slash command's acknowledgement with a message: shown to its user, as Slack does."""
        if delivery.kind != "slash_commands" or not (payload.get("text") or payload.get("blocks")):
            return
        command = delivery.payload
        with self._cond:
            try:
                channel = self._channel(str(command.get("channel_id", "")))["id"]
            except _ApiError:
                return
            message = self._bot_message(payload)
            if payload.get("response_type") == "in_channel":
                self._append(channel, message, None)
            else:
                self._ephemerals.append(
                    {**message, "channel": channel, "user": command.get("user_id"), "ts": self._next_ts()}
                )
            self._cond.notify_all()

    # -- workspace directory ----------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        email: str | None = None,
        is_bot: bool = False,
        is_admin: bool = False,
        deleted: bool = False,
        tz: str = "Europe/Istanbul",
    ) -> JsonDict:
        """Add (or replace) a workspace member; returns the `users.info` user object."""
        user = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real_name or name,
            "deleted": deleted,
            "is_bot": is_bot,
            "is_admin": is_admin,
            "is_owner": False,
            "is_app_user": False,
            "tz": tz,
            "profile": {"real_name": real_name or name, "display_name": name, "email": email or f"{name}@example.com"},
        }
        with self._cond:
            self._users[user_id] = user
        return copy.deepcopy(user)

    def add_channel(self, channel_id: str, name: str, *, is_private: bool = False) -> JsonDict:
        """Add a channel (the bot is a member); returns the `conversations.info` channel object."""
        with self._cond:
            return copy.deepcopy(self._new_channel(channel_id, name, is_private=is_private).info)

    def add_usergroup(self, usergroup_id: str, user_ids: list[str]) -> None:
        """Add a user group (`S...`) whose members `usergroups.users.list` returns."""
        with self._cond:
            self._usergroups[usergroup_id] = list(user_ids)

    # -- files --------------------------------------------------------------------------------------

    def register_file(
        self,
        name: str,
        content: bytes | str | None = None,
        *,
        path: str | Path | None = None,
        mimetype: str = "text/csv",
        filetype: str | None = None,
        title: str | None = None,
        user: str = "U0USER000",
        channel: str | None = None,
        access: FileAccess = "ok",
        redirect_to: str | None = None,
        slack_connect: bool = False,
    ) -> JsonDict:
        """Host a file (bytes, or a path streamed from disk) and return its Slack file object.

        `access`: "ok" serves it to the bot token; "html" always answers the sign-in page (no
        access); "redirect" answers 302 to `redirect_to` (default: this server's sign-in page);
        "not_found" answers 404. `slack_connect=True` makes events carry only
        `file_access: check_file_info`, as Slack does for files from Slack Connect channels.
        """
        if (content is None) == (path is None):
            raise ValueError("register_file needs exactly one of content or path")
        data = content.encode() if isinstance(content, str) else content
        source = Path(path) if path is not None else None
        size = len(data) if data is not None else cast(Path, source).stat().st_size
        with self._cond:
            info = self._file_object(
                self._new_id("F"),
                name=name,
                title=title or name,
                mimetype=mimetype,
                filetype=filetype or _filetype(name),
                size=size,
                user=user,
            )
            if channel is not None:
                info["channels"] = [self._channel(channel)["id"]]
            hosted = _HostedFile(info, data, source, access, redirect_to, slack_connect)
            self._files[info["id"]] = hosted
            return copy.deepcopy(info)

    def set_file_access(self, file_id: str, access: FileAccess, *, redirect_to: str | None = None) -> None:
        """Change how the download URL of a hosted file answers (see `register_file`)."""
        with self._cond:
            hosted = self._hosted(file_id)
            hosted.access = access
            hosted.redirect_to = redirect_to

    def file_info(self, file_id: str) -> JsonDict:
        """The current Slack file object (as `files.info` answers it)."""
        with self._cond:
            return copy.deepcopy(self._hosted(file_id).info)

    def event_file_object(self, file_id: str) -> JsonDict:
        """The file object as it appears in events: full, or a stub for Slack Connect files."""
        with self._cond:
            hosted = self._hosted(file_id)
            if hosted.slack_connect:
                info = hosted.info
                return {
                    "id": info["id"],
                    "mode": "file_access",
                    "file_access": "check_file_info",
                    "created": info["created"],
                    "timestamp": info["timestamp"],
                    "user": info["user"],
                }
            return copy.deepcopy(hosted.info)

    def file_content(self, file_id: str) -> bytes:
        """The bytes of a hosted or uploaded file (for small files: it reads them whole)."""
        with self._cond:
            hosted = self._hosted(file_id)
        if hosted.content is not None:
            return hosted.content
        return cast(Path, hosted.path).read_bytes()

    def file_path(self, file_id: str) -> Path | None:
        """Where a path-backed or uploaded file lives on disk (None for in-memory files)."""
        with self._cond:
            return self._hosted(file_id).path

    # -- people acting in Slack ---------------------------------------------------------------------

    def post_user_message(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None, files: list[str] | None = None
    ) -> JsonDict:
        """A person posts a message (optionally in a thread, optionally sharing hosted files)."""
        with self._cond:
            channel_id = self._channel(channel)["id"]
            self._user(user)
            message: JsonDict = {"type": "message", "user": user, "text": text, "team": self.team_id}
            if files:
                message.update(subtype="file_share", upload=False, display_as_bot=False)
                stored = self._append_with_files(channel_id, message, files, thread_ts)
            else:
                stored = self._append(channel_id, message, thread_ts)
            self._cond.notify_all()
            return copy.deepcopy(stored)

    def share_file(
        self, channel: str, user: str, file_id: str, *, text: str = "", thread_ts: str | None = None
    ) -> JsonDict:
        """A person shares a hosted file in a channel; returns the `file_share` message."""
        return self.post_user_message(channel, user, text, thread_ts=thread_ts, files=[file_id])

    # -- recordings ---------------------------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        """Every request received, in order (API methods and the pseudo-methods for files)."""
        with self._cond:
            return list(self._calls)

    def calls_to(self, method: str) -> list[RecordedCall]:
        with self._cond:
            return [call for call in self._calls if call.method == method]

    def messages(self, channel: str) -> list[JsonDict]:
        """Top-level messages of a channel, oldest first, as they are now (after updates)."""
        with self._cond:
            found = self._channel(channel, create=False)
            stored = self._channels[found["id"]].messages
            return [copy.deepcopy(m) for m in stored if m.get("thread_ts", m["ts"]) == m["ts"]]

    def thread(self, channel: str, thread_ts: str) -> list[JsonDict]:
        """The parent message and its replies, oldest first, as they are now."""
        with self._cond:
            return [
                copy.deepcopy(m) for m in self._thread_messages(self._channel(channel, create=False)["id"], thread_ts)
            ]

    def message(self, channel: str, ts: str) -> JsonDict:
        """One message as it is now (text and blocks after the last `chat.update`)."""
        with self._cond:
            return copy.deepcopy(self._message(self._channel(channel, create=False)["id"], ts))

    def message_versions(self, channel: str, ts: str) -> list[JsonDict]:
        """Every version of a message: as posted, then after each update."""
        with self._cond:
            return copy.deepcopy(self._versions.get((self._channel(channel, create=False)["id"], ts), []))

    def ephemeral_messages(self, *, channel: str | None = None, user: str | None = None) -> list[JsonDict]:
        """Ephemeral messages (chat.postEphemeral and ephemeral response_url posts)."""
        with self._cond:
            return [
                copy.deepcopy(m)
                for m in self._ephemerals
                if (channel is None or m["channel"] == channel) and (user is None or m["user"] == user)
            ]

    def thread_transcript(self, channel: str, thread_ts: str) -> str:
        """The thread as a person reads it: `author: text` (blocks rendered, files by name)."""
        with self._cond:
            lines: list[str] = []
            for message in self._thread_messages(self._channel(channel, create=False)["id"], thread_ts):
                body = self._readable_lines(message) or [""]
                lines.append(f"{self._author(message)}: {body[0]}")
                lines.extend(f"  {line}" for line in body[1:])
            return "\n".join(lines)

    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Wait until `predicate()` returns something truthy (re-checked on every request)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s")
                self._cond.wait(min(left, 0.1))

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 5.0) -> list[RecordedCall]:
        """Wait until `method` was called (and answered) at least `count` times."""

        def answered() -> list[RecordedCall] | None:
            done = [c for c in self.calls_to(method) if c.status]
            return done if len(done) >= count else None

        return self.wait_for(answered, timeout)

    @property
    def internal_errors(self) -> list[str]:
        """Unexpected exceptions inside this server (answered 500); a test can assert it is empty."""
        with self._cond:
            return list(self._internal_errors)

    def _note_internal_error(self, path: str, exc: Exception) -> None:
        with self._cond:
            self._internal_errors.append(f"{path}: {type(exc).__name__}: {exc}")

    # -- fault injection ----------------------------------------------------------------------------

    def rate_limit(
        self, method: str, *, times: int | None = None, seconds: float | None = None, retry_after: int = 1
    ) -> None:
        """The next `times` calls of `method` (or all for `seconds`) answer 429 with Retry-After."""
        self._add_fault(_Fault(method, "ratelimit", *self._window(times, seconds), status=429, retry_after=retry_after))

    def server_error(
        self, method: str, *, times: int | None = None, seconds: float | None = None, status: int = 500
    ) -> None:
        """The next `times` calls of `method` (or all for `seconds`) answer an HTTP 5xx."""
        self._add_fault(_Fault(method, "status", *self._window(times, seconds), status=status))

    def api_error(self, method: str, error: str, *, times: int | None = None, seconds: float | None = None) -> None:
        """The next `times` calls of `method` (or all for `seconds`) answer `{"ok": false, "error": error}`."""
        self._add_fault(_Fault(method, "api_error", *self._window(times, seconds), error=error))

    def delay(
        self, method: str, delay_seconds: float, *, times: int | None = None, seconds: float | None = None
    ) -> None:
        """Answer `method` after `delay_seconds` (every call unless `times`/`seconds` limit it)."""
        remaining, until = (None, None) if times is None and seconds is None else self._window(times, seconds)
        self._add_fault(_Fault(method, "delay", remaining, until, seconds=delay_seconds))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    # -- response_url hosting -----------------------------------------------------------------------

    def new_response_url(
        self, *, channel: str | None = None, user: str | None = None, message_ts: str | None = None
    ) -> str:
        """A response_url on this server for one slash command or interaction."""
        with self._cond:
            url = f"{self.root_url}/response/{secrets.token_hex(8)}"
            self._response_urls[url] = _ResponseUrl(url, channel, user, message_ts)
            return url

    def response_url_posts(self, url: str | None = None) -> list[ResponseUrlPost]:
        """What the bot posted to response_urls (all, or to one)."""
        with self._cond:
            return [p for p in self._response_posts if url is None or p.url == url]

    def signer(self, signing_secret: str = DEFAULT_SIGNING_SECRET) -> SlackRequestSigner:
        """A request signer whose requests carry response_urls hosted here."""
        return SlackRequestSigner(
            signing_secret,
            team_id=self.team_id,
            api_app_id=self.app_id,
            bot_user_id=self.bot_user_id,
            response_url_factory=self.new_response_url,
        )

    # =============================================================================================
    # Internals: HTTP dispatch

    def _serve(self, request: _Request) -> _Reply:
        path = request.path
        if path.startswith("/api/"):
            return self._serve_api(request, path.removeprefix("/api/"))
        if path.startswith("/files-pri/"):
            return self._serve_download(request)
        if path.startswith("/upload/v1/"):
            return self._serve_upload(request)
        if path.startswith("/response/"):
            return self._serve_response_url(request)
        if path == "/signin":
            return _html_reply(_SIGNIN_PAGE)
        return _html_reply(b"<html><body>Not found</body></html>", 404)

    def _serve_api(self, request: _Request, method: str) -> _Reply:
        try:
            params, is_json = _read_params(request)
        except (ValueError, _ApiError):
            params, is_json = {}, True
            call = self._record(method, params, is_json, request.headers)
            return self._answer(call, {"ok": False, "error": "invalid_json"})
        call = self._record(method, params, is_json, request.headers)
        faulted = self._apply_faults(method, call)
        if faulted is not None:
            return faulted
        return self._answer(call, self._call_method(method, params, request.headers))

    def _call_method(self, method: str, params: JsonDict, headers: Mapping[str, str]) -> JsonDict:
        handler = self._methods.get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        try:
            if method == "apps.connections.open":
                self._check_app_token(headers, params)
            else:
                self._check_token(headers, params)
            with self._cond:
                result = handler(params)
                self._cond.notify_all()
            return {"ok": True, **result}
        except _ApiError as error:
            return {"ok": False, "error": error.code, **error.extra}

    def _answer(
        self, call: RecordedCall, payload: JsonDict, status: int = 200, headers: list[tuple[str, str]] | None = None
    ) -> _Reply:
        with self._cond:
            call.status, call.response = status, payload
            self._cond.notify_all()
        return _json_reply(payload, status, headers)

    def _record(self, method: str, params: JsonDict, is_json: bool, headers: Mapping[str, str]) -> RecordedCall:
        call = RecordedCall(method, _for_record(params), is_json, _headers_for_record(headers), self._clock())
        with self._cond:
            self._calls.append(call)
            self._cond.notify_all()
        return call

    def _check_token(self, headers: Mapping[str, str], params: JsonDict) -> None:
        authorization = headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else None
        token = token or _str_arg(params, "token") or None
        if token is None:
            raise _ApiError("not_authed")
        if not secrets.compare_digest(token.encode(), self.bot_token.encode()):
            raise _ApiError("invalid_auth")

    def _check_app_token(self, headers: Mapping[str, str], params: JsonDict) -> None:
        authorization = headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else None
        token = token or _str_arg(params, "token") or None
        if token is None:
            raise _ApiError("not_authed")
        if not token.startswith("xapp-"):
            raise _ApiError("not_allowed_token_type")
        if not secrets.compare_digest(token.encode(), self.app_token.encode()):
            raise _ApiError("invalid_auth")

    def _token_ok(self, headers: Mapping[str, str]) -> bool:
        try:
            self._check_token(headers, {})
        except _ApiError:
            return False
        return True

    # -- faults -------------------------------------------------------------------------------------

    def _window(self, times: int | None, seconds: float | None) -> tuple[int | None, float | None]:
        """Neither given: the next call only. `seconds` alone: every call for that long."""
        if times is None and seconds is None:
            return 1, None
        return times, (self._clock() + seconds if seconds is not None else None)

    def _add_fault(self, fault: _Fault) -> None:
        with self._cond:
            self._faults.append(fault)

    def _take_fault(self, method: str) -> tuple[float, _Fault | None]:
        """Consume the faults matching this request: total delay, and the first failure."""
        now = self._clock()
        wait, failure = 0.0, None
        with self._cond:
            for fault in self._faults:
                if not fault.matches(method, now) or (fault.kind != "delay" and failure is not None):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                if fault.kind == "delay":
                    wait += fault.seconds
                else:
                    failure = fault
            self._faults = [f for f in self._faults if f.live(now)]
        return wait, failure

    def _apply_faults(self, method: str, call: RecordedCall) -> _Reply | None:
        wait, failure = self._take_fault(method)
        if wait:
            time.sleep(wait)
        if failure is None:
            return None
        if failure.kind == "ratelimit":
            retry_after = [("Retry-After", str(failure.retry_after))]
            return self._answer(call, {"ok": False, "error": "ratelimited"}, 429, retry_after)
        if failure.kind == "status":
            return self._answer(call, {"ok": False, "error": "fatal_error"}, failure.status)
        return self._answer(call, {"ok": False, "error": failure.error})

    # -- file download, upload URL, response_url ----------------------------------------------------

    def _serve_download(self, request: _Request) -> _Reply:
        # /files-pri/{team}-{file id}[/download]/{name}
        parts = request.path.split("/")
        file_id = parts[2].rsplit("-", 1)[-1] if len(parts) > 3 else ""
        call = self._record(FILE_DOWNLOAD, {"file_id": file_id, "path": unquote(request.path)}, False, request.headers)
        faulted = self._apply_faults(FILE_DOWNLOAD, call)
        if faulted is not None:
            return faulted
        reply = self._download_reply(file_id, request.headers)
        with self._cond:
            call.status = reply.status
            self._cond.notify_all()
        return reply

    def _download_reply(self, file_id: str, headers: Mapping[str, str]) -> _Reply:
        with self._cond:
            hosted = self._files.get(file_id)
        if hosted is None or hosted.access == "not_found":
            return _html_reply(b"<html><body>File not found</body></html>", 404)
        if not self._token_ok(headers) or hosted.access == "html":
            return _html_reply(_SIGNIN_PAGE)  # Slack answers its sign-in page with 200, not an error
        if hosted.access == "redirect":
            return _Reply(302, [("Location", hosted.redirect_to or f"{self.root_url}/signin")])
        content_headers = [("Content-Type", str(hosted.info["mimetype"]))]
        if hosted.path is not None:
            return _Reply(200, content_headers, file=hosted.path)
        return _Reply(200, content_headers, hosted.content or b"")

    def _serve_upload(self, request: _Request) -> _Reply:
        upload_id = request.path.removeprefix("/upload/v1/")
        call = self._record(FILE_UPLOAD, {"upload_id": upload_id}, False, request.headers)
        faulted = self._apply_faults(FILE_UPLOAD, call)
        if faulted is not None:
            return faulted
        with self._cond:
            pending = self._uploads.get(upload_id)
        if pending is None or self._tmp is None:
            return self._text_answer(call, 404, "upload URL not found")
        target = self._tmp / f"{pending.file_id}-upload"
        with target.open("wb") as out:
            size = self._store_upload(request, out)
        with self._cond:
            pending.path = target
            call.params["size"] = size
        return self._text_answer(call, 200, f"OK - {size}")

    def _store_upload(self, request: _Request, out: BinaryIO) -> int:
        content_type = request.headers.get("content-type", "")
        if "multipart/form-data" not in content_type:
            return request.body.copy_to(out)  # slack_sdk posts the raw bytes
        uploads = [
            v for v in _parse_multipart(content_type, request.body.read_all()).values() if isinstance(v, _Upload)
        ]
        data = uploads[0].content if uploads else b""
        out.write(data)
        return len(data)

    def _text_answer(self, call: RecordedCall, status: int, text: str) -> _Reply:
        with self._cond:
            call.status = status
            self._cond.notify_all()
        return _Reply(status, [("Content-Type", "text/plain; charset=utf-8")], text.encode())

    def _serve_response_url(self, request: _Request) -> _Reply:
        url = f"{self.root_url}{request.path}"
        try:
            payload = json.loads(request.body.read_all() or b"{}")
        except ValueError:
            payload = None
        call = self._record(RESPONSE_URL, {"url": url, "payload": payload}, True, request.headers)
        faulted = self._apply_faults(RESPONSE_URL, call)
        if faulted is not None:
            return faulted
        if not isinstance(payload, dict):
            return self._answer(call, {"ok": False, "error": "invalid_payload"}, 400)
        with self._cond:
            target = self._response_urls.get(url)
            if target is None:
                return self._answer(call, {"ok": False, "error": "expired_url"}, 404)
            if target.uses >= _RESPONSE_URL_USES:
                return self._answer(call, {"ok": False, "error": "used_url"}, 404)
            target.uses += 1
            self._response_posts.append(ResponseUrlPost(url, payload, self._clock()))
            try:
                self._apply_response(target, payload)
            except _ApiError as error:
                return self._answer(call, {"ok": False, "error": error.code}, 400)
        return self._answer(call, {"ok": True})

    def _apply_response(self, target: _ResponseUrl, payload: JsonDict) -> None:
        """What Slack shows after a response_url post: in channel, replaced, deleted, or ephemeral."""
        if target.channel is None:
            return
        channel = self._channel(target.channel)["id"]
        if target.message_ts and _truthy(payload.get("delete_original")):
            self._remove_message(channel, target.message_ts)
        elif target.message_ts and _truthy(payload.get("replace_original")):
            self._edit(channel, target.message_ts, payload)
        elif payload.get("response_type") == "in_channel":
            self._append(channel, self._bot_message(payload), payload.get("thread_ts"))
        else:
            self._ephemerals.append(
                {**self._bot_message(payload), "channel": channel, "user": target.user, "ts": self._next_ts()}
            )

    # =============================================================================================
    # Internals: workspace state (callers hold self._cond)

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}0L{self._counter:07d}"

    def _next_ts(self) -> str:
        """Message timestamps: unique and increasing, in Slack's `seconds.micros` form."""
        now_us = max(int(self._clock() * 1_000_000), self._last_ts_us + 1)
        self._last_ts_us = now_us
        return f"{now_us // 1_000_000}.{now_us % 1_000_000:06d}"

    def _new_channel(self, channel_id: str, name: str, *, is_private: bool = False, is_im: bool = False) -> _Channel:
        info = {
            "id": channel_id,
            "name": name,
            "is_channel": not is_private and not is_im,
            "is_group": is_private,
            "is_im": is_im,
            "is_private": is_private or is_im,
            "is_archived": False,
            "is_member": True,
            "is_ext_shared": False,
            "created": int(self._clock()),
            "creator": self.bot_user_id,
            "context_team_id": self.team_id,
        }
        channel = _Channel(info)
        self._channels[channel_id] = channel
        return channel

    def _channel(self, ref: str, *, create: bool = True) -> JsonDict:
        """Resolve a channel id, `#name`, or a user id (their DM with the bot)."""
        if not ref:
            raise _ApiError("channel_not_found")
        if ref in self._channels:
            return self._channels[ref].info
        name = ref.removeprefix("#")
        for channel in self._channels.values():
            if channel.info["name"] == name and not channel.info["is_im"]:
                return channel.info
        if ref[0] in "UW" and ref.isalnum():
            self._user(ref)
            dm_id = "D" + ref[1:]
            return (self._channels.get(dm_id) or self._new_channel(dm_id, ref, is_im=True)).info
        if create and not self.strict and ref[0] in "CGD" and ref.isalnum() and ref.isupper():
            return self._new_channel(ref, f"channel-{ref.lower()}", is_private=ref[0] == "G").info
        raise _ApiError("channel_not_found")

    def _user(self, user_id: str) -> JsonDict:
        if user_id not in self._users:
            if self.strict or not user_id or user_id[0] not in "UW":
                raise _ApiError("user_not_found")
            self.add_user(user_id, user_id.lower())
        return self._users[user_id]

    def _hosted(self, file_id: str) -> _HostedFile:
        hosted = self._files.get(file_id)
        if hosted is None:
            raise KeyError(f"no file {file_id} on this local Slack API")
        return hosted

    def _message(self, channel_id: str, ts: str) -> JsonDict:
        for message in self._channels[channel_id].messages:
            if message["ts"] == ts:
                return message
        raise _ApiError("message_not_found")

    def _thread_messages(self, channel_id: str, thread_ts: str) -> list[JsonDict]:
        try:
            parent = self._message(channel_id, thread_ts)
        except _ApiError as exc:
            raise _ApiError("thread_not_found") from exc
        root = parent.get("thread_ts", parent["ts"])
        return [m for m in self._channels[channel_id].messages if m["ts"] == root or m.get("thread_ts") == root]

    def _bot_message(self, params: JsonDict) -> JsonDict:
        message: JsonDict = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": _str_arg(params, "text"),
            "team": self.team_id,
        }
        for key in ("blocks", "attachments", "metadata"):
            value = _json_arg(params, key, "invalid_blocks" if key == "blocks" else f"invalid_{key}")
            if value:
                message[key] = value
        return message

    def _append(self, channel_id: str, message: JsonDict, thread_ts: str | None) -> JsonDict:
        message["ts"] = self._next_ts()
        if thread_ts:
            parent = self._thread_messages(channel_id, thread_ts)[0]
            message["thread_ts"] = parent["ts"]
            message["parent_user_id"] = parent.get("user")
            self._note_reply(parent, message)
        self._channels[channel_id].messages.append(message)
        self._versions[(channel_id, message["ts"])] = [copy.deepcopy(message)]
        return message

    @staticmethod
    def _note_reply(parent: JsonDict, reply: JsonDict) -> None:
        parent["thread_ts"] = parent["ts"]
        parent["reply_count"] = parent.get("reply_count", 0) + 1
        users = parent.setdefault("reply_users", [])
        if reply.get("user") not in users:
            users.append(reply.get("user"))
        parent["reply_users_count"] = len(users)
        parent["latest_reply"] = reply["ts"]

    def _edit(self, channel_id: str, ts: str, params: JsonDict) -> JsonDict:
        message = self._message(channel_id, ts)
        if message.get("bot_id") != self.bot_id:
            raise _ApiError("cant_update_message")
        update = self._bot_message(params)
        for key in ("text", "blocks", "attachments"):
            if key in update:
                message[key] = update[key]
            elif key in ("blocks", "attachments") and key in params:
                message.pop(key, None)  # an explicit empty value clears it, as in Slack
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        self._versions[(channel_id, ts)].append(copy.deepcopy(message))
        return message

    def _remove_message(self, channel_id: str, ts: str) -> None:
        message = self._message(channel_id, ts)
        self._channels[channel_id].messages.remove(message)

    def _file_object(
        self, file_id: str, *, name: str, title: str, mimetype: str, filetype: str, size: int, user: str
    ) -> JsonDict:
        created = int(self._clock())
        base = f"{self.root_url}/files-pri/{self.team_id}-{file_id}"
        return {
            "id": file_id,
            "created": created,
            "timestamp": created,
            "name": name,
            "title": title,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": filetype.upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{base}/{quote(name)}",
            "url_private_download": f"{base}/download/{quote(name)}",
            "permalink": f"{self.root_url}/files/{user}/{file_id}/{quote(name)}",
            "channels": [],
            "groups": [],
            "ims": [],
            "shares": {},
            "has_rich_preview": False,
            "file_access": "visible",
        }

    def _append_with_files(
        self, channel_id: str, message: JsonDict, file_ids: list[str], thread_ts: str | None
    ) -> JsonDict:
        """Post a message sharing files; the files then list the channel and the share."""
        if any(file_id not in self._files for file_id in file_ids):
            raise _ApiError("file_not_found")
        stored = self._append(channel_id, message, thread_ts)
        for file_id in file_ids:
            self._note_share(file_id, channel_id, stored)
        stored["files"] = [self.event_file_object(file_id) for file_id in file_ids]
        self._versions[(channel_id, stored["ts"])] = [copy.deepcopy(stored)]
        return stored

    def _note_share(self, file_id: str, channel_id: str, message: JsonDict) -> None:
        info = self._files[file_id].info
        if channel_id not in info["channels"]:
            info["channels"].append(channel_id)
        channel = self._channels[channel_id].info
        scope = "private" if channel["is_private"] else "public"
        share = {
            "ts": message["ts"],
            "channel_name": channel["name"],
            "team_id": self.team_id,
            "share_user_id": message["user"],
        }
        if "thread_ts" in message:
            share["thread_ts"] = message["thread_ts"]
        info["shares"].setdefault(scope, {}).setdefault(channel_id, []).append(share)

    def _author(self, message: JsonDict) -> str:
        user = self._users.get(str(message.get("user")))
        return str(user["name"]) if user else str(message.get("user") or message.get("bot_id") or "unknown")

    def _readable_lines(self, message: JsonDict) -> list[str]:
        lines = render_blocks(message["blocks"]) if message.get("blocks") else str(message.get("text", "")).split("\n")
        lines += [f"[file: {f.get('name', f.get('id'))}]" for f in message.get("files", [])]
        reactions = " ".join(f":{r['name']}: {r['count']}" for r in message.get("reactions", []))
        lines += [f"[reactions: {reactions}]"] if reactions else []
        return lines if lines != [""] else []

    # =============================================================================================
    # Internals: Web API methods (callers hold self._cond; each returns the body without "ok")

    def _auth_test(self, params: JsonDict) -> JsonDict:
        return {
            "url": f"{self.root_url}/",
            "team": "Local Workspace",
            "user": self._users[self.bot_user_id]["name"],
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _message_params(self, params: JsonDict) -> JsonDict:
        text = _str_arg(params, "text")
        if len(text) > _MAX_TEXT:
            raise _ApiError("msg_too_long")
        blocks = _json_arg(params, "blocks", "invalid_blocks")
        if blocks is not None:
            problems = _block_problems(blocks)
            if problems:
                raise _ApiError(
                    "invalid_blocks",
                    errors=problems,
                    response_metadata={"messages": [f"[ERROR] {p}" for p in problems]},
                )
        if not text and not blocks and not params.get("attachments"):
            raise _ApiError("no_text")
        return self._bot_message(params)

    def _chat_post_message(self, params: JsonDict) -> JsonDict:
        channel = self._channel(_str_arg(params, "channel"))["id"]
        message = self._append(channel, self._message_params(params), _str_arg(params, "thread_ts") or None)
        return {"channel": channel, "ts": message["ts"], "message": copy.deepcopy(message)}

    def _chat_update(self, params: JsonDict) -> JsonDict:
        channel = self._channel(_str_arg(params, "channel"), create=False)["id"]
        self._message_params(params)  # the same checks as a new message
        message = self._edit(channel, _str_arg(params, "ts"), params)
        return {"channel": channel, "ts": message["ts"], "text": message["text"], "message": copy.deepcopy(message)}

    def _chat_delete(self, params: JsonDict) -> JsonDict:
        channel = self._channel(_str_arg(params, "channel"), create=False)["id"]
        ts = _str_arg(params, "ts")
        if self._message(channel, ts).get("bot_id") != self.bot_id:
            raise _ApiError("cant_delete_message")
        self._remove_message(channel, ts)
        return {"channel": channel, "ts": ts}

    def _chat_post_ephemeral(self, params: JsonDict) -> JsonDict:
        channel = self._channel(_str_arg(params, "channel"))["id"]
        user = self._user(_str_arg(params, "user"))["id"]
        message = self._message_params(params)
        message.update(channel=channel, user=user, ts=self._next_ts())
        if params.get("thread_ts"):
            message["thread_ts"] = _str_arg(params, "thread_ts")
        self._ephemerals.append(message)
        return {"message_ts": message["ts"]}

    def _chat_get_permalink(self, params: JsonDict) -> JsonDict:
        channel = self._channel(_str_arg(params, "channel"), create=False)["id"]
        message = self._message(channel, _str_arg(params, "message_ts"))
        link = f"{self.root_url}/archives/{channel}/p{message['ts'].replace('.', '')}"
        if message.get("thread_ts", message["ts"]) != message["ts"]:
            link += "?" + urlencode({"thread_ts": message["thread_ts"], "cid": channel})
        return {"channel": channel, "permalink": link}

    def _reactions_add(self, params: JsonDict) -> JsonDict:
        channel = self._channel(_str_arg(params, "channel"), create=False)["id"]
        message = self._message(channel, _str_arg(params, "timestamp"))
        name = _str_arg(params, "name").strip(":")
        if not name:
            raise _ApiError("invalid_name")
        reactions: list[JsonDict] = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None:
            reaction = {"name": name, "users": [], "count": 0}
            reactions.append(reaction)
        if self.bot_user_id in reaction["users"]:
            raise _ApiError("already_reacted")
        reaction["users"].append(self.bot_user_id)
        reaction["count"] += 1
        return {}

    def _conversations_info(self, params: JsonDict) -> JsonDict:
        return {"channel": copy.deepcopy(self._channel(_str_arg(params, "channel")))}

    def _conversations_history(self, params: JsonDict) -> JsonDict:
        channel = self._channel(_str_arg(params, "channel"))["id"]
        top = [m for m in self._channels[channel].messages if m.get("thread_ts", m["ts"]) == m["ts"]]
        return self._page(list(reversed(top)), params, limit_default=100)

    def _conversations_replies(self, params: JsonDict) -> JsonDict:
        channel = self._channel(_str_arg(params, "channel"), create=False)["id"]
        return self._page(self._thread_messages(channel, _str_arg(params, "ts")), params, limit_default=1000)

    @staticmethod
    def _page(messages: list[JsonDict], params: JsonDict, *, limit_default: int) -> JsonDict:
        start = int(_str_arg(params, "cursor") or 0)
        limit = int(_str_arg(params, "limit") or limit_default) or limit_default
        page = copy.deepcopy(messages[start : start + limit])
        more = start + limit < len(messages)
        if not _truthy(params.get("include_all_metadata")):
            for message in page:  # as Slack: message metadata only when asked for
                message.pop("metadata", None)
        return {
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _apps_connections_open(self, params: JsonDict) -> JsonDict:
        return {"url": self.socket_mode.new_url()}

    def _users_info(self, params: JsonDict) -> JsonDict:
        return {"user": copy.deepcopy(self._user(_str_arg(params, "user")))}

    def _usergroups_users_list(self, params: JsonDict) -> JsonDict:
        members = self._usergroups.get(_str_arg(params, "usergroup"))
        if members is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(members)}

    def _files_info(self, params: JsonDict) -> JsonDict:
        hosted = self._files.get(_str_arg(params, "file"))
        if hosted is None:
            raise _ApiError("file_not_found")
        return {"file": copy.deepcopy(hosted.info), "comments": [], "response_metadata": {"next_cursor": ""}}

    def _files_get_upload_url(self, params: JsonDict) -> JsonDict:
        filename, length = _str_arg(params, "filename"), _str_arg(params, "length")
        if not filename or not length.isdigit():
            raise _ApiError("invalid_arguments")
        upload_id = secrets.token_hex(12)
        file_id = self._new_id("F")
        self._uploads[upload_id] = _PendingUpload(file_id, filename, int(length))
        return {"upload_url": f"{self.root_url}/upload/v1/{upload_id}", "file_id": file_id}

    def _files_complete_upload(self, params: JsonDict) -> JsonDict:
        entries = _json_arg(params, "files", "invalid_arguments")
        if not isinstance(entries, list) or not entries:
            raise _ApiError("invalid_arguments")
        by_file = {u.file_id: u for u in self._uploads.values()}
        completed: list[JsonDict] = []
        for entry in entries:
            pending = by_file.get(str(entry.get("id"))) if isinstance(entry, dict) else None
            if pending is None or pending.path is None:
                raise _ApiError("file_not_found")
            completed.append(self._host_upload(pending, str(entry.get("title") or pending.filename)))
        done = {f["id"] for f in completed}
        self._uploads = {k: u for k, u in self._uploads.items() if u.file_id not in done}
        self._share_uploaded(params, [f["id"] for f in completed])
        return {"files": [copy.deepcopy(self._files[f["id"]].info) for f in completed]}

    def _host_upload(self, pending: _PendingUpload, title: str) -> JsonDict:
        path = cast(Path, pending.path)
        mimetype = "text/csv" if _filetype(pending.filename) == "csv" else "application/octet-stream"
        info = self._file_object(
            pending.file_id,
            name=pending.filename,
            title=title,
            mimetype=mimetype,
            filetype=_filetype(pending.filename),
            size=path.stat().st_size,
            user=self.bot_user_id,
        )
        self._files[pending.file_id] = _HostedFile(info, path=path)
        return info

    def _share_uploaded(self, params: JsonDict, file_ids: list[str]) -> None:
        """Post the uploaded files as one bot message per channel (in the thread, if given)."""
        channels = [_str_arg(params, "channel_id")] if params.get("channel_id") else []
        channels += [c for c in _str_arg(params, "channels").split(",") if c]
        thread_ts = _str_arg(params, "thread_ts") or None
        for ref in channels:
            channel = self._channel(ref)["id"]
            message = self._bot_message({"text": params.get("initial_comment") or ""})
            message.update(upload=True, display_as_bot=False)
            self._append_with_files(channel, message, file_ids, thread_ts)

    def _files_upload(self, params: JsonDict) -> JsonDict:
        upload = params.get("file")
        if isinstance(upload, _Upload):
            data, filename = upload.content, _str_arg(params, "filename") or upload.filename
        elif "content" in params:
            data, filename = _str_arg(params, "content").encode(), _str_arg(params, "filename") or "untitled"
        else:
            raise _ApiError("no_file_data")
        assert self._tmp is not None
        file_id = self._new_id("F")
        path = self._tmp / f"{file_id}-upload"
        path.write_bytes(data)
        pending = _PendingUpload(file_id, filename, len(data), path)
        info = self._host_upload(pending, _str_arg(params, "title") or filename)
        self._share_uploaded({**params, "channel_id": ""}, [file_id])
        return {"file": copy.deepcopy(self._files[info["id"]].info)}


# ---------------------------------------------------------------------------------------------
# Signed requests to the bot


class SlackRequestSigner:
    """Builds requests as Slack sends them to an app, signed with the app's signing secret.

    The signature comes from `slack_sdk.signature.SignatureVerifier.generate_signature`, so the
    bot verifies exactly what Slack would send. `response_url_factory(channel, user, message_ts)`
    supplies response_urls (`LocalSlackApi.signer()` wires its own hosting).
    """

    def __init__(
        self,
        signing_secret: str = DEFAULT_SIGNING_SECRET,
        *,
        team_id: str = DEFAULT_TEAM_ID,
        api_app_id: str = DEFAULT_APP_ID,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        response_url_factory: Callable[..., str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = SignatureVerifier(signing_secret)
        self.team_id = team_id
        self.api_app_id = api_app_id
        self.bot_user_id = bot_user_id
        self._response_url_factory = response_url_factory
        self._clock = clock

    def sign(
        self,
        body: str,
        payload: JsonDict,
        *,
        content_type: str = "application/json",
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> SignedRequest:
        """Sign `body` as sent now (or at `timestamp`), with Slack's retry headers if `retry_num`."""
        stamp = str(int(self._clock()) if timestamp is None else timestamp)
        signature = self._verifier.generate_signature(timestamp=stamp, body=body)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": str(signature),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        return SignedRequest(body, headers, payload)

    def retry(self, request: SignedRequest, retry_num: int = 1, reason: str = "http_timeout") -> SignedRequest:
        """Slack's redelivery of the same request: same body, fresh signature, retry headers."""
        content_type = request.headers.get("Content-Type", "application/json")
        return self.sign(
            request.body, request.payload, content_type=content_type, retry_num=retry_num, retry_reason=reason
        )

    def _response_url(self, channel: str | None, user: str | None, message_ts: str | None = None) -> str:
        if self._response_url_factory is None:
            return f"https://hooks.slack.com/commands/{self.team_id}/0/local"
        return self._response_url_factory(channel=channel, user=user, message_ts=message_ts)

    @staticmethod
    def _trigger_id() -> str:
        return f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"

    def slash_command(
        self,
        command: str,
        text: str,
        *,
        user_id: str,
        channel_id: str,
        user_name: str | None = None,
        channel_name: str = "ops",
        response_url: str | None = None,
        trigger_id: str | None = None,
        timestamp: int | None = None,
        retry_num: int | None = None,
    ) -> SignedRequest:
        """A slash command invocation (form-encoded, as Slack posts it)."""
        fields = {
            "token": "local-verification-token",
            "team_id": self.team_id,
            "team_domain": "local",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name or user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or self._response_url(channel_id, user_id),
            "trigger_id": trigger_id or self._trigger_id(),
        }
        return self.sign(
            urlencode(fields),
            dict(fields),
            content_type="application/x-www-form-urlencoded",
            timestamp=timestamp,
            retry_num=retry_num,
        )

    def event_callback(
        self,
        event: JsonDict,
        *,
        event_id: str | None = None,
        timestamp: int | None = None,
        retry_num: int | None = None,
    ) -> SignedRequest:
        """An Events API `event_callback` envelope around `event`."""
        envelope = {
            "token": "local-verification-token",
            "team_id": self.team_id,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(self._clock()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{secrets.token_hex(12)}",
        }
        return self.sign(json.dumps(envelope), envelope, timestamp=timestamp, retry_num=retry_num)

    def file_share_event(
        self, channel: str, message: JsonDict, *, channel_type: str = "channel", **options: Any
    ) -> SignedRequest:
        """The `message` event (subtype `file_share`, full `files[]`) for a shared-file message.

        `message` is what `LocalSlackApi.share_file` returned (or a hand-built equivalent).
        """
        event = {**copy.deepcopy(message), "channel": channel, "event_ts": message["ts"], "channel_type": channel_type}
        event.setdefault("subtype", "file_share")
        return self.event_callback(event, **options)

    def file_shared_event(
        self, file_id: str, *, user_id: str, channel_id: str, event_ts: str | None = None, **options: Any
    ) -> SignedRequest:
        """The `file_shared` event (ids only; the bot calls `files.info`)."""
        event = {
            "type": "file_shared",
            "channel_id": channel_id,
            "file_id": file_id,
            "user_id": user_id,
            "file": {"id": file_id},
            "event_ts": event_ts or f"{self._clock():.6f}",
        }
        return self.event_callback(event, **options)

    def url_verification(self, challenge: str) -> SignedRequest:
        payload = {"token": "local-verification-token", "challenge": challenge, "type": "url_verification"}
        return self.sign(json.dumps(payload), payload)

    def block_actions(
        self,
        *,
        user_id: str,
        channel_id: str,
        message: JsonDict,
        actions: list[JsonDict],
        user_name: str | None = None,
        response_url: str | None = None,
        trigger_id: str | None = None,
        timestamp: int | None = None,
    ) -> SignedRequest:
        """An interactive `block_actions` payload for `actions` taken on `message` (form body `payload=`)."""
        container: JsonDict = {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        if "thread_ts" in message:
            container["thread_ts"] = message["thread_ts"]
        payload: JsonDict = {
            "type": "block_actions",
            "user": {
                "id": user_id,
                "username": user_name or user_id.lower(),
                "name": user_name or user_id.lower(),
                "team_id": self.team_id,
            },
            "api_app_id": self.api_app_id,
            "token": "local-verification-token",
            "container": container,
            "trigger_id": trigger_id or self._trigger_id(),
            "team": {"id": self.team_id, "domain": "local"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": "channel"},
            "message": copy.deepcopy(message),
            "state": {"values": {}},
            "response_url": response_url or self._response_url(channel_id, user_id, message["ts"]),
            "actions": actions,
        }
        body = urlencode({"payload": json.dumps(payload)})
        return self.sign(body, payload, content_type="application/x-www-form-urlencoded", timestamp=timestamp)

    def click_button(
        self, message: JsonDict, action_id: str, *, user_id: str, channel_id: str, **options: Any
    ) -> SignedRequest:
        """A person clicks the button `action_id` in `message`'s blocks (LookupError if there is none)."""
        for block in message.get("blocks", []):
            for element in _block_elements(block):
                if element.get("type") == "button" and element.get("action_id") == action_id:
                    action = {
                        "type": "button",
                        "action_id": action_id,
                        "block_id": block.get("block_id", ""),
                        "text": element.get("text", {}),
                        "action_ts": f"{self._clock():.6f}",
                    }
                    if "value" in element:
                        action["value"] = element["value"]
                    return self.block_actions(
                        user_id=user_id, channel_id=channel_id, message=message, actions=[action], **options
                    )
        raise LookupError(f"no button with action_id {action_id!r} in the message")


def _block_elements(block: Any) -> list[JsonDict]:
    if not isinstance(block, dict):
        return []
    elements = [e for e in block.get("elements", []) if isinstance(e, dict)]
    accessory = block.get("accessory")
    return [*elements, accessory] if isinstance(accessory, dict) else elements
