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

Settings (extra keys under `[targets.X]`); the unknowns of docs/upstream-apis.md are marked * with their
documented defaults:
- * `status_path` = "/dataspace/async/upsert/{job_id}" (GetStatus, relative to base_url, which ends
  in /rest). Chosen because D·engage's sibling async endpoints read their status at the POST path
  plus `/{jobId}` (`/dataspace/async/upsert_v2/{jobId}`, `/bulk/async/contacts/{jobId}`); the
  first reading, `/dataspace/async/{job_id}`, is one setting away.
- * `done_statuses`, `failed_statuses`, `running_statuses`: words added to the status families
  (`bot.targets.statuses`: Completed/Success/Done, Failed/Error/Cancelled/PartiallyCompleted,
  Waiting/Running/Pending/Processing/Queued, ... in any case). `errorCount > 0` is a failure.
- * `status_grace_seconds` = 300 (a 404, 5xx, `code != 0` or HTML status read is tolerated this long)
- `unknown_status_reads` = 3 (reads of an unknown status word before the user is told)
- `list_page_size` = 1000 (tables listed per request while finding `table_name`; 10..1000)
- * `constant_field` = "value" (columnMapping field holding a constant, for `constants` of a table)
- * `overwrite_field` = "overwriteWithEmpty" (the boolean; its value from `overwrite_with_empty`, default false)
- `part_spacing_seconds` = 60 (one call a minute per table)
- `max_request_bytes` = 50_000_000: "50mb" read as 50 * 10**6 bytes, the smaller of the two readings
  (50 MiB = 52,428,800), so a part fits whichever the vendor means
- `requests_per_second` = 30 (the reported per-address limit)
- `token_refresh_seconds` = 60, `max_attempts` = 5, `backoff_seconds` = 0.5, `max_backoff_seconds` = 30

Per table (`[tables.X]`): `constants = {column = "value"}` assigns a constant to a table column.

Reading answers, in one place (the `_payload`/`_inner`/`_table_page`/`_job_id` helpers): the common
envelope `{"code", "message", "data"}` is checked for `code != 0` even on HTTP 200; the table list
comes under `data.result` (with `data.totalRowCount`), `data.items`, or as a bare list, and is paged
by `totalRowCount` (a short page alone never ends the listing); the job id as `jobId` or
`transactionId`, top level or inside `data`, or `data` as a bare string; a failed job's text from
`error`, `message`, `reason`, `errorList`, `errors`.

Refusals by cause: `403` with `actionResult` is the IP allow-list (checked before the credentials,
so a 403 on login is never "wrong password"); `429` on an upsert waits for `Retry-After`, or
without one for the table's next minute, and is reported as rate limited.
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
    Limiter,
    RetryPolicy,
    Sender,
    Sleep,
    Spacer,
    UpstreamJob,
    UpstreamStatus,
    address_not_allowed,
    first_line,
    forbidden_reason,
    truncate,
)
from bot.targets.statuses import (
    DEFAULT_STATUS_GRACE_SECONDS,
    DEFAULT_UNKNOWN_STATUS_READS,
    StatusWords,
    failure_text,
)

DEFAULT_MAX_REQUEST_BYTES = 50_000_000
DEFAULT_REQUESTS_PER_SECOND = 30.0
DEFAULT_PART_SPACING_SECONDS = 60.0
UPSERT_PATH = "/dataspace/async/upsert"
# Room kept in every request for the JSON around fileContent (table, mapping, job name).
_JOB_NAME_LIMIT = 200


