"""The HTTP plumbing the emulators share: a ThreadingHTTPServer that streams request bodies to temp
files, rate limits, injected faults, asynchronous jobs, a request log, and the `/_sandbox` admin API.

Admin API (every emulator):
- `GET  /_sandbox/health`                 -> {"ok": true, "kind": ...}
- `GET  /_sandbox/settings`, `POST /_sandbox/settings` (JSON object: the keys of `SandboxSettings`)
- `POST /_sandbox/faults` {"kind", "count"=1, "path"=substring, "method"}: scripted faults for the
  next matching requests (kinds in `FAULT_KINDS`); `DELETE /_sandbox/faults` clears them. Besides
  429/500/timeouts/drops: `404` (not found), `html` (a 200 HTML page, as a proxy or login wall
  answers), `code_error` (HTTP 200 with `{"code": 999, ...}`), `403_address` (403 with
  `actionResult`, the IP allow-list refusal)
- `GET  /_sandbox/requests` (the API requests seen: time (of arrival), answered, method, path, status, fault, the rate
  key (`key`: a digest of the token, or the caller address) and, for uploads, the `table`), `DELETE` clears

Variants (settings) where the facts give several shapes or none: `retry_after` (the header of a
429; "" sends none), `allowed_addresses` (non-empty: others get 403 with `actionResult` before
their credentials are looked at), `status_case` (as_is | upper | lower | title),
`status_not_found_seconds` (a new job's status reads answer 404 this long), and per emulator the
envelopes and words (see each module).
- `GET  /_sandbox/jobs`, `GET /_sandbox/jobs/{id}` (with the emulator's own reason for a failure)
- `PUT  /_sandbox/tables/{id}` (define a table), `GET /_sandbox/tables/{id}` (what is stored)
- `POST /_sandbox/reset` (forget tables' contents, jobs, faults and the log)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

CHUNK = 1024 * 1024
FAULT_KINDS = (
    "429",
    "500",
    "timeout",
    "500_after",
    "drop_after",
    "job_failed",
    "job_stuck",
    "404",
    "html",
    "code_error",
    "403_address",
)
_REQUEST_FAULTS = ("429", "500", "timeout", "500_after", "drop_after", "404", "html", "code_error", "403_address")
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in</body></html>"
ADDRESS_REFUSED = "IP address {address} is not in the allowed IP list of this account"
_LOG_LIMIT = 10_000


@dataclass
class SandboxSettings:
    """Behaviour of an emulator; every key can be set in `--settings FILE` (TOML) or at run time."""

    # All emulators
    latency_seconds: float = 0.0  # added to every API answer
    job_seconds: float = 2.0  # from upload to the job's end
    requests_per_second: float = 0.0  # 0: the vendor's documented limit
    share_429: float = 0.0  # share of API requests answered 429 at random
    share_500: float = 0.0
    share_timeout: float = 0.0  # share answered only after slow_seconds
    share_job_failed: float = 0.0  # share of jobs that fail
    share_job_stuck: float = 0.0  # share of jobs that never finish
    slow_seconds: float = 30.0
    seed: int | None = None
    retry_after: str = "1"  # Retry-After of a 429 answer; "" sends none
    allowed_addresses: list[str] = field(default_factory=list)  # empty: every caller address is allowed
    status_case: str = "as_is"  # as_is | upper | lower | title: the case of status words
    status_not_found_seconds: float = 0.0  # status reads of a new job answer 404 this long
    failure_text_field: str = ""  # where a failed job's own text goes ("", error, message, reason, errors)
    status_words: dict[str, str] = field(default_factory=dict)  # pending|running|done|failed|partial -> word
    # BigPanda
    tokens: list[str] = field(default_factory=lambda: ["demo-bigpanda-token"])
    max_file_bytes: int = 500 * 1024 * 1024
    max_field_chars: int = 32 * 1024  # "32K" read as 32,768 characters
    location_header: bool = True
    # D·engage
    users: dict[str, str] = field(default_factory=lambda: {"demo-userkey": "demo-password"})
    token_ttl_seconds: float = 3600.0
    max_request_bytes: int = 50 * 1024 * 1024  # "50mb" read as 50 MiB here (the client sends <= 50*10**6)
    table_call_spacing_seconds: float = 60.0  # one upsert call a minute per table
    status_path: str = "/dataspace/async/upsert/{job_id}"  # unknown upstream; the sibling endpoints' shape
    status_waiting: str = "Waiting"
    status_running: str = "Running"
    status_done: str = "Completed"
    status_failed: str = "Failed"
    constant_field: str = "value"  # unknown upstream
    overwrite_field: str = "overwriteWithEmpty"  # unknown upstream
    # The upsert's answer (unknown upstream): data_object {"data": {"jobId"}} | data_string | top_level
    # {"jobId"} | transaction_id {"data": {"transactionId"}} | top_transaction_id | bare_string
    response_shape: str = "data_object"
    # The table list: data_result {"data": {"result", "totalRowCount"}} (public client code) |
    # data_items {"data": {"items", "totalRowCount"}} | bare_list {"data": [...]} | list [...]
    tables_shape: str = "data_result"
    tables_page_max: int = 0  # rows per page at most, whatever `limit` asks (0: as asked)
    row_errors_status: str = ""  # the word of a job with row errors ("": status_failed; e.g. PartiallyCompleted)
    # BigPanda: the Job object bare (as documented) or under "data"
    job_shape: str = "bare"

    def update(self, values: Mapping[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for key, given in values.items():
            if key not in known:
                raise ValueError(f"unknown sandbox setting {key!r}")
            current = getattr(self, key)
            value = given
            if isinstance(current, bool):
                value = bool(given)
            elif isinstance(current, int | float) and given is not None:
                value = type(current)(given)
            setattr(self, key, value)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # lower-cased names
    client: str
    body_path: Path | None
    body_size: int
    body_too_large: bool = False
    keep_body: bool = False  # set by a handler that took the body file over
    note: dict[str, Any] = field(default_factory=dict)  # what the handler adds to the request log
    received: float = field(default_factory=time.time)  # arrival (headers read): what vendors count

    def json(self) -> Any:
        if self.body_path is None:
            return None
        return json.loads(self.body_path.read_bytes() or b"null")

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return cls(status, body, {"Content-Type": "application/json", **(headers or {})})


class BadRequest(Exception):
    """A request the emulated API refuses; `response` is what it answers."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class Fault:
    kind: str
    count: int = 1
    path: str | None = None
    method: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.path is None or self.path in path) and (self.method is None or self.method == method)


