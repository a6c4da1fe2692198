"""D·engage emulator: login, UpsertData-Async, GetStatus, table schemas; served under /rest.

Built from docs/upstream-apis.md, independently of bot.validation. Where a fact is unknown the emulator
follows the documented default, each a setting (`SandboxSettings`): the status path and words,
the constant-value and overwrite field names, the upsert answer's envelope (`response_shape`).
- `POST /rest/login` {"userkey", "password"} (demo: "demo-userkey" / "demo-password") ->
  {"access_token", "expires_in": token_ttl_seconds}; an unknown or expired token gets 401
  "Not-authenticated. Please re-login.". 30 requests a second per caller address, else 429.
- Upsert, checked while answering (HTTP 400 with `code` != 0): request at most
  `max_request_bytes`, valid JSON whose `fileContent` is valid base64 (the body is scanned as a
  stream; fileContent is decoded to a file, never held in memory), `tableName`/`tableId` of a
  known table that is not `master_contact`, a `columnMapping` whose table columns exist, whose
  file headers are in the file's first line (`;` or `,`) and that covers every table column.
  One call a minute per table (`table_call_spacing_seconds`) and no call while the table's last
  job runs: else 429.
- The job (Waiting -> Running -> Completed|Failed over `job_seconds`) checks every row: its
  number of fields, primary keys and non-nullable columns present, values of INTEGER, DECIMAL,
  BOOLEAN, DATE, DATETIME (the twelve formats) well-formed. Any row error fails the job with
  errorCount/errorList and applies nothing (an assumption: the vendor's partial behaviour is
  unknown). Otherwise rows are upserted on the primary key (the last row of a key wins; empty
  values overwrite only with the overwrite flag) or appended when the table has none.
- Answer shapes (settings, the facts give several or none): the table list `tables_shape`
  (default `data.result` + `data.totalRowCount`, as public client code reads it; `data.items`; a
  bare list) and at most `tables_page_max` rows a page; the upsert's job id `response_shape`
  (`data.jobId` default, `data.transactionId`, top level, a bare string); the status words
  (`status_waiting`..., `status_case`, `row_errors_status` such as PartiallyCompleted with an
  errorCount) and `failure_text_field` (the job's own text besides errorList);
  `status_not_found_seconds` (a new job's status answers 404 for a while).
- Stored rows live in sqlite; `GET /_sandbox/tables/{tableName}` returns them (`limit`, default 1000).
  `POST /_sandbox/tokens/expire` expires every issued token (the next call gets 401).
"""

from __future__ import annotations

import binascii
import csv
import io
import json
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from devtools.sandbox.server import CHUNK, BadRequest, Job, Request, Response, SandboxApp, bearer

TYPES = ("TEXT", "INTEGER", "DECIMAL", "BOOLEAN", "DATE", "DATETIME", "EMAIL", "PHONE")
_DATETIME_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
)
_FRACTION = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})\.(\d{1,3})$")
_ZULU = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})Z$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_BOOLEAN = {"true", "false", "1", "0"}
_SKELETON_LIMIT = 1024 * 1024
_ERROR_LIST_LIMIT = 100
NOT_AUTHENTICATED = "Not-authenticated. Please re-login."