@dataclass(frozen=True)
class DengageSettings:
    status_path: str = "/dataspace/async/upsert/{job_id}"
    status_words: StatusWords = field(default_factory=lambda: StatusWords.from_options({}))
    status_grace_seconds: float = DEFAULT_STATUS_GRACE_SECONDS
    unknown_status_reads: int = DEFAULT_UNKNOWN_STATUS_READS
    list_page_size: int = 1000
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
        return cls(
            status_path=str(options.get("status_path", d.status_path)),
            status_words=StatusWords.from_options(options),
            status_grace_seconds=float(options.get("status_grace_seconds", d.status_grace_seconds)),
            unknown_status_reads=int(options.get("unknown_status_reads", d.unknown_status_reads)),
            list_page_size=min(1000, max(10, int(options.get("list_page_size", d.list_page_size)))),
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
    label = "D·engage"
    # Rows are upserted on the primary key, or appended to a table without one.
    replaces_table = False

    def __init__(
        self,
        target: TargetConfig,
        http: httpx.Client,
        *,
        userkey: str,
        password: str,
        limiter: Limiter,
        spacer: Spacer,
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
        self.status_grace_seconds = self.settings.status_grace_seconds
        self.unknown_status_reads = self.settings.unknown_status_reads

    # --- what the use cases ask of every target (bot.targets.base.TargetClient) ------------------

    @property
    def part_spacing_seconds(self) -> float:
        return self.settings.part_spacing_seconds

    def parts(self, table: TableConfig, path: Path) -> Sequence[ByteSource]:
        return self.plan(table, path).sources()

    def resend_is_safe(self, table: TableConfig) -> bool:
        """Upserting the same rows on a primary key is idempotent; appending them is not."""
        schema = table.configured_schema()
        return schema is not None and bool(schema.primary_key)

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
        if response.status_code == 403:
            reason = forbidden_reason(response)
            if reason is not None:
                raise address_not_allowed("D·engage", "the login", reason)
            raise UpstreamError(
                "auth",
                "D·engage refused the login (403 Forbidden, no reason given). D·engage answers 403 before "
                "looking at the credentials when the caller's address is not on the account's IP allow-list: "
                f"check that first, then {self.target.userkey_env} and {self.target.password_env}",
                status_code=403,
            )
        if response.status_code in (400, 401):
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
        before_attempt: Callable[[], object] | None = None,
        rate_limit_wait: Callable[[], float] | None = None,
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
                before_attempt=before_attempt,
                rate_limit_wait=rate_limit_wait,
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
            reason = forbidden_reason(response)
            if reason is not None:
                return address_not_allowed("D·engage", what, reason)
            return UpstreamError(
                "auth",
                f"D·engage forbids {what} (403): {message or extra or 'no reason given'}",
                status_code=code,
            )
        return UpstreamError(
            "rejected", f"D·engage refused {what} ({code}): {message or extra or 'no details'}", status_code=code
        )

    # --- the steps of `tablebot check` ----------------------------------------------------------

    def login(self) -> str:
        """Log in now (a fresh token); what it proved."""
        self._access_token(renew=True)
        left = max(0.0, self._token_expires - self._clock()) + self.settings.token_refresh_seconds
        return (
            f"logged in with {self.target.userkey_env} / {self.target.password_env} "
            f"(token valid about {left / 60:.0f} min)"
        )

    def locate(self, table: TableConfig) -> str:
        """Find the upstream table; what was found."""
        if table.table_id:
            return f"table_id {table.table_id} is given (read in the next step)"
        public_id = self._find_table_id(table)
        return f"table {table.table_name!r} found (publicId {public_id})"

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
        """Page through the table list by `totalRowCount` (the server may send fewer rows than
        asked; a short page alone never ends it) until the table is found or the list ends."""
        what = f"listing tables to find {table.table_name}"
        limit, offset, pages = self.settings.list_page_size, 0, 0
        seen_first: set[str] = set()
        while True:
            response = self._call("GET", "/dataspace/tables", what=what, params={"limit": limit, "offset": offset})
            if response.status_code != 200:
                raise self._refusal(response, what)
            items, total = _table_page(_data(response, what))
            pages += 1
            for item in items:
                if isinstance(item, dict) and item.get("tableName") == table.table_name and item.get("publicId"):
                    return str(item["publicId"])
            first = json.dumps(items[0], sort_keys=True, default=str) if items else ""
            offset += len(items)
            ended = not items or (total is not None and offset >= total) or first in seen_first
            # A server that ignores `offset` would page forever: the same first row again ends it.
            seen_first.add(first)
            if ended or pages >= 100_000:
                listed = f"{offset:,} tables listed" + (f" of {total:,}" if total is not None else "")
                raise UpstreamError(
                    "rejected",
                    f"D·engage has no data table named {table.table_name!r} ({listed}); "
                    "check `table_name` in the tables file (names are case-sensitive) or use `table_id`",
                )

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

        key = self.table_key(table)

        def table_next_minute() -> float:
            # Another process may have made the call that filled this minute: wait a whole spacing.
            return self.settings.part_spacing_seconds

        response = self._call(
            "POST",
            UPSERT_PATH,
            what=what,
            resend_after_sent=False,
            body=json_body,
            headers={"Content-Type": "application/json", "Content-Length": str(size)},
            # Every attempt books the table's minute; a 429 without Retry-After waits for the next.
            before_attempt=lambda: self.spacer.wait(key),
            rate_limit_wait=table_next_minute,
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
        """One read of the job. A 404, a 5xx, `code != 0` or an answer that is not JSON raises
        `status_unreadable` (the caller tolerates it for `status_grace_seconds`)."""
        job_id = job if isinstance(job, str) else job.job_id
        what = f"reading upsert job {job_id}"
        try:
            response = self._call("GET", self.settings.status_path.format(job_id=job_id), what=what)
        except UpstreamError as exc:
            if exc.kind == "server":
                raise UpstreamError("status_unreadable", exc.message, status_code=exc.status_code) from None
            raise
        if response.status_code == 403:
            raise self._refusal(response, what)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200 or not isinstance(payload, dict):
            message, extra = _envelope_message(response)
            seen = message or extra or "no details"
            kind = response.headers.get("Content-Type", "").split(";")[0]
            if not isinstance(payload, dict | list | str) and kind:
                seen = f"{kind}: {seen}"
            hint = ""
            if response.status_code == 404:
                # The status endpoint is not documented: a wrong path looks like a job not found yet.
                hint = (
                    f" (if every status read answers 404, the status path may differ: `status_path` under "
                    f"[targets.{self.target.name}] is {self.settings.status_path})"
                )
            raise UpstreamError(
                "status_unreadable",
                f"D·engage answered {response.status_code} while {what}: {seen}{hint}",
                status_code=response.status_code,
            )
        code = payload.get("code")
        if code not in (None, 0, "0"):
            message = truncate(str(payload.get("message") or payload.get("actionResult") or "no message"))
            raise UpstreamError(
                "status_unreadable", f"D·engage answered code {code} while {what}: {message}", status_code=200
            )
        data = _inner(payload)
        raw = str(data.get("status") or "").strip()
        error_count = _int(data.get("errorCount"))
        family = self.settings.status_words.family(raw)
        if family == "failed" or (family == "done" and error_count):
            # Completed with row errors (or partially): those rows were not applied; the user must know.
            lead = "D·engage completed the job" if family == "done" else f"D·engage reported the job {raw}"
            return UpstreamStatus("failed", _error_reason(error_count, data, lead), raw, error_count=error_count)
        if family == "done":
            return UpstreamStatus("done", None, raw)
        if family == "running":
            return UpstreamStatus("running", None, raw, error_count=error_count)
        return UpstreamStatus(
            "running",
            f"D·engage answers status {truncate(raw, 60)!r}, which the bot does not know",
            raw,
            known=False,
            error_count=error_count,
        )


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
    if isinstance(payload, str | list):  # a bare job uuid, a bare table list
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


def _table_page(data: Any) -> tuple[list[Any], int | None]:
    """The rows of one page of the table list and the total, from `data.result` (+ `totalRowCount`),
    `data.items`, or a bare list (the total then unknown)."""
    if isinstance(data, list):
        return data, None
    if not isinstance(data, dict):
        return [], None
    items: list[Any] = next(
        (data[k] for k in ("result", "items", "tables", "data") if isinstance(data.get(k), list)), []
    )
    total = data.get("totalRowCount", data.get("totalCount", data.get("total")))
    return items, (_int(total) if total is not None else None)


def _job_id(payload: Mapping[str, Any]) -> str | None:
    """The started job's id: `data` as a bare string, or `jobId` / `transactionId` (and their
    spellings) inside `data` or at the top level."""
    data = payload.get("data")
    if isinstance(data, str) and data.strip():
        return data.strip()
    for holder in (data, payload):
        if isinstance(holder, dict):
            for key in ("jobId", "jobID", "job_id", "transactionId", "transactionID", "id", "uuid"):
                value = holder.get(key)
                if isinstance(value, str | int) and str(value).strip():
                    return str(value).strip()
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


def _error_reason(count: int, data: Mapping[str, Any], lead: str) -> str:
    """The failure as the user reads it: the lead, the number of row errors, the job's own text."""
    if count:
        lead += f" with {count} row error{'s' if count != 1 else ''}"
    own = failure_text(data)
    return truncate(f"{lead}: {own}" if own else lead, 1000)