@dataclass
class Job:
    id: str
    table: str
    created: float
    body_path: Path | None
    status: str = "pending"  # pending | running | done | failed (the emulator's words)
    forced: str | None = None  # "failed" | "stuck" by fault injection
    reason: str | None = None
    errors: list[Any] = field(default_factory=list)
    error_count: int = 0
    ended: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "table": self.table,
            "status": self.status,
            "forced": self.forced,
            "reason": self.reason,
            "error_count": self.error_count,
            "errors": self.errors[:20],
            "created": self.created,
            "ended": self.ended,
            **self.info,
        }


class Bucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class SandboxApp:
    """One emulated API. Subclasses route API requests and run their jobs' checks."""

    kind: ClassVar[str]
    default_rps: ClassVar[float]
    api_prefix: ClassVar[str] = ""

    def __init__(self, settings: SandboxSettings | None = None, tables: Mapping[str, Any] | None = None) -> None:
        self.settings = settings or SandboxSettings()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"tablebot-sandbox-{self.kind}-")
        self.state_dir = Path(self._tmp.name)
        (self.state_dir / "incoming").mkdir()
        self.faults: list[Fault] = []
        self.log: list[dict[str, Any]] = []
        self.jobs: dict[str, Job] = {}
        self._buckets: dict[str, Bucket] = {}
        self._random = random.Random(self.settings.seed)  # noqa: S311 - fault injection, not secrets
        self._threads: list[threading.Thread] = []
        for table_id, definition in (tables or self.demo_tables()).items():
            self.define_table(table_id, definition)

    # --- to implement by each emulator ---------------------------------------------------------

    def demo_tables(self) -> Mapping[str, Any]:
        raise NotImplementedError

    def define_table(self, table_id: str, definition: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def table_contents(self, table_id: str, req: Request) -> Response:
        raise NotImplementedError

    def route(self, req: Request) -> Response:
        raise NotImplementedError

    def rate_key(self, req: Request) -> str | None:
        raise NotImplementedError

    def max_body_bytes(self, method: str, path: str) -> int:
        raise NotImplementedError

    def check_job(self, job: Job) -> None:
        """Check the job's data (slow, streaming); set job.reason/errors when it must fail."""
        raise NotImplementedError

    def apply_job(self, job: Job) -> None:
        raise NotImplementedError

    def reset_tables(self) -> None:
        raise NotImplementedError

    # --- request handling -----------------------------------------------------------------------

    def handle(self, req: Request) -> Response | None:
        """The answer to a request, or None to drop the connection without one."""
        if req.path.startswith("/_sandbox/") or req.path == "/_sandbox":
            try:
                return self.admin(req)
            except (ValueError, KeyError, TypeError) as exc:
                return Response.json(400, {"message": f"sandbox admin: {exc}"})
        fault = self._pick_fault(req)
        if self.settings.latency_seconds:
            self.stopping.wait(self.settings.latency_seconds)
        response: Response | None
        if fault == "429":
            response = self.too_many()
        elif fault == "500":
            response = Response.json(500, {"message": "injected server error"})
        elif fault == "404":
            response = Response.json(404, {"code": 404, "message": "Not Found"})
        elif fault == "html":
            response = Response(200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        elif fault == "code_error":
            response = Response.json(200, {"code": 999, "message": "UnexpectedError", "data": None})
        elif fault == "403_address" or not self._address_allowed(req):
            response = self.address_refused(req)
        else:
            if fault == "timeout":
                self.stopping.wait(self.settings.slow_seconds)
            response = self._rate_limited(req) or self._route(req)
            if fault == "500_after":
                response = Response.json(500, {"message": "injected server error (after processing)"})
            elif fault == "drop_after":
                response = None
        self._record(req, response, fault)
        return response

    def too_many(self) -> Response:
        headers = {"Retry-After": self.settings.retry_after} if self.settings.retry_after else {}
        return Response.json(429, {"code": 429, "message": "Too Many Requests"}, headers)

    def _address_allowed(self, req: Request) -> bool:
        allowed = self.settings.allowed_addresses
        return not allowed or req.client in allowed

    def address_refused(self, req: Request) -> Response:
        """403 before the credentials are looked at, the reason in `actionResult` (D·engage's shape)."""
        return Response.json(
            403,
            {
                "code": 10,
                "message": "Forbidden",
                "actionResult": ADDRESS_REFUSED.format(address=req.client),
                "data": None,
            },
        )

    def status_word(self, family: str, default: str) -> str:
        """The word a status read answers for `family`, in the configured case."""
        word = self.settings.status_words.get(family) or default
        case = self.settings.status_case
        if case == "upper":
            return word.upper()
        if case == "lower":
            return word.lower()
        if case == "title":
            return word.title()
        return word

    def status_not_found_yet(self, job: Job) -> bool:
        """A new job's status may not be readable at once (eventual consistency upstream)."""
        return time.time() - job.created < self.settings.status_not_found_seconds

    def _route(self, req: Request) -> Response:
        if req.body_too_large:
            return self.too_large(req)
        try:
            return self.route(req)
        except BadRequest as exc:
            return exc.response

    def too_large(self, req: Request) -> Response:
        return Response.json(413, {"message": "request too large"})

    def _rate_limited(self, req: Request) -> Response | None:
        key = self.rate_key(req)
        if key is None:
            return None
        rate = self.settings.requests_per_second or self.default_rps
        with self.lock:
            bucket = self._buckets.get(key)
            if bucket is None or bucket.rate != rate:
                bucket = self._buckets[key] = Bucket(rate)
            allowed = bucket.take()
        return None if allowed else self.too_many()

    def _pick_fault(self, req: Request) -> str | None:
        with self.lock:
            for fault in self.faults:
                if fault.kind in _REQUEST_FAULTS and fault.count > 0 and fault.matches(req.method, req.path):
                    fault.count -= 1
                    return fault.kind
            for kind, share in (
                ("429", self.settings.share_429),
                ("500", self.settings.share_500),
                ("timeout", self.settings.share_timeout),
            ):
                if share and self._random.random() < share:
                    return kind
        return None

    def _record(self, req: Request, response: Response | None, fault: str | None) -> None:
        with self.lock:
            self.log.append(
                {
                    "time": req.received,  # arrival, as a vendor's rate limit counts
                    "answered": time.time(),
                    "method": req.method,
                    "path": req.path,
                    "status": response.status if response else None,
                    "fault": fault,
                    "bytes": req.body_size,
                    "key": _digest_key(self.rate_key(req)),
                    **req.note,
                }
            )
            del self.log[:-_LOG_LIMIT]

    # --- jobs -------------------------------------------------------------------------------------

    def start_job(self, job: Job) -> None:
        with self.lock:
            for fault in self.faults:
                if fault.kind in ("job_failed", "job_stuck") and fault.count > 0:
                    fault.count -= 1
                    job.forced = fault.kind.removeprefix("job_")
                    break
            else:
                if self.settings.share_job_failed and self._random.random() < self.settings.share_job_failed:
                    job.forced = "failed"
                elif self.settings.share_job_stuck and self._random.random() < self.settings.share_job_stuck:
                    job.forced = "stuck"
            self.jobs[job.id] = job
        thread = threading.Thread(target=self._run_job, args=(job,), name=f"sandbox-job-{job.id}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run_job(self, job: Job) -> None:
        duration = self.settings.job_seconds
        try:
            if self.stopping.wait(duration * 0.2):
                return
            job.status = "running"
            self.check_job(job)
            if self.stopping.wait(max(0.0, job.created + duration - time.time())):
                return
            if job.forced == "stuck":
                return
            with self.lock:
                if job.forced == "failed" and not job.reason:
                    job.reason = "injected job failure"
                if job.reason:
                    job.status = "failed"
                else:
                    self.apply_job(job)
                    job.status = "done"
                job.ended = time.time()
        except Exception as exc:  # an emulator bug must show in the job, not kill the thread silently
            job.status, job.reason, job.ended = "failed", f"sandbox error: {exc!r}", time.time()
        finally:
            if job.body_path is not None and job.forced != "stuck":
                job.body_path.unlink(missing_ok=True)

    # --- admin --------------------------------------------------------------------------------

    def admin(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")[1:]
        head = parts[0] if parts else ""
        if head == "health":
            return Response.json(200, {"ok": True, "kind": self.kind})
        if head == "settings":
            if req.method == "POST":
                with self.lock:
                    self.settings.update(req.json() or {})
                    if "seed" in (req.json() or {}):
                        self._random = random.Random(self.settings.seed)  # noqa: S311 - fault injection, not secrets
            return Response.json(200, asdict(self.settings))
        if head == "faults":
            with self.lock:
                if req.method == "DELETE":
                    self.faults.clear()
                elif req.method == "POST":
                    spec = req.json() or {}
                    if spec.get("kind") not in FAULT_KINDS:
                        raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
                    self.faults.append(
                        Fault(str(spec["kind"]), int(spec.get("count", 1)), spec.get("path"), spec.get("method"))
                    )
                return Response.json(200, [asdict(f) for f in self.faults if f.count > 0])
        if head == "requests":
            with self.lock:
                if req.method == "DELETE":
                    self.log.clear()
                return Response.json(200, list(self.log))
        if head == "jobs":
            with self.lock:
                if len(parts) > 1:
                    job = self.jobs.get(parts[1])
                    return Response.json(200, job.public()) if job else Response.json(404, {"message": "no such job"})
                return Response.json(200, [j.public() for j in self.jobs.values()])
        if head == "tables" and len(parts) > 1:
            if req.method == "PUT":
                with self.lock:
                    self.define_table(parts[1], req.json() or {})
                return Response.json(200, {"ok": True})
            return self.table_contents(parts[1], req)
        if head == "reset" and req.method == "POST":
            with self.lock:
                self.faults.clear()
                self.log.clear()
                self.jobs.clear()
                self._buckets.clear()
                self.reset_tables()
            return Response.json(200, {"ok": True})
        return Response.json(404, {"message": f"no sandbox admin route {req.path}"})

    def close(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._tmp.cleanup()


def _handler_for(app: SandboxApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"tablebot-sandbox-{app.kind}"

        def log_message(self, format: str, *args: Any) -> None:
            return  # the request log is served at /_sandbox/requests

        def _serve(self) -> None:
            received = time.time()
            url = urlsplit(self.path)
            limit = app.max_body_bytes(self.command, url.path)
            body_path, size, too_large = self._read_body(limit)
            req = Request(
                method=self.command,
                path=url.path,
                query=parse_qs(url.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                client=self.client_address[0],
                body_path=body_path,
                body_size=size,
                body_too_large=too_large,
                received=received,
            )
            try:
                response = app.handle(req)
            finally:
                if body_path is not None and not req.keep_body:
                    body_path.unlink(missing_ok=True)
            if response is None:
                self.close_connection = True
                return
            try:
                self.send_response(response.status)
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _read_body(self, limit: int) -> tuple[Path | None, int, bool]:
            """Stream the body (Content-Length or chunked) into a temp file; past `limit`, drain it."""
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            length = int(self.headers.get("Content-Length") or 0)
            if not chunked and length == 0:
                return None, 0, False
            fd, name = tempfile.mkstemp(dir=app.state_dir / "incoming")
            path = Path(name)
            size, too_large = 0, False
            with os.fdopen(fd, "wb") as out:
                for piece in self._chunked() if chunked else self._sized(length):
                    size += len(piece)
                    if size > limit:
                        too_large = True
                    if not too_large:
                        out.write(piece)
            if too_large:
                path.unlink(missing_ok=True)
                return None, size, True
            return path, size, False

        def _sized(self, length: int) -> Any:
            remaining = length
            while remaining > 0:
                piece = self.rfile.read(min(CHUNK, remaining))
                if not piece:
                    raise ConnectionError("client closed the connection mid-body")
                remaining -= len(piece)
                yield piece

        def _chunked(self) -> Any:
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield from self._sized(size)
                self.rfile.readline(16)

        def _safe_serve(self) -> None:
            try:
                self._serve()
            except (ConnectionError, ValueError, OSError):
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _safe_serve

    return Handler


class SandboxServer:
    """Serves one emulator on 127.0.0.1; `start()` runs it in a thread and returns its base URL."""

    def __init__(self, app: SandboxApp, port: int = 0, host: str = "127.0.0.1") -> None:
        self.app = app
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(app))
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self._thread: threading.Thread | None = None

    @property
    def root_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        """The URL to put as the target's base_url (D·engage's API lives under /rest)."""
        return self.root_url + self.app.api_prefix

    def start(self) -> str:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.app.kind}",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.app.stopping.set()
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
        self.httpd.server_close()
        self.app.close()


def _digest_key(key: str | None) -> str | None:
    """The rate key as the log shows it: a token never appears, only a short digest of it."""
    if key is None or not key.startswith("token:"):
        return key
    return "token:" + hashlib.sha256(key.encode()).hexdigest()[:12]


_BEARER = re.compile(r"^Bearer\s+(\S+)\s*$")


def bearer(req: Request) -> str | None:
    match = _BEARER.match(req.header("Authorization"))
    return match.group(1) if match else None