class DengageSandbox(SandboxApp):
    kind = "dengage"
    default_rps = 30.0
    api_prefix = "/rest"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.tables: dict[str, dict[str, Any]] = {}  # by tableName
        self.tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self.last_call: dict[str, float] = {}  # tableName -> time of the last accepted upsert
        self._db_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        super().__init__(*args, **kwargs)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.state_dir / "tables.sqlite", check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
        return self._db

    def demo_tables(self) -> Mapping[str, Any]:
        return {
            "demo_contacts": {
                "public_id": "5d7a6b3e-0000-4000-8000-000000000001",
                "columns": [
                    {"name": "contact_key", "type": "TEXT", "primary": True},
                    {"name": "email", "type": "EMAIL"},
                    {"name": "city", "type": "TEXT"},
                ],
            },
            "demo_events": {
                "public_id": "5d7a6b3e-0000-4000-8000-000000000002",
                "columns": [
                    {"name": "event", "type": "TEXT", "nullable": False},
                    {"name": "happened_at", "type": "DATETIME"},
                    {"name": "amount", "type": "DECIMAL"},
                ],
            },
        }

    def define_table(self, table_id: str, definition: Mapping[str, Any]) -> None:
        columns = []
        for raw in definition.get("columns", []):
            spec = {"name": raw} if isinstance(raw, str) else dict(raw)
            col_type = str(spec.get("type", "TEXT")).upper()
            if col_type not in TYPES or not isinstance(spec.get("name"), str):
                raise ValueError(f"table {table_id}: column {spec!r} needs a name and a type among {TYPES}")
            primary = bool(spec.get("primary", spec.get("isPrimary", False)))
            nullable = bool(spec.get("nullable", spec.get("isNullable", not primary)))
            columns.append({"name": spec["name"], "type": col_type, "isPrimary": primary, "isNullable": nullable})
        if not columns:
            raise ValueError(f"table {table_id}: no columns")
        public_id = str(definition.get("public_id") or uuid.uuid5(uuid.NAMESPACE_URL, table_id))
        sql_name = f"t_{uuid.uuid5(uuid.NAMESPACE_URL, table_id).hex}"
        names = [str(c["name"]) for c in columns]
        keys = [str(c["name"]) for c in columns if c["isPrimary"]]
        with self._db_lock:
            self.db.execute(f"DROP TABLE IF EXISTS {sql_name}")
            cols = ", ".join(f"{_ident(n)} TEXT" for n in names)
            unique = f", UNIQUE ({', '.join(_ident(k) for k in keys)})" if keys else ""
            self.db.execute(f"CREATE TABLE {sql_name} (_seq INTEGER PRIMARY KEY AUTOINCREMENT, {cols}{unique})")
            self.db.commit()
        self.tables[table_id] = {"tableName": table_id, "publicId": public_id, "columns": columns, "sql": sql_name}

    def reset_tables(self) -> None:
        with self._db_lock:
            for table in self.tables.values():
                self.db.execute(f"DELETE FROM {table['sql']}")  # noqa: S608 - generated name
            self.db.commit()
        self.tokens.clear()
        self.last_call.clear()

    def rate_key(self, req: Request) -> str | None:
        return f"address:{req.client}"

    def max_body_bytes(self, method: str, path: str) -> int:
        return self.settings.max_request_bytes if path.endswith("/upsert") else 1024 * 1024

    def too_large(self, req: Request) -> Response:
        limit = self.settings.max_request_bytes
        return Response.json(413, {"code": 413, "message": f"The maximum request size limit is {limit:,} bytes"})

    def admin(self, req: Request) -> Response:
        if req.path == "/_sandbox/tokens/expire" and req.method == "POST":
            with self.lock:
                self.tokens = dict.fromkeys(self.tokens, 0.0)
            return Response.json(200, {"ok": True})
        return super().admin(req)

    def close(self) -> None:
        super().close()
        if self._db is not None:
            self._db.close()

    # --- API ----------------------------------------------------------------------------------

    def route(self, req: Request) -> Response:
        if not req.path.startswith("/rest/"):
            return _fail(404, "Not Found")
        path = req.path[len("/rest") :]
        if path == "/login" and req.method == "POST":
            return self._login(req)
        token = bearer(req)
        with self.lock:
            expiry = self.tokens.get(token or "")
        if expiry is None or expiry < time.time():
            return _fail(401, NOT_AUTHENTICATED)
        if path == "/dataspace/async/upsert" and req.method == "POST":
            return self._upsert(req)
        if path == "/dataspace/tables" and req.method == "GET":
            return self._list_tables(req)
        if path.startswith("/dataspace/tables/") and req.method == "GET":
            public_id = path.rsplit("/", 1)[-1]
            table = next((t for t in self.tables.values() if t["publicId"] == public_id), None)
            if table is None:
                return _fail(404, f"table {public_id} not found")
            return _ok({k: table[k] for k in ("tableName", "publicId", "columns")})
        status_re = re.escape(self.settings.status_path).replace(re.escape("{job_id}"), "(?P<job>[^/]+)")
        match = re.fullmatch(status_re, path)
        if match and req.method == "GET":
            return self._status(match.group("job"))
        return _fail(404, "Not Found")

    def _login(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            return _fail(400, "the body must be JSON {userkey, password}")
        if not isinstance(body, dict):
            return _fail(400, "the body must be JSON {userkey, password}")
        userkey, password = body.get("userkey"), body.get("password")
        if not isinstance(userkey, str) or self.settings.users.get(userkey) != password:
            return _fail(401, "userkey or password is wrong")
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.time() + self.settings.token_ttl_seconds
        return Response.json(
            200, {"access_token": token, "token_type": "bearer", "expires_in": int(self.settings.token_ttl_seconds)}
        )

    def _list_tables(self, req: Request) -> Response:
        try:
            limit = int(req.arg("limit", "10") or 10)
            offset = int(req.arg("offset", "0") or 0)
        except ValueError:
            return _fail(400, "limit and offset must be numbers")
        if not 10 <= limit <= 1000:
            return _fail(400, "limit must be between 10 and 1000")
        listing = [{"tableName": t["tableName"], "publicId": t["publicId"]} for t in self.tables.values()]
        size = min(limit, self.settings.tables_page_max) if self.settings.tables_page_max > 0 else limit
        page = listing[offset : offset + size]
        shape = self.settings.tables_shape
        if shape == "bare_list":
            return _ok(page)
        if shape == "list":
            return Response.json(200, page)
        key = "items" if shape == "data_items" else "result"
        return _ok({key: page, "totalRowCount": len(listing)})

    def _status(self, job_id: str) -> Response:
        job = self.jobs.get(job_id)
        if job is None or self.status_not_found_yet(job):
            return _fail(404, f"job {job_id} not found")
        s = self.settings
        defaults = {
            "pending": s.status_waiting,
            "running": s.status_running,
            "done": s.status_done,
            "failed": s.status_failed,
        }
        family = job.status
        if job.status == "failed" and job.error_count and s.row_errors_status:
            defaults["partial"] = s.row_errors_status
            family = "partial"
        data: dict[str, Any] = {
            "jobId": job.id,
            "status": self.status_word(family, defaults[family]),
            "errorCount": job.error_count,
            "errorList": job.errors[:_ERROR_LIST_LIMIT] if job.status == "failed" else [],
        }
        if job.status == "failed" and s.failure_text_field and job.reason:
            data[s.failure_text_field] = job.reason
        return _ok(data)

    def _upsert(self, req: Request) -> Response:
        if req.body_path is None:
            return _fail(400, "the body must be a JSON object")
        content = self.state_dir / "incoming" / f"content-{uuid.uuid4().hex}.csv"
        try:
            with req.body_path.open("rb") as src, content.open("wb") as dst:
                meta = split_file_content(src, dst)
            # Every call on a table is logged with it, refused ones (429) too: the rule counts calls.
            req.note["table"] = str(meta.get("tableName") or meta.get("tableId") or "")
            job = self._accept(meta, content, arrived=req.received)
        except BadRequest as exc:
            content.unlink(missing_ok=True)
            return exc.response
        req.note["table"] = job.table
        shape = self.settings.response_shape
        if shape == "data_string":
            return _ok(job.id)
        if shape == "top_level":
            return Response.json(200, {"code": 0, "message": "Success", "jobId": job.id})
        if shape == "transaction_id":
            return _ok({"transactionId": job.id})
        if shape == "top_transaction_id":
            return Response.json(200, {"code": 0, "message": "Success", "transactionId": job.id})
        if shape == "bare_string":
            return Response.json(200, job.id)
        return _ok({"jobId": job.id})

    def _accept(self, meta: dict[str, Any], content: Path, *, arrived: float) -> Job:
        table = self._table_of(meta)
        name = table["tableName"]
        if name == "master_contact":
            raise BadRequest(_fail(400, "UpsertData cannot be used on master_contact"))
        header = _header(content)
        mapping = meta.get("columnMapping")
        if not isinstance(mapping, list) or not mapping:
            raise BadRequest(_fail(400, "columnMapping is required"))
        columns = {c["name"]: c for c in table["columns"]}
        sources: dict[str, tuple[str, Any]] = {}
        for entry in mapping:
            column = entry.get("tableColumn") if isinstance(entry, dict) else None
            if not isinstance(column, str) or column not in columns:
                raise BadRequest(_fail(400, f"columnMapping names {column!r}, which is not a column of {name}"))
            file_header = entry.get("fileColumnHeader")
            if file_header is not None:
                if file_header not in header:
                    raise BadRequest(_fail(400, f"fileColumnHeader {file_header!r} is not in the file's header"))
                sources[column] = ("file", header.index(file_header))
            elif self.settings.constant_field in entry:
                sources[column] = ("constant", entry[self.settings.constant_field])
            else:
                raise BadRequest(
                    _fail(
                        400,
                        f"columnMapping for {column!r} has neither fileColumnHeader nor {self.settings.constant_field}",
                    )
                )
        missing = [c for c in columns if c not in sources]
        if missing:
            raise BadRequest(_fail(400, f"Input data row has to include all the column values; missing {missing}"))
        with self.lock:
            now = time.time()
            busy = any(j.table == name and j.status in ("pending", "running") for j in self.jobs.values())
            last = self.last_call.get(name)
            # The spacing counts from arrival (a call is a call however long its body takes to read).
            if busy or (last is not None and arrived - last < self.settings.table_call_spacing_seconds):
                raise BadRequest(Response.json(429, {"code": 429, "message": "Too Many Requests"}))
            self.last_call[name] = arrived
            job = Job(
                id=str(uuid.uuid4()),
                table=name,
                created=now,
                body_path=content,
                info={
                    "jobName": meta.get("jobName"),
                    "overwrite": bool(meta.get(self.settings.overwrite_field, False)),
                    "sources": sources,
                    "header": header,
                },
            )
            self.start_job(job)
        return job

    def _table_of(self, meta: dict[str, Any]) -> dict[str, Any]:
        if meta.get("tableName"):
            table = self.tables.get(str(meta["tableName"]))
        elif meta.get("tableId"):
            table = next((t for t in self.tables.values() if t["publicId"] == meta["tableId"]), None)
        else:
            raise BadRequest(_fail(400, "tableId or tableName is required"))
        if table is None:
            raise BadRequest(_fail(400, "the table does not exist"))
        return table

    # --- jobs ---------------------------------------------------------------------------------

    def check_job(self, job: Job) -> None:
        table = self.tables[job.table]
        errors: list[dict[str, Any]] = []
        count = 0
        for line_no, row in self._rows(job):
            if "__fields__" in row:
                count += 1
                if len(errors) < _ERROR_LIST_LIMIT:
                    errors.append({"line": line_no, "error": row["__fields__"]})
                continue
            for column in table["columns"]:
                value = row[column["name"]]
                problem = _value_problem(column, value)
                if problem:
                    count += 1
                    if len(errors) < _ERROR_LIST_LIMIT:
                        errors.append({"line": line_no, "column": column["name"], "error": problem})
        job.error_count = count
        job.errors = errors
        if count:
            job.reason = f"{count} row error(s)"

    def _rows(self, job: Job) -> Iterator[tuple[int, dict[str, Any]]]:
        assert job.body_path is not None
        header: list[str] = job.info["header"]
        sources: dict[str, tuple[str, Any]] = job.info["sources"]
        with job.body_path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=_delimiter(fh.readline()))
            for values in reader:
                line_no = reader.line_num + 1
                if len(values) != len(header):
                    yield line_no, {"__fields__": f"{len(values)} fields, the header has {len(header)}"}
                    continue
                yield (
                    line_no,
                    {
                        col: (values[src] if kind == "file" else ("" if src is None else str(src)))
                        for col, (kind, src) in sources.items()
                    },
                )

    def apply_job(self, job: Job) -> None:
        table = self.tables[job.table]
        names = [c["name"] for c in table["columns"]]
        keys = [c["name"] for c in table["columns"] if c["isPrimary"]]
        cols = ", ".join(_ident(n) for n in names)
        # Table names are generated (t_<uuid hex>) and columns quoted by _ident: no injection.
        sql = f"INSERT INTO {table['sql']} ({cols}) VALUES ({', '.join('?' for _ in names)})"  # noqa: S608
        if keys:
            keep = (
                "excluded.{0}"
                if job.info["overwrite"]
                else "CASE WHEN excluded.{0} = '' THEN {0} ELSE excluded.{0} END"
            )
            updates = ", ".join(f"{_ident(n)} = " + keep.format(_ident(n)) for n in names if n not in keys)
            conflict = ", ".join(_ident(k) for k in keys)
            sql += f" ON CONFLICT ({conflict}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")
        with self._db_lock:
            batch: list[list[Any]] = []
            for _, row in self._rows(job):
                batch.append([row[n] for n in names])
                if len(batch) >= 5000:
                    self.db.executemany(sql, batch)
                    batch = []
            self.db.executemany(sql, batch)
            self.db.commit()

    def table_contents(self, table_id: str, req: Request) -> Response:
        table = self.tables.get(table_id)
        if table is None:
            return Response.json(404, {"message": f"no table {table_id}"})
        limit = int(req.arg("limit", "1000") or 1000)
        names = [c["name"] for c in table["columns"]]
        with self._db_lock:
            count = self.db.execute(f"SELECT COUNT(*) FROM {table['sql']}").fetchone()[0]  # noqa: S608
            rows = self.db.execute(
                f"SELECT {', '.join(_ident(n) for n in names)} FROM {table['sql']} ORDER BY _seq LIMIT ?",  # noqa: S608
                (limit,),
            ).fetchall()
        return Response.json(
            200,
            {
                "tableName": table_id,
                "publicId": table["publicId"],
                "columns": names,
                "rows": [list(r) for r in rows],
                "row_count": count,
            },
        )


