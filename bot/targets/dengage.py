"""D·engage data tables: UpsertData-Async, its job status, the table schema.

Login (`POST /login`) gives a bearer token, cached until `token_refresh_seconds` before it
expires; a `401` triggers one re-login and one resend (a 401 means nothing was applied). The
upload is `POST /dataspace/async/upsert` with a JSON body whose `fileContent` is the base64 of
the whole CSV part: the body is generated in chunks (prefix, base64 of 3-byte-aligned chunks,
suffix) with an exact Content-Length, so memory does not hold the part. HTTP 200 can carry a
failure: the envelope's `code` (0 = success) is always checked.

Resending: tables without a primary key are appended to, so an upload is NEVER resent after a
`5xx`, a read timeout or a dropped connection (the error says it may have started). It is resent
only when the vendor provably did not apply it: connection refused, `429`, `401`.

Parts: a request may not exceed `max_request_bytes`; `plan_parts` cuts the normalized file at row
boundaries into parts, each a complete CSV (header + rows) whose request fits. Parts of one table
go at least `part_spacing_seconds` apart (the API allows one call a minute per table), each after
the previous part's job is done (the caller waits; `TableSpacer` enforces the spacing).

Settings (extra keys under `[targets.X]`); the unknowns of api-facts.md are marked * with their
documented defaults:
- * `status_path` = "/dataspace/async/{job_id}" (GetStatus, relative to base_url, which ends in /rest)
- * `running_statuses` = ["Waiting", "Running"], `done_statuses` = ["Completed"], `failed_statuses` = ["Failed"]
- * `constant_field` = "value" (columnMapping field holding a constant, for `constants` of a table)
- * `overwrite_field` = "overwriteWithEmpty" (the boolean; its value from `overwrite_with_empty`, default false)
- `part_spacing_seconds` = 60 (one call a minute per table)
- `max_request_bytes` = 50_000_000: "50mb" read as 50 * 10**6 bytes, the smaller of the two readings
  (50 MiB = 52,428,800), so a part fits whichever the vendor means
- `requests_per_second` = 30 (the reported per-address limit)
- `token_refresh_seconds` = 60, `max_attempts` = 5, `backoff_seconds` = 0.5, `max_backoff_seconds` = 30

Per table (`[tables.X]`): `constants = {column = "value"}` assigns a constant to a table column.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bot.config import TableConfig, TargetConfig
from bot.errors import UpstreamError
from bot.schema import Column, ColumnType, TableSchema
from bot.targets.base import (
    ByteSource,
    Clock,
    FileSource,
    RateLimiter,
    RetryPolicy,
    Sender,
    Sleep,
    TableSpacer,
    UpstreamJob,
    UpstreamStatus,
    first_line,
    truncate,
)

DEFAULT_MAX_REQUEST_BYTES = 50_000_000
DEFAULT_REQUESTS_PER_SECOND = 30.0
DEFAULT_PART_SPACING_SECONDS = 60.0
UPSERT_PATH = "/dataspace/async/upsert"
# Room kept in every request for the JSON around fileContent (table, mapping, job name).
_JOB_NAME_LIMIT = 200


@dataclass(frozen=True)
class DengageSettings:
    status_path: str = "/dataspace/async/{job_id}"
    running_statuses: tuple[str, ...] = ("Waiting", "Running")
    done_statuses: tuple[str, ...] = ("Completed",)
    failed_statuses: tuple[str, ...] = ("Failed",)
    constant_field: str = "value"
    overwrite_field: str = "overwriteWithEmpty"
    overwrite_with_empty: bool = False
    part_spacing_seconds: float = DEFAULT_PART_SPACING_SECONDS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    token_refresh_seconds: float = 60.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DengageSettings:
        d = cls()

        def words(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = options.get(key)
            return default if value is None else tuple(str(v) for v in value)

        return cls(
            status_path=str(options.get("status_path", d.status_path)),
            running_statuses=words("running_statuses", d.running_statuses),
            done_statuses=words("done_statuses", d.done_statuses),
            failed_statuses=words("failed_statuses", d.failed_statuses),
            constant_field=str(options.get("constant_field", d.constant_field)),
            overwrite_field=str(options.get("overwrite_field", d.overwrite_field)),
            overwrite_with_empty=bool(options.get("overwrite_with_empty", d.overwrite_with_empty)),
            part_spacing_seconds=float(options.get("part_spacing_seconds", d.part_spacing_seconds)),
            max_request_bytes=int(options.get("max_request_bytes", d.max_request_bytes)),
            requests_per_second=float(options.get("requests_per_second", d.requests_per_second)),
            token_refresh_seconds=float(options.get("token_refresh_seconds", d.token_refresh_seconds)),
        )


@dataclass(frozen=True)
class PartRange:
    """Rows [start, end) of the file (byte offsets), sent after the header line."""

    start: int
    end: int
    rows: int


@dataclass(frozen=True)
class PartPlan:
    path: Path
    header: bytes  # the header line with its LF
    ranges: tuple[PartRange, ...] = field(default_factory=tuple)

    def sources(self) -> list[FileSource]:
        if len(self.ranges) == 1 and self.ranges[0].start == len(self.header):
            return [FileSource(self.path, 0, self.ranges[0].end)]
        return [FileSource(self.path, r.start, r.end, prefix=self.header) for r in self.ranges]


def plan_parts(path: Path, max_part_bytes: int) -> PartPlan:
    """Cut a normalized CSV (LF line ends) at row boundaries into parts of at most `max_part_bytes`,
    each counted with the header it is sent with. Reads the file once, line by line.

    A quoted value may hold a line break, so a row ends at an LF only outside quotes: an odd
    number of `"` on a line flips the inside-quotes state (an escaped quote is `""`, even).
    """
    ranges: list[PartRange] = []
    with path.open("rb") as fh:
        header = fh.readline()
        quoted = header.count(b'"') % 2 == 1
        while quoted:  # a header with a line break inside quotes
            more = fh.readline()
            if not more:
                break
            header += more
            quoted ^= more.count(b'"') % 2 == 1
        budget = max_part_bytes - len(header)
        part_start = row_start = fh.tell()
        pos, rows, line_no = part_start, 0, 1
        for line in fh:
            line_no += 1
            pos += len(line)
            if line.count(b'"') % 2 == 1:
                quoted = not quoted
            if quoted:
                continue
            if pos - row_start > budget:
                raise UpstreamError(
                    "rejected",
                    f"the row ending on line {line_no} is {pos - row_start:,} bytes: larger than one D·engage "
                    f"request allows ({budget:,} bytes of CSV after the header)",
                )
            if pos - part_start > budget:
                ranges.append(PartRange(part_start, row_start, rows))
                part_start, rows = row_start, 0
            rows += 1
            row_start = pos
        if pos > row_start:  # a last row without its final newline
            rows += 1
        if rows or not ranges:
            ranges.append(PartRange(part_start, pos, rows))
    return PartPlan(path=path, header=header, ranges=tuple(ranges))


def base64_size(n: int) -> int:
    return 4 * ((n + 2) // 3)


class DengageClient:
    kind = "dengage"

    def __init__(
        self,
        target: TargetConfig,
        http: httpx.Client,
        *,
        userkey: str,
        password: str,
        limiter: RateLimiter,
        spacer: TableSpacer,
        settings: DengageSettings | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.target = target
        self.settings = settings or DengageSettings.from_options(target.options)
        self.spacer = spacer
        self._userkey = userkey
        self._password = password
        self._clock = clock
        self._sender = Sender(http, limiter, retry or RetryPolicy.from_options(target.options), sleep, "D·engage")
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    # --- authentication -------------------------------------------------------------------------

    def _access_token(self, *, renew: bool = False) -> str:
        with self._token_lock:
            if renew or self._token is None or self._clock() >= self._token_expires:
                self._login()
            assert self._token is not None
            return self._token

    def _login(self) -> None:
        what = "logging in"
        response = self._sender.send(
            "POST",
            self.target.base_url + "/login",
            what=what,
            json={"userkey": self._userkey, "password": self._password},
        )
        if response.status_code in (400, 401, 403):
            raise UpstreamError(
                "auth",
                f"D·engage refused the login ({response.status_code}): check {self.target.userkey_env} "
                f"and {self.target.password_env}",
                status_code=response.status_code,
            )
        payload = _payload(response, what)
        data = _inner(payload)
        token = data.get("access_token") or data.get("accessToken")
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise UpstreamError(
                "auth",
                f"D·engage login gave no access token ({response.status_code})",
                status_code=response.status_code,
            )
        expires_in = float(data.get("expires_in") or data.get("expiresIn") or 3600)
        self._token = token
        self._token_expires = self._clock() + max(0.0, expires_in - self.settings.token_refresh_seconds)

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        resend_after_sent: bool = True,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Iterable[bytes]] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> httpx.Response:
        """A call with the bearer token; on 401 (nothing applied), one re-login and one resend."""
        for renew in (False, True):
            token = self._access_token(renew=renew)
            response = self._sender.send(
                method,
                self.target.base_url + path,
                what=what,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})},
                body=body,
                params=params,
                resend_after_sent=resend_after_sent,
            )
            if response.status_code != 401:
                return response
        raise UpstreamError(
            "auth", f"D·engage answered 401 Not-authenticated while {what}, even after a new login", status_code=401
        )

    def _refusal(self, response: httpx.Response, what: str) -> UpstreamError:
        code = response.status_code
        message, extra = _envelope_message(response)
        if code == 403:
            return UpstreamError(
                "auth",
                f"D·engage forbids {what} (403): {message or extra or 'no reason given'}"
                " (is this machine's address allow-listed?)",
                status_code=code,
            )
        return UpstreamError(
            "rejected", f"D·engage refused {what} ({code}): {message or extra or 'no details'}", status_code=code
        )

    # --- schema ----------------------------------------------------------------------------------

    def fetch_schema(self, table: TableConfig) -> TableSchema:
        public_id = table.table_id or self._find_table_id(table)
        what = f"reading table {table.table_name or public_id}"
        response = self._call("GET", f"/dataspace/tables/{public_id}", what=what)
        if response.status_code != 200:
            raise self._refusal(response, what)
        data = _data(response, what)
        raw_columns = data.get("columns") if isinstance(data, dict) else None
        if not isinstance(raw_columns, list):
            raise UpstreamError("server", f"D·engage's table {public_id} has no columns list")
        columns = []
        for raw in raw_columns:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                continue
            try:
                col_type = ColumnType(str(raw.get("type", "TEXT")).upper())
            except ValueError:
                col_type = ColumnType.TEXT
            primary = bool(raw.get("isPrimary", False))
            columns.append(
                Column(
                    name=raw["name"], type=col_type, primary=primary, nullable=bool(raw.get("isNullable", not primary))
                )
            )
        name = data.get("tableName") if isinstance(data.get("tableName"), str) else table.table_name
        return TableSchema(
            kind="dengage", columns=tuple(columns), table_name=name, column_mapping=dict(table.column_mapping)
        )

    def _find_table_id(self, table: TableConfig) -> str:
        what = f"listing tables to find {table.table_name}"
        limit, offset = 1000, 0
        while True:
            response = self._call("GET", "/dataspace/tables", what=what, params={"limit": limit, "offset": offset})
            if response.status_code != 200:
                raise self._refusal(response, what)
            data = _data(response, what)
            items = (
                data
                if isinstance(data, list)
                else next(
                    (
                        data[k]
                        for k in ("items", "tables", "data")
                        if isinstance(data, dict) and isinstance(data.get(k), list)
                    ),
                    [],
                )
            )
            for item in items:
                if isinstance(item, dict) and item.get("tableName") == table.table_name and item.get("publicId"):
                    return str(item["publicId"])
            if len(items) < limit:
                raise UpstreamError("rejected", f"D·engage has no data table named {table.table_name!r}")
            offset += limit

    # --- upload ----------------------------------------------------------------------------------

    def max_part_bytes(self, table: TableConfig, header: Sequence[str]) -> int:
        """The most CSV bytes (header included) one request for this table can carry."""
        prefix, suffix = self._envelope(table, header, "x" * _JOB_NAME_LIMIT)
        room = self.settings.max_request_bytes - len(prefix) - len(suffix)
        return (room // 4) * 3

    def plan(self, table: TableConfig, path: Path) -> PartPlan:
        header = parse_header(first_line(FileSource(path)))
        return plan_parts(path, self.max_part_bytes(table, header))

    def column_mapping(self, table: TableConfig, header: Sequence[str]) -> list[dict[str, Any]]:
        by_header = {file_header: column for column, file_header in table.column_mapping.items()}
        mapping: list[dict[str, Any]] = [{"tableColumn": by_header.get(h, h), "fileColumnHeader": h} for h in header]
        constants = table.extra.get("constants", {})
        if isinstance(constants, Mapping):
            for column, value in constants.items():
                mapping.append({"tableColumn": str(column), self.settings.constant_field: value})
        return mapping

    def _envelope(self, table: TableConfig, header: Sequence[str], job_name: str) -> tuple[bytes, bytes]:
        meta: dict[str, Any] = {"tableId": table.table_id} if table.table_id else {"tableName": table.table_name}
        meta["jobName"] = job_name[:_JOB_NAME_LIMIT]
        meta["columnMapping"] = self.column_mapping(table, header)
        meta[self.settings.overwrite_field] = self.settings.overwrite_with_empty
        head = json.dumps(meta, ensure_ascii=False)
        return (head[:-1] + ', "fileContent": "').encode(), b'"}'

    def table_key(self, table: TableConfig) -> str:
        return f"{self.target.base_url}|{table.table_id or table.table_name}"

    def start_upload(self, table: TableConfig, body: ByteSource, *, part: int = 1, parts: int = 1) -> UpstreamJob:
        if not (table.table_id or table.table_name):
            raise UpstreamError("rejected", f"table {table.alias} names no table_name or table_id")
        header = parse_header(first_line(body))
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        job_name = f"tablebot {table.alias} part {part}/{parts} {stamp}"
        prefix, suffix = self._envelope(table, header, job_name)
        size = len(prefix) + base64_size(body.size) + len(suffix)
        if size > self.settings.max_request_bytes:
            raise UpstreamError(
                "rejected",
                f"the request would be {size:,} bytes; D·engage accepts at most {self.settings.max_request_bytes:,}: "
                "the file must be sent in parts (plan_parts)",
            )
        what = (
            f"uploading part {part}/{parts} of table {table.alias}" if parts > 1 else f"uploading table {table.alias}"
        )

        def json_body() -> Iterator[bytes]:
            return _json_chunks(prefix, body, suffix)

        self.spacer.wait(self.table_key(table))
        response = self._call(
            "POST",
            UPSERT_PATH,
            what=what,
            resend_after_sent=False,
            body=json_body,
            headers={"Content-Type": "application/json", "Content-Length": str(size)},
        )
        if response.status_code not in (200, 201, 202):
            raise self._refusal(response, what)
        payload = _payload(response, what)
        _check_code(payload, what, response.status_code)
        job_id = _job_id(payload)
        if not job_id:
            raise UpstreamError(
                "server",
                f"D·engage accepted {what} but named no job id; the rows may be applied: check the table",
                status_code=response.status_code,
                may_have_started=True,
            )
        return UpstreamJob(job_id=job_id, location=None, part=part, parts=parts)

    # --- status ----------------------------------------------------------------------------------

    def job_status(self, job: UpstreamJob | str) -> UpstreamStatus:
        job_id = job if isinstance(job, str) else job.job_id
        what = f"reading upsert job {job_id}"
        response = self._call("GET", self.settings.status_path.format(job_id=job_id), what=what)
        if response.status_code != 200:
            raise self._refusal(response, what)
        payload = _payload(response, what)
        _check_code(payload, what, response.status_code)
        data = _inner(payload)
        raw = str(data.get("status", ""))
        error_count = _int(data.get("errorCount"))
        errors = data.get("errorList") or []
        lowered = raw.lower()
        if lowered in {w.lower() for w in self.settings.failed_statuses}:
            return UpstreamStatus("failed", _error_reason(error_count, errors, "D·engage reported the job failed"), raw)
        if lowered in {w.lower() for w in self.settings.done_statuses}:
            if error_count:
                # Completed with row errors: those rows were not applied; the user must know.
                return UpstreamStatus("failed", _error_reason(error_count, errors, "D·engage completed the job"), raw)
            return UpstreamStatus("done", None, raw)
        if lowered in {w.lower() for w in self.settings.running_statuses}:
            return UpstreamStatus("running", None, raw)
        return UpstreamStatus("running", f"D·engage reported an unknown job status {truncate(raw, 40)!r}", raw)


def _json_chunks(prefix: bytes, body: ByteSource, suffix: bytes) -> Iterator[bytes]:
    yield prefix
    rest = b""
    for chunk in body.chunks():
        data = rest + chunk if rest else chunk
        cut = len(data) - len(data) % 3
        if cut:
            yield base64.b64encode(data[:cut])
        rest = data[cut:]
    if rest:
        yield base64.b64encode(rest)
    yield suffix


def parse_header(line: bytes) -> list[str]:
    """The CSV header's names; D·engage accepts `;` or `,` between them."""
    text = line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    delimiter = ";" if text.count(";") > text.count(",") else ","
    return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])


