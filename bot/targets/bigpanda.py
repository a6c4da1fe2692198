"""BigPanda mapping-enrichment tables: replace a whole table from a CSV, read its job, read its schema.

API generations (`api_version` under `[targets.X]`): "2.1" (default, User API Key) and "1.0"
(legacy, Org Token); paths in `PATHS`. The upload is `POST .../map` with the CSV streamed as the
body; BigPanda answers `202` with a `Location` header (preferred) and a Job object whose `job_id`
is used when the header is absent. A `400` is shown to the user verbatim, truncated: its shape is
undocumented.

Resending: a re-sent upload replaces the table with the same bytes, so after a `5xx` or a timeout
the client sends the whole body again (re-opened from its `ByteSource`).

Settings (extra keys under `[targets.X]`, with their defaults; unknowns of docs/upstream-apis.md marked *):
- `requests_per_second` = 5 (the documented limit per organization)
- `max_file_bytes` = 500 MB (500 * 1024 * 1024, the documented file limit)
- `max_attempts` = 5, `backoff_seconds` = 0.5, `max_backoff_seconds` = 30 (retries of 429/5xx)
- `error_text_limit` = 500 (* characters of an undocumented 400 body shown to the user)
- `done_statuses`, `failed_statuses`, `running_statuses` (* words added to the status families,
  `bot.targets.statuses`; the documented ones are pending, started, done, failed, in any case)
- `status_grace_seconds` = 300 (* how long a job status that cannot be read is tolerated)
- `unknown_status_reads` = 3 (reads of an unknown status word before the user is told)

Reading answers (one place: `_job_object`, `_job_from`): the Job object may come bare or under
`data`; its id as `job_id`, `jobId` or `id`; a failed job's own text, if any, from `error`,
`message` or `reason` (none is documented; shown when present).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bot.config import TableConfig, TargetConfig
from bot.errors import UpstreamError
from bot.schema import Column, TableSchema
from bot.targets.base import (
    ByteSource,
    FileSource,
    Limiter,
    RetryPolicy,
    Sender,
    Sleep,
    UpstreamJob,
    UpstreamStatus,
    address_not_allowed,
    forbidden_reason,
    truncate,
)
from bot.targets.statuses import (
    DEFAULT_STATUS_GRACE_SECONDS,
    DEFAULT_UNKNOWN_STATUS_READS,
    StatusWords,
    failure_text,
)

PATHS: Mapping[str, Mapping[str, str]] = {
    "2.1": {
        "map": "/resources/v2.1/mapping-enrichment/{id}/map",
        "job": "/resources/v2.1/alert-enrichments-jobs/{job_id}",
        "schema": "/resources/v2.1/mapping-enrichment/{id}",
    },
    "1.0": {
        "map": "/resources/v1.0/enrichments/{id}/map",
        "job": "/resources/v1.0/enrichment-jobs/{job_id}",
        "schema": "/resources/v1.0/enrichments/{id}",
    },
}
DEFAULT_REQUESTS_PER_SECOND = 5.0
DEFAULT_MAX_FILE_BYTES = 500 * 1024 * 1024
FAILED_REASON = (
    "BigPanda reported the upload job failed without giving a reason; nothing was changed "
    "(no partial success). Check the file against the enrichment schema and upload it again."
)


class BigPandaClient:
    kind = "bigpanda"
    label = "BigPanda"
    # An upload replaces the whole table; sending the same bytes again leaves it as one send would.
    replaces_table = True

    def __init__(
        self,
        target: TargetConfig,
        http: httpx.Client,
        *,
        token: str,
        limiter: Limiter,
        retry: RetryPolicy | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        if target.api_version not in PATHS:
            raise ValueError(f"unsupported BigPanda api_version {target.api_version!r}")
        self.target = target
        self.paths = PATHS[target.api_version]
        self._token = token
        self.max_file_bytes = int(target.options.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES))
        self.error_text_limit = int(target.options.get("error_text_limit", 500))
        self.status_words = StatusWords.from_options(target.options)
        self.status_grace_seconds = float(target.options.get("status_grace_seconds", DEFAULT_STATUS_GRACE_SECONDS))
        self.unknown_status_reads = int(target.options.get("unknown_status_reads", DEFAULT_UNKNOWN_STATUS_READS))
        self._sender = Sender(http, limiter, retry or RetryPolicy.from_options(target.options), sleep, "BigPanda")

    def _url(self, key: str, **values: str) -> str:
        return self.target.base_url + self.paths[key].format(**values)

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/json", **extra}

    def _refusal(self, response: httpx.Response, what: str) -> UpstreamError:
        code = response.status_code
        if code == 401:
            return UpstreamError(
                "auth",
                f"BigPanda refused the token while {what} (401): check {self.target.token_env}",
                status_code=code,
            )
        if code == 403:
            reason = forbidden_reason(response)
            if reason is not None:
                return address_not_allowed("BigPanda", what, reason)
            return UpstreamError(
                "auth",
                f"BigPanda forbids {what} (403): the token in {self.target.token_env} lacks the permission",
                status_code=code,
            )
        detail = truncate(response.text, self.error_text_limit) or "(no details)"
        return UpstreamError("rejected", f"BigPanda refused {what} ({code}): {detail}", status_code=code)

    # -- what the use cases ask of every target (bot.targets.base.TargetClient) -------------------

    @property
    def part_spacing_seconds(self) -> float:
        return 0.0

    def parts(self, table: TableConfig, path: Path) -> Sequence[ByteSource]:
        return [FileSource(path)]

    def resend_is_safe(self, table: TableConfig) -> bool:
        return True

    # -- the steps of `tablebot check` -------------------------------------------------------------

    def login(self) -> str:
        return f"no login step: the token in {self.target.token_env} is sent with every call (proved next)"

    def locate(self, table: TableConfig) -> str:
        schema = self.fetch_schema(table)
        name = f" ({schema.table_name!r})" if schema.table_name else ""
        return f"enrichment {_enrichment_id(table)}{name} found; the token was accepted"

    def fetch_schema(self, table: TableConfig) -> TableSchema:
        enrichment = _enrichment_id(table)
        what = f"reading enrichment {enrichment}"
        response = self._sender.send("GET", self._url("schema", id=enrichment), what=what, headers=self._headers())
        if response.status_code != 200:
            raise self._refusal(response, what)
        return parse_schema(_json(response, what))

    def start_upload(self, table: TableConfig, body: ByteSource, *, part: int = 1, parts: int = 1) -> UpstreamJob:
        enrichment = _enrichment_id(table)
        size = body.size
        if size > self.max_file_bytes:
            raise UpstreamError(
                "rejected",
                f"the file is {size:,} bytes; BigPanda accepts at most {self.max_file_bytes:,} bytes per table",
            )
        what = f"uploading table {table.alias} (enrichment {enrichment})"
        headers = self._headers(**{"Content-Type": "text/csv; charset=utf8", "Content-Length": str(size)})
        response = self._sender.send(
            "POST",
            self._url("map", id=enrichment),
            what=what,
            headers=headers,
            body=body.chunks,
            resend_after_sent=True,
        )
        if response.status_code not in (200, 201, 202):
            raise self._refusal(response, what)
        return self._job_from(response, part, parts)

    def _job_from(self, response: httpx.Response, part: int, parts: int) -> UpstreamJob:
        try:
            payload: Any = response.json()
        except ValueError:
            payload = None
        body_id = _job_id(payload)
        location = response.headers.get("Location")
        if location:
            absolute = str(response.url.join(location))
            job_id = body_id or absolute.rstrip("/").rsplit("/", 1)[-1]
            # The token goes only to the configured host: a Location elsewhere is not followed.
            safe = self._same_origin(absolute)
            return UpstreamJob(job_id=str(job_id), location=absolute if safe else None, part=part, parts=parts)
        if body_id:
            return UpstreamJob(job_id=body_id, location=None, part=part, parts=parts)
        raise UpstreamError(
            "server",
            "BigPanda accepted the upload but named no job (no Location header, no job_id): "
            "the table may be replaced; check it in BigPanda",
            status_code=response.status_code,
            may_have_started=True,
        )

    def _same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.target.base_url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    def job_status(self, job: UpstreamJob | str) -> UpstreamStatus:
        """One read of the job. A 404, a 5xx, or an answer that is not a Job object raises
        `status_unreadable` (the caller tolerates it for `status_grace_seconds`)."""
        if isinstance(job, str):
            job = UpstreamJob(job_id=job)
        url = job.location or self._url("job", job_id=job.job_id)
        what = f"reading upload job {job.job_id}"
        try:
            response = self._sender.send("GET", url, what=what, headers=self._headers())
        except UpstreamError as exc:
            if exc.kind == "server":
                raise UpstreamError("status_unreadable", exc.message, status_code=exc.status_code) from None
            raise
        if response.status_code in (401, 403):
            raise self._refusal(response, what)
        if response.status_code != 200:
            detail = truncate(response.text, 200) or "no details"
            raise UpstreamError(
                "status_unreadable",
                f"BigPanda answered {response.status_code} while {what}: {detail}",
                status_code=response.status_code,
            )
        obj = _job_object(_payload_or_none(response))
        if obj is None or "status" not in obj:
            raise UpstreamError(
                "status_unreadable",
                f"BigPanda answered {what} with something that is not a Job object: {_shown(response)}",
                status_code=response.status_code,
            )
        raw = str(obj.get("status") or "").strip()
        family = self.status_words.family(raw)
        if family == "done":
            return UpstreamStatus("done", None, raw)
        if family == "failed":
            own = failure_text(obj)
            reason = f"BigPanda reported the upload job {raw}: {own}" if own else FAILED_REASON
            return UpstreamStatus("failed", reason, raw)
        if family == "running":
            return UpstreamStatus("running", None, raw)
        return UpstreamStatus(
            "running", f"BigPanda answers status {truncate(raw, 60)!r}, which the bot does not know", raw, known=False
        )


def _enrichment_id(table: TableConfig) -> str:
    if not table.enrichment_id:
        raise UpstreamError("rejected", f"table {table.alias} names no enrichment_id")
    return table.enrichment_id


def _payload_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _shown(response: httpx.Response) -> str:
    text = truncate(response.text, 120)
    kind = response.headers.get("Content-Type", "").split(";")[0] or "no content type"
    return f"{kind}: {text}" if text else kind


def _job_object(payload: Any) -> dict[str, Any] | None:
    """The Job object of an answer: bare, or under `data` (one place for every shape)."""
    if isinstance(payload, dict):
        inner = payload.get("data")
        if isinstance(inner, dict) and ("status" in inner or "job_id" in inner or "jobId" in inner):
            return inner
        return payload
    return None


def _job_id(payload: Any) -> str | None:
    if isinstance(payload, str) and payload.strip():
        return payload.strip()
    obj = _job_object(payload)
    if obj is None:
        return None
    for key in ("job_id", "jobId", "id"):
        value = obj.get(key)
        if isinstance(value, str | int) and str(value):
            return str(value)
    return None


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise UpstreamError(
            "server",
            f"BigPanda answered {what} with something that is not a JSON object",
            status_code=response.status_code,
        )
    return payload


def parse_schema(payload: Mapping[str, Any]) -> TableSchema:
    """The enrichment object's `config.fields[].title` as columns, `type` as the role."""
    obj: Any = payload.get("data", payload) if "config" not in payload else payload
    config = obj.get("config") if isinstance(obj, dict) else None
    fields = config.get("fields") if isinstance(config, dict) else None
    if not isinstance(fields, list):
        raise UpstreamError("server", "BigPanda's enrichment object has no config.fields list")
    columns: list[Column] = []
    seen: set[str] = set()
    for field in fields:
        if not isinstance(field, dict) or not isinstance(field.get("title"), str):
            continue
        title = field["title"]
        if title in seen:  # a query and a result tag may share a title; the CSV has one column
            continue
        seen.add(title)
        role = field.get("type") if field.get("type") in ("query_tag", "result_tag") else None
        columns.append(Column(name=title, role=role))
    name = config.get("name") if isinstance(config, dict) else None
    return TableSchema(kind="bigpanda", columns=tuple(columns), table_name=name if isinstance(name, str) else None)