def split_file_content(src: BinaryIO, dst: BinaryIO, key: bytes = b"fileContent") -> dict[str, Any]:
    """Parse a JSON object whose `key` string is huge: the value is base64-decoded into `dst` as it
    streams by; the rest (small) is parsed with json. Raises BadRequest on bad JSON or base64."""
    skeleton = bytearray()
    decoder = _Base64Writer(dst)
    in_string = escaped = in_content = False
    depth = 0
    token = bytearray()
    last_string: bytes | None = None
    key_pending: bytes | None = None  # a key whose ':' was seen at depth 1
    expect_key = False
    found = False
    while chunk := src.read(CHUNK):
        i, n = 0, len(chunk)
        while i < n:
            if in_content:
                end = chunk.find(b'"', i)
                if end < 0:
                    decoder.write(chunk[i:])
                    break
                decoder.write(chunk[i:end])
                decoder.close()
                in_content = False
                skeleton += b'""'
                i = end + 1
                continue
            c = chunk[i]
            i += 1
            if in_string:
                skeleton.append(c)
                if escaped:
                    escaped = False
                elif c == 0x5C:
                    escaped = True
                elif c == 0x22:
                    in_string = False
                    last_string = bytes(token)
                else:
                    token.append(c)
                continue
            if c == 0x22:
                if depth == 1 and key_pending == key and not found:
                    in_content = found = True
                    key_pending = None
                    continue
                in_string, token = True, bytearray()
                skeleton.append(c)
                continue
            skeleton.append(c)
            if c in b"{[":
                depth += 1
                expect_key = c == 0x7B and depth == 1
            elif c in b"}]":
                depth -= 1
            elif c == 0x2C and depth == 1:
                expect_key, key_pending = True, None
            elif c == 0x3A and depth == 1 and expect_key:
                key_pending, expect_key = last_string, False
            elif c not in b" \t\r\n":
                key_pending = None
            if len(skeleton) > _SKELETON_LIMIT:
                raise BadRequest(_fail(400, "the request's JSON outside fileContent is too large"))
    if in_content or in_string:
        raise BadRequest(_fail(400, "the request body is not valid JSON (it ends inside a string)"))
    try:
        meta = json.loads(bytes(skeleton))
    except ValueError:
        raise BadRequest(_fail(400, "the request body is not valid JSON")) from None
    if not isinstance(meta, dict):
        raise BadRequest(_fail(400, "the request body must be a JSON object"))
    if not found:
        raise BadRequest(_fail(400, "fileContent is required (base64 of the file)"))
    if decoder.written == 0:
        raise BadRequest(_fail(400, "fileContent is empty"))
    return meta