def _payload(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, str):  # a bare job uuid
        return {"data": payload}
    if not isinstance(payload, dict):
        raise UpstreamError(
            "server",
            f"D·engage answered {what} with something that is not JSON",
            status_code=response.status_code,
            may_have_started=response.is_success,
        )
    return payload


def _inner(payload: dict[str, Any]) -> dict[str, Any]:
    """The envelope's `data` object, or the payload itself when it has none."""
    data = payload.get("data")
    return data if isinstance(data, dict) else payload


def _data(response: httpx.Response, what: str) -> Any:
    payload = _payload(response, what)
    _check_code(payload, what, response.status_code)
    return payload.get("data", payload)


def _check_code(payload: Mapping[str, Any], what: str, status: int) -> None:
    code = payload.get("code")
    if code is None or code in (0, "0"):
        return
    message = truncate(str(payload.get("message") or payload.get("actionResult") or "no message"))
    raise UpstreamError("rejected", f"D·engage refused {what} (code {code}): {message}", status_code=status)


def _job_id(payload: Mapping[str, Any]) -> str | None:
    data = payload.get("data")
    if isinstance(data, str) and data:
        return data
    for holder in (data, payload):
        if isinstance(holder, dict):
            for key in ("jobId", "jobID", "id", "uuid", "transactionId"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value
    return None


def _envelope_message(response: httpx.Response) -> tuple[str, str]:
    try:
        payload = response.json()
    except ValueError:
        return "", truncate(response.text)
    if isinstance(payload, dict):
        message = payload.get("message") or payload.get("actionResult") or payload.get("error") or ""
        return truncate(str(message)), truncate(json.dumps(payload, ensure_ascii=False))
    return "", truncate(str(payload))


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _error_reason(count: int, errors: Any, lead: str) -> str:
    items = errors if isinstance(errors, list) else [errors]
    shown = "; ".join(
        truncate(json.dumps(e, ensure_ascii=False) if not isinstance(e, str) else e, 200) for e in items[:5]
    )
    if count:
        lead += f" with {count} row error{'s' if count != 1 else ''}"
    return truncate(f"{lead}: {shown}" if shown else lead, 1000)
