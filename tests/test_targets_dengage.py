"""D·engage client against the D·engage sandbox over real HTTP, plus the envelope's shapes through
httpx.MockTransport and the streamed body / part planning as units."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.config import TablesFile, parse_tables
from bot.errors import UpstreamError
from bot.targets import BytesSource, FileSource, LimiterRegistry, UpstreamJob, build_client
from bot.targets.dengage import DengageClient, _json_chunks, plan_parts
from bot.targets.runner import run_upload
from tests.fixtures_upstream import PART_SPACING, SANDBOX_ENV, Upstream

CONTACTS = b"contact_key,email,city\nk1,a@example.com,Paris\nk2,b@example.com,Oslo\n"


def client_for(tables: TablesFile, http: httpx.Client, pacing: LimiterRegistry, **kw: object) -> DengageClient:
    client = build_client(tables.targets["dg"], http, SANDBOX_ENV, pacing=pacing, **kw)  # type: ignore[arg-type]
    assert isinstance(client, DengageClient)
    return client


def wait_end(client: DengageClient, job: UpstreamJob, limit: float = 10.0) -> tuple[str, str | None]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = client.job_status(job)
        if status.state != "running":
            return status.state, status.reason
        time.sleep(0.05)
    return "running", None


def test_upsert_on_a_primary_key_updates_and_keeps_values_an_empty_cell_does_not_overwrite(
    upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    client = client_for(upstream_tables, http, pacing)
    table = upstream_tables.table("contacts")
    assert wait_end(client, client.start_upload(table, BytesSource(CONTACTS))) == ("done", None)
    update = b"contact_key;email;city\nk2;;Bergen\nk3;c@example.com;Rome\nk3;d@example.com;Rome\n"
    assert wait_end(client, client.start_upload(table, BytesSource(update))) == ("done", None)
    stored = dengage_upstream.admin.table("demo_contacts")
    assert stored["rows"] == [
        ["k1", "a@example.com", "Paris"],
        ["k2", "b@example.com", "Bergen"],  # the empty email kept the stored one
        ["k3", "d@example.com", "Rome"],  # the last row of a key wins
    ]


def test_a_table_without_primary_key_is_appended_to(
    upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    client = client_for(upstream_tables, http, pacing)
    table = upstream_tables.table("events")
    body = b"event,happened_at,amount\nlogin,2024-05-01 10:00:00,1.5\nlogout,2024-05-01T11:00:00Z,2\n"
    for _ in range(2):
        assert wait_end(client, client.start_upload(table, BytesSource(body))) == ("done", None)
    assert dengage_upstream.admin.table("demo_events")["row_count"] == 4


def test_the_request_carries_the_mapping_and_the_file_as_base64(
    upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    client = client_for(upstream_tables, http, pacing)
    table = dataclasses.replace(
        upstream_tables.table("contacts"), column_mapping={"city": "town"}, extra={"constants": {"email": "x@y.z"}}
    )
    job = client.start_upload(table, BytesSource(b"contact_key,town\nk9,Lima\n"))
    assert wait_end(client, job) == ("done", None)
    assert dengage_upstream.admin.table("demo_contacts")["rows"] == [["k9", "x@y.z", "Lima"]]
    sandbox_job = next(j for j in dengage_upstream.admin.jobs() if j["id"] == job.job_id)
    assert sandbox_job["jobName"].startswith("tablebot contacts part 1/1 ")


@pytest.mark.parametrize("by", ["table_name", "table_id"])
def test_fetch_schema(by: str, upstream_tables: TablesFile, http: httpx.Client, pacing: LimiterRegistry) -> None:
    client = client_for(upstream_tables, http, pacing)
    table = upstream_tables.table("contacts")
    if by == "table_id":
        table = dataclasses.replace(table, table_name=None, table_id="5d7a6b3e-0000-4000-8000-000000000001")
    schema = client.fetch_schema(table)
    assert schema.names == ["contact_key", "email", "city"]
    assert schema.primary_key == ["contact_key"]
    assert schema.table_name == "demo_contacts"
    assert schema.columns[1].type == "EMAIL"


def test_an_unknown_table_is_refused(upstream_tables: TablesFile, http: httpx.Client, pacing: LimiterRegistry) -> None:
    client = client_for(upstream_tables, http, pacing)
    table = dataclasses.replace(upstream_tables.table("contacts"), table_name="nope")
    with pytest.raises(UpstreamError, match="no data table named 'nope'"):
        client.fetch_schema(table)
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(table, BytesSource(CONTACTS))
    assert caught.value.kind == "rejected"
    assert "the table does not exist" in caught.value.message


def test_a_file_missing_a_column_is_refused_upstream(
    upstream_tables: TablesFile, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    client = client_for(upstream_tables, http, pacing)
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(upstream_tables.table("contacts"), BytesSource(b"contact_key,email\nk1,a@b.c\n"))
    assert caught.value.kind == "rejected"
    assert "missing ['city']" in caught.value.message


def test_bad_rows_fail_the_job_with_the_vendor_error_list(
    upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    client = client_for(upstream_tables, http, pacing)
    body = b"event,happened_at,amount\nlogin,01/05/2024,1\n,2024-05-01,x\n"
    state, reason = wait_end(client, client.start_upload(upstream_tables.table("events"), BytesSource(body)))
    assert state == "failed"
    assert reason is not None and "3 row errors" in reason and "01/05/2024" in reason
    assert dengage_upstream.admin.table("demo_events")["row_count"] == 0


def test_a_wrong_password_is_an_auth_error_without_the_password(
    upstream_tables: TablesFile, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    env = {**SANDBOX_ENV, "TEST_DENGAGE_PASSWORD": "not-the-password"}
    client = build_client(upstream_tables.targets["dg"], http, env, pacing=pacing)
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(upstream_tables.table("contacts"), BytesSource(CONTACTS))
    assert caught.value.kind == "auth"
    assert "TEST_DENGAGE_PASSWORD" in caught.value.message
    assert "not-the-password" not in str(caught.value)


def test_a_401_on_an_expired_token_relogs_in_once(
    upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    client = client_for(upstream_tables, http, pacing)
    job = client.start_upload(upstream_tables.table("contacts"), BytesSource(CONTACTS))
    dengage_upstream.admin.expire_tokens()
    assert wait_end(client, job)[0] == "done"
    calls = [(r["path"].rsplit("/", 1)[-1], r["status"]) for r in dengage_upstream.admin.requests("/rest/")]
    assert calls[:4] == [("login", 200), ("upsert", 200), (job.job_id, 401), ("login", 200)]
    assert sum(1 for name, _ in calls if name == "login") == 2


def test_the_token_is_renewed_before_it_expires(
    upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    dengage_upstream.admin.settings(token_ttl_seconds=120)
    now = [1000.0]
    client = client_for(upstream_tables, http, pacing, clock=lambda: now[0])
    table = upstream_tables.table("contacts")
    client.fetch_schema(table)
    now[0] += 30  # 90 s left: more than the 60 s margin, the token is reused
    client.fetch_schema(table)
    now[0] += 31  # 59 s left: renewed before the vendor would refuse it
    client.fetch_schema(table)
    statuses = [r["status"] for r in dengage_upstream.admin.requests("/rest/")]
    logins = [r for r in dengage_upstream.admin.requests("/login")]
    assert len(logins) == 2
    assert 401 not in statuses


def test_429_is_retried_and_applied_once(
    upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    client = client_for(upstream_tables, http, pacing)
    dengage_upstream.admin.fault("429", count=3, path="/upsert", method="POST")
    job = client.start_upload(upstream_tables.table("events"), BytesSource(b"event,happened_at,amount\na,,\n"))
    assert wait_end(client, job)[0] == "done"
    assert [r["status"] for r in dengage_upstream.admin.requests("/upsert", method="POST")] == [429, 429, 429, 200]
    assert dengage_upstream.admin.table("demo_events")["row_count"] == 1


@pytest.mark.parametrize("fault", ["500", "500_after", "drop_after", "timeout"])
def test_an_ambiguous_failure_is_never_resent(
    fault: str, upstream_tables: TablesFile, dengage_upstream: Upstream, pacing: LimiterRegistry
) -> None:
    dengage_upstream.admin.settings(slow_seconds=1.0)
    dengage_upstream.admin.fault(fault, path="/upsert", method="POST")
    with httpx.Client(timeout=httpx.Timeout(0.5)) as short:
        client = client_for(upstream_tables, short, pacing)
        with pytest.raises(UpstreamError) as caught:
            client.start_upload(upstream_tables.table("events"), BytesSource(b"event,happened_at,amount\na,,\n"))
    assert caught.value.may_have_started
    assert "may have started" in caught.value.message
    time.sleep(1.2 if fault == "timeout" else 0.1)  # let the slow answer land in the log
    assert len(dengage_upstream.admin.requests("/upsert", method="POST")) == 1
    applied = fault != "500"
    if applied:
        deadline = time.monotonic() + 5
        while dengage_upstream.admin.table("demo_events")["row_count"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert dengage_upstream.admin.table("demo_events")["row_count"] == (1 if applied else 0)


def test_status_reads_are_retried_through_5xx(
    upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    client = client_for(upstream_tables, http, pacing)
    job = client.start_upload(upstream_tables.table("contacts"), BytesSource(CONTACTS))
    dengage_upstream.admin.fault("500", count=2, path="/dataspace/async/")
    assert wait_end(client, job)[0] == "done"


@pytest.mark.parametrize("shape", ["data_object", "data_string", "top_level"])
def test_every_envelope_shape_gives_the_job_id(
    shape: str, upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    dengage_upstream.admin.settings(response_shape=shape)
    client = client_for(upstream_tables, http, pacing)
    job = client.start_upload(upstream_tables.table("contacts"), BytesSource(CONTACTS))
    assert [j["id"] for j in dengage_upstream.admin.jobs()] == [job.job_id]


def test_a_large_file_goes_in_spaced_parts_each_within_the_limit(
    tmp_path: Path, upstream_tables: TablesFile, dengage_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    limit = 4000
    dengage_upstream.admin.settings(max_request_bytes=limit)
    target = dataclasses.replace(
        upstream_tables.targets["dg"], options={**upstream_tables.targets["dg"].options, "max_request_bytes": limit}
    )
    table = dataclasses.replace(upstream_tables.table("events"), target=target)
    rows = [f"event-{i},2024-05-01 10:{i % 60:02d}:00,{i}.5\n".encode() for i in range(300)]
    path = tmp_path / "events.csv"
    path.write_bytes(b"event,happened_at,amount\n" + b"".join(rows))
    client = build_client(target, http, SANDBOX_ENV, pacing=pacing)
    assert isinstance(client, DengageClient)

    result = run_upload(client, table, path, wait=True, poll_interval=0.05, timeout=60)

    assert result.outcome == "done", result.message
    parts = len(result.jobs)
    assert parts >= 4
    stored = dengage_upstream.admin.table("demo_events", limit=1000)
    assert ["{},{},{}\n".format(*r).encode() for r in stored["rows"]] == rows
    upserts = dengage_upstream.admin.requests("/upsert", method="POST")
    assert [r["status"] for r in upserts] == [200] * parts
    assert all(r["bytes"] <= limit for r in upserts)
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(upserts)]
    assert min(gaps) >= PART_SPACING * 0.95
    assert [j.job.part for j in result.jobs] == list(range(1, parts + 1))


def test_a_request_over_the_limit_is_refused_before_sending(upstream_tables: TablesFile) -> None:
    sent: list[httpx.Request] = []
    target = dataclasses.replace(upstream_tables.targets["dg"], options={"max_request_bytes": 100})
    http = httpx.Client(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200)))
    client = build_client(target, http, SANDBOX_ENV, pacing=LimiterRegistry())
    table = dataclasses.replace(upstream_tables.table("contacts"), target=target)
    with pytest.raises(UpstreamError, match="must be sent in parts"):
        client.start_upload(table, BytesSource(CONTACTS * 10))
    assert sent == []


# --- envelope shapes through MockTransport ---------------------------------------------------------

MOCK = parse_tables(
    {
        "targets": {
            "dg": {"kind": "dengage", "base_url": "https://x.test/rest", "userkey_env": "U", "password_env": "P"}
        },
        "tables": {"t": {"target": "dg", "table_name": "orders"}},
    }
)


def mock_client(upsert: httpx.Response, status: httpx.Response | None = None) -> DengageClient:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/rest/login":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        if request.url.path == "/rest/dataspace/async/upsert":
            return upsert
        assert status is not None
        return status

    http = httpx.Client(transport=httpx.MockTransport(answer))
    client = build_client(MOCK.targets["dg"], http, {"U": "u", "P": "p"}, pacing=LimiterRegistry())
    assert isinstance(client, DengageClient)
    return client


def test_http_200_with_a_nonzero_code_is_a_refusal() -> None:
    client = mock_client(httpx.Response(200, json={"code": 17, "message": "Table is locked", "data": None}))
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(MOCK.table("t"), BytesSource(b"a\n1\n"))
    assert caught.value.kind == "rejected"
    assert "code 17" in caught.value.message and "Table is locked" in caught.value.message


@pytest.mark.parametrize(
    "payload",
    [{"code": 0, "data": {"jobId": "J"}}, {"code": 0, "data": "J"}, {"jobId": "J"}, {"transactionId": "J"}, "J"],
)
def test_the_job_id_is_found_in_every_known_shape(payload: object) -> None:
    client = mock_client(httpx.Response(200, json=payload))
    assert client.start_upload(MOCK.table("t"), BytesSource(b"a\n1\n")).job_id == "J"


def test_completed_with_row_errors_is_failed() -> None:
    status = httpx.Response(
        200, json={"code": 0, "data": {"status": "Completed", "errorCount": 2, "errorList": ["row 3: bad date"]}}
    )
    result = mock_client(httpx.Response(200, json={"data": "J"}), status).job_status("J")
    assert result.state == "failed"
    assert result.reason is not None and "2 row errors" in result.reason and "row 3: bad date" in result.reason


def test_status_words_are_settings() -> None:
    target = dataclasses.replace(
        MOCK.targets["dg"], options={"done_statuses": ["Finished"], "status_path": "/jobs/{job_id}/state"}
    )
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/rest/login":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        seen.append(request.url.path)
        return httpx.Response(200, json={"code": 0, "data": {"status": "Finished"}})

    client = build_client(
        target, httpx.Client(transport=httpx.MockTransport(answer)), {"U": "u", "P": "p"}, pacing=LimiterRegistry()
    )
    assert client.job_status("J").state == "done"
    assert seen == ["/rest/jobs/J/state"]


# --- the streamed body and the part plan -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OddChunks:
    data: bytes
    step: int

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), self.step):
            yield self.data[i : i + self.step]


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 17, 100])
@pytest.mark.parametrize("step", [1, 2, 4, 7])
def test_the_streamed_body_is_json_with_the_exact_base64(length: int, step: int) -> None:
    data = bytes(range(256))[:length] * 3
    body = b"".join(_json_chunks(b'{"tableName": "t", "fileContent": "', OddChunks(data, step), b'"}'))
    parsed = json.loads(body)
    assert base64.b64decode(parsed["fileContent"], validate=True) == data


def test_the_content_length_is_exact(upstream_tables: TablesFile) -> None:
    lengths: list[tuple[int, int]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        lengths.append((int(request.headers["Content-Length"]), len(request.read())))
        return httpx.Response(200, json={"code": 0, "data": {"jobId": "J"}})

    http = httpx.Client(transport=httpx.MockTransport(answer))
    client = build_client(upstream_tables.targets["dg"], http, SANDBOX_ENV, pacing=LimiterRegistry())
    for n in range(3):
        client.start_upload(upstream_tables.table("contacts"), BytesSource(CONTACTS + b"k,a,b\n" * n + b"x" * n))
    assert all(declared == actual for declared, actual in lengths)


def test_plan_parts_cuts_at_rows_and_keeps_quoted_line_breaks(tmp_path: Path) -> None:
    header = b'id,"note"\n'
    rows = [b"1,plain\n", b'2,"two\nlines"\n', b'3,"say ""hi"""\n', b"4,x\n", b'5,"a\n\nb"\n']
    path = tmp_path / "f.csv"
    path.write_bytes(header + b"".join(rows))
    plan = plan_parts(path, max_part_bytes=len(header) + 20)
    sources = plan.sources()
    assert len(sources) > 1
    bodies = [b"".join(s.chunks()) for s in sources]
    assert all(b.startswith(header) and len(b) <= len(header) + 20 for b in bodies)
    assert b"".join(b[len(header) :] for b in bodies) == b"".join(rows)
    assert all(b.count(b'"') % 2 == 0 for b in bodies)  # no row was cut inside its quotes
    assert sum(r.rows for r in plan.ranges) == len(rows)


def test_plan_parts_keeps_a_small_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(CONTACTS)
    sources = plan_parts(path, 10_000).sources()
    assert sources == [FileSource(path, 0, len(CONTACTS))]


def test_plan_parts_refuses_a_row_larger_than_a_request(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"a\n" + b"x" * 100 + b"\n")
    with pytest.raises(UpstreamError, match="line 2"):
        plan_parts(path, 50)