class _Base64Writer:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pending = b""
        self.written = 0
        self.done = False

    def write(self, data: bytes) -> None:
        data = self.pending + data
        hold = b""
        if data.endswith(b"\\"):  # maybe the first half of an escaped slash
            data, hold = data[:-1], b"\\"
        if b"\\" in data:
            data = data.replace(b"\\/", b"/")
            if b"\\" in data:
                raise BadRequest(_fail(400, "fileContent is not valid base64"))
        usable = len(data) - len(data) % 4
        self.pending = data[usable:] + hold
        if usable:
            self._decode(data[:usable])

    def _decode(self, data: bytes) -> None:
        if self.done:
            raise BadRequest(_fail(400, "fileContent is not valid base64 (data after padding)"))
        try:
            decoded = binascii.a2b_base64(data, strict_mode=True)
        except binascii.Error:
            raise BadRequest(_fail(400, "fileContent is not valid base64")) from None
        self.done = data.endswith(b"=")
        self.out.write(decoded)
        self.written += len(decoded)

    def close(self) -> None:
        if self.pending:
            raise BadRequest(_fail(400, "fileContent is not valid base64 (its length is not a multiple of 4)"))


def _header(content: Path) -> list[str]:
    with content.open("rb") as fh:
        line = fh.readline(1024 * 1024).decode("utf-8", errors="replace").rstrip("\r\n")
    if not line:
        raise BadRequest(_fail(400, "the file's first line must hold the headers"))
    return next(csv.reader(io.StringIO(line), delimiter=_delimiter(line)), [])


