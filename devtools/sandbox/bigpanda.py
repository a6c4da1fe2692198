"""BigPanda emulator: mapping-enrichment tables replaced by `POST .../map`, jobs, schemas (v1.0, v2.1).

Built from docs/upstream-apis.md, independently of bot.validation (a shared bug would hide itself):
- Bearer token among `tokens` (demo: "demo-bigpanda-token"), else 401.
- 5 requests a second per token, else 429 (`requests_per_second`).
- Checked while answering the upload (400 with a message): the body is at most `max_file_bytes`,
  it ends with LF (else "Stream finished but there was a truncated final frame in the buffer"),
  the header's titles are exactly the schema's (a CRLF file leaves `\\r` on the last title).
- Checked by the job (the job fails; like BigPanda, the status gives no reason, but
  `GET /_sandbox/jobs/{id}` does): at least one data row, every row has the header's number of
  fields, no `\\r` in a value, no value longer than `max_field_chars`, no duplicate rows, UTF-8.
- The job moves pending -> started -> done|failed over `job_seconds`; on done the stored table is
  replaced by the uploaded bytes (no partial success). Stored tables live on disk.
- Variants (settings): `status_words` (e.g. {"done": "COMPLETED"}) and `status_case` (DONE, Done),
  `job_shape` (the Job object bare, as documented, or under `data`), `failure_text_field` (a
  failed job's text in `error`/`message`/`reason`: undocumented, absent by default),
  `status_not_found_seconds` (a new job's status answers 404 for a while), `location_header`.
- `GET /_sandbox/tables/{id}` gives {"bytes", "sha256", "header", "rows" (first `limit`, default
  1000), "row_count"}; `PUT /_sandbox/tables/{id}` {"name", "fields": [{"title", "type"}]}.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sqlite3
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devtools.sandbox.server import Job, Request, Response, SandboxApp, bearer

_MAP = {"v2.1": "mapping-enrichment", "v1.0": "enrichments"}
_JOBS = {"v2.1": "alert-enrichments-jobs", "v1.0": "enrichment-jobs"}
_STATUS = {"pending": "pending", "running": "started", "done": "done", "failed": "failed"}
TRUNCATED_FRAME = "Stream finished but there was a truncated final frame in the buffer"
_HEADER_LIMIT = 1024 * 1024


class BigPandaSandbox(SandboxApp):
    kind = "bigpanda"
    default_rps = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.enrichments: dict[str, dict[str, Any]] = {}
        self.tables_dir: Path | None = None
        super().__init__(*args, **kwargs)

    def demo_tables(self) -> Mapping[str, Any]:
        return {
            "demo": {
                "name": "demo hosts",
                "fields": [
                    {"title": "host", "type": "query_tag"},
                    {"title": "service", "type": "result_tag"},
                    {"title": "owner", "type": "result_tag"},
                ],
            }
        }

    def define_table(self, table_id: str, definition: Mapping[str, Any]) -> None:
        fields = definition.get("fields")
        if fields is None:  # shorthand: query = [...], result = [...]
            fields = [{"title": t, "type": "query_tag"} for t in definition.get("query", [])]
            fields += [{"title": t, "type": "result_tag"} for t in definition.get("result", [])]
        if not fields or not all(isinstance(f, Mapping) and isinstance(f.get("title"), str) for f in fields):
            raise ValueError(f"enrichment {table_id}: fields must be a list of {{title, type}}")
        self.enrichments[table_id] = {
            "id": table_id,
            "config": {
                "name": str(definition.get("name", table_id)),
                "case_insensitive": bool(definition.get("case_insensitive", False)),
                "fields": [
                    {
                        "title": f["title"],
                        "type": f.get("type", "result_tag"),
                        "optional": bool(f.get("optional", False)),
                    }
                    for f in fields
                ],
            },
            "active": True,
        }

    def _table_file(self, table_id: str) -> Path:
        directory = self.state_dir / "tables"
        directory.mkdir(exist_ok=True)
        return directory / f"{hashlib.sha256(table_id.encode()).hexdigest()[:32]}.csv"

    def reset_tables(self) -> None:
        for table_id in self.enrichments:
            self._table_file(table_id).unlink(missing_ok=True)

    def rate_key(self, req: Request) -> str | None:
        return f"token:{bearer(req)}"

    def max_body_bytes(self, method: str, path: str) -> int:
        return self.settings.max_file_bytes if path.endswith("/map") else 1024 * 1024

    def too_large(self, req: Request) -> Response:
        return _bad(f"the CSV file cannot be more than {self.settings.max_file_bytes:,} bytes")

    # --- API ----------------------------------------------------------------------------------

    def route(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "resources" or parts[1] not in _MAP:
            return Response.json(404, {"message": "Not Found"})
        token = bearer(req)
        if token is None or token not in self.settings.tokens:
            return Response.json(401, {"message": "Unauthorized: the token is missing or invalid"})
        version, resource, rest = parts[1], parts[2], parts[3:]
        if resource == _MAP[version]:
            if not rest and req.method == "GET":
                listing = list(self.enrichments.values())
                return Response.json(200, {"data": listing} if version == "v2.1" else listing)
            enrichment = self.enrichments.get(rest[0]) if rest else None
            if enrichment is None:
                return Response.json(404, {"message": "enrichment not found"})
            if len(rest) == 1 and req.method == "GET":
                return Response.json(200, enrichment)
            if len(rest) == 2 and rest[1] == "map" and req.method == "POST":
                return self._upload(req, version, rest[0])
        if resource == _JOBS[version] and len(rest) == 1 and req.method == "GET":
            job = self.jobs.get(rest[0])
            if job is None or self.status_not_found_yet(job):
                return Response.json(404, {"message": "job not found"})
            return Response.json(200, self._job_answer(job))
        return Response.json(404, {"message": "Not Found"})

    def _upload(self, req: Request, version: str, enrichment_id: str) -> Response:
        if not req.header("Content-Type").lower().startswith("text/csv"):
            return _bad("Content-Type must be text/csv")
        if req.body_path is None or req.body_size == 0:
            return _bad("the request body is empty: send the table as CSV")
        with req.body_path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                return _bad(TRUNCATED_FRAME)
            fh.seek(0)
            header_line = fh.readline(_HEADER_LIMIT)
        titles = _fields(header_line.rstrip(b"\n"))
        expected = [f["title"] for f in self.enrichments[enrichment_id]["config"]["fields"]]
        if titles is None:
            return _bad("the header row is not valid CSV")
        missing = [t for t in expected if t not in titles]
        unknown = [t for t in titles if t not in expected]
        if missing or unknown or len(set(titles)) != len(titles):
            return _bad(
                f"the table structure does not match the mapping schema: header {titles!r}, "
                f"schema titles {expected!r}"
                + (f"; missing {missing!r}" if missing else "")
                + (f"; not in schema {unknown!r}" if unknown else "")
            )
        job_id = f"{uuid.uuid4()}_{int(time.time())}_indexcsv"
        req.keep_body = True
        job = Job(
            id=job_id,
            table=enrichment_id,
            created=time.time(),
            body_path=req.body_path,
            info={"bytes": req.body_size, "api_version": version},
        )
        self.start_job(job)
        headers = {}
        if self.settings.location_header:
            host = req.header("Host", "127.0.0.1")
            headers["Location"] = f"http://{host}/resources/{version}/{_JOBS[version]}/{job_id}"
        req.note["table"] = enrichment_id
        return Response.json(202, self._job_answer(job), headers)

    def _job_answer(self, job: Job) -> dict[str, Any]:
        obj = _job_object(job)
        obj["status"] = self.status_word(job.status, obj["status"])
        field = self.settings.failure_text_field
        if job.status == "failed" and field and job.reason:
            obj[field] = job.reason
        return {"data": obj} if self.settings.job_shape == "data" else obj

    # --- jobs ---------------------------------------------------------------------------------

    def check_job(self, job: Job) -> None:
        assert job.body_path is not None
        job.reason = _check_rows(job.body_path, self.settings.max_field_chars, self.state_dir)

    def apply_job(self, job: Job) -> None:
        assert job.body_path is not None
        os.replace(job.body_path, self._table_file(job.table))

    def table_contents(self, table_id: str, req: Request) -> Response:
        if table_id not in self.enrichments:
            return Response.json(404, {"message": f"no enrichment {table_id}"})
        path = self._table_file(table_id)
        if not path.exists():
            return Response.json(
                200,
                {
                    "id": table_id,
                    "exists": False,
                    "bytes": 0,
                    "sha256": None,
                    "header": None,
                    "rows": [],
                    "row_count": 0,
                },
            )
        limit = int(req.arg("limit", "1000") or 1000)
        digest, header, count = hashlib.sha256(), None, 0
        rows: list[list[str] | None] = []
        with path.open("rb") as fh:
            for line in fh:
                digest.update(line)
                if header is None:
                    header = _fields(line.rstrip(b"\n"))
                    continue
                count += 1
                if len(rows) < limit:
                    rows.append(_fields(line.rstrip(b"\n")))
        return Response.json(
            200,
            {
                "id": table_id,
                "exists": True,
                "bytes": path.stat().st_size,
                "sha256": digest.hexdigest(),
                "header": header,
                "rows": rows,
                "row_count": count,
            },
        )


def _job_object(job: Job) -> dict[str, Any]:
    obj: dict[str, Any] = {"status": _STATUS[job.status], "job_id": job.id, "start_time": int(job.created)}
    if job.ended:
        obj["end_time"] = int(job.ended)
    return obj


def _bad(message: str) -> Response:
    return Response.json(400, {"status": 400, "error": "Bad Request", "message": message})


def _fields(line: bytes) -> list[str] | None:
    """A line's values as a line-framing parser sees them: split on LF only, so the CR of a CRLF
    line stays on the last value (csv alone would drop it)."""
    try:
        text = line.decode("utf-8")
        trailing_cr = text.endswith("\r")
        values = next(csv.reader([text.removesuffix("\r")], strict=True), [])
    except (UnicodeDecodeError, csv.Error):
        return None
    if trailing_cr:
        values = [*values[:-1], (values[-1] if values else "") + "\r"]
    return values


def _check_rows(path: Path, max_chars: int, work_dir: Path) -> str | None:
    """The first reason the table cannot be applied, or None. Streams the file; duplicates are
    found through an on-disk index of row digests, so memory does not grow with the table."""
    db_path = work_dir / f"dups-{uuid.uuid4().hex}.sqlite"
    db = sqlite3.connect(db_path)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        batch: list[tuple[bytes, int]] = []
        with path.open("rb") as fh:
            header = _fields(fh.readline().rstrip(b"\n")) or []
            line_no, rows = 1, 0
            for raw in fh:
                line_no += 1
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if b"\r" in line:
                    return f"line {line_no}: a value holds a line break (\\r); line breaks are not supported"
                values = _fields(line)
                if values is None:
                    return f"line {line_no}: not valid UTF-8 CSV (a quoted value with a line break?)"
                if len(values) != len(header):
                    return f"line {line_no}: {len(values)} fields, the header has {len(header)}"
                for value in values:
                    if len(value) > max_chars:
                        return f"line {line_no}: a value is longer than {max_chars} characters"
                rows += 1
                batch.append((hashlib.blake2b(line, digest_size=16).digest(), line_no))
                if len(batch) >= 10_000:
                    found = _insert_digests(db, batch)
                    if found:
                        return found
                    batch = []
            found = _insert_digests(db, batch)
            if found:
                return found
        if rows == 0:
            return "the table has no data rows (at least one is required)"
        return None
    finally:
        db.close()
        db_path.unlink(missing_ok=True)


def _insert_digests(db: sqlite3.Connection, batch: list[tuple[bytes, int]]) -> str | None:
    for digest, line_no in batch:
        try:
            db.execute("INSERT INTO seen VALUES (?, ?)", (digest, line_no))
        except sqlite3.IntegrityError:
            first = db.execute("SELECT line FROM seen WHERE digest = ?", (digest,)).fetchone()[0]
            return f"line {line_no} duplicates line {first}; rows must be unique"
    return None