def _delimiter(header_line: str) -> str:
    return ";" if header_line.count(";") > header_line.count(",") else ","


def _value_problem(column: Mapping[str, Any], value: str) -> str | None:
    if value == "":
        if column["isPrimary"]:
            return "the primary key is empty"
        if not column["isNullable"]:
            return "the column does not accept an empty value"
        return None
    kind = column["type"]
    if kind == "INTEGER" and not _INTEGER.match(value):
        return f"{value[:40]!r} is not an integer"
    if kind == "DECIMAL" and not _DECIMAL.match(value):
        return f"{value[:40]!r} is not a decimal number"
    if kind == "BOOLEAN" and value.lower() not in _BOOLEAN:
        return f"{value[:40]!r} is not a boolean"
    if kind in ("DATE", "DATETIME") and not _is_datetime(value):
        return f"{value[:40]!r} is not in one of the accepted date-time formats"
    return None


def _is_datetime(value: str) -> bool:
    candidates = [value]
    if m := _FRACTION.match(value):
        candidates = [m.group(1).replace("T", " ")]
    elif m := _ZULU.match(value):
        candidates = [m.group(1)]
    for text in candidates:
        for fmt in _DATETIME_FORMATS:
            try:
                datetime.strptime(text, fmt)
                return True
            except ValueError:
                continue
    return False


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ok(data: Any) -> Response:
    return Response.json(200, {"code": 0, "message": "Success", "data": data})


def _fail(status: int, message: str) -> Response:
    return Response.json(status, {"code": status, "message": message, "data": None})
