"""BigPanda client against the BigPanda sandbox over real HTTP (v2.1 and v1.0), plus edge cases
of the answer's shape through httpx.MockTransport."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import httpx
import pytest

from bot.config import TablesFile, load_tables_file, parse_tables
from bot.errors import UpstreamError
from bot.targets import BytesSource, FileSource, LimiterRegistry, UpstreamJob, build_client
from bot.targets.bigpanda import BigPandaClient
from tests.fixtures_upstream import SANDBOX_ENV, Upstream, write_tables_file

GOOD = b"host,service,owner\nweb-1,checkout,team-a\nweb-2,search,team-b\n"


def wait_done(client: BigPandaClient, job: UpstreamJob, limit: float = 10.0) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = client.job_status(job)
        if status.state != "running":
            return status.state
        time.sleep(0.05)
    return "running"


def tables_for(tmp_path: Path, upstream: Upstream, api_version: str = "2.1", extra: str = "") -> TablesFile:
    return load_tables_file(
        write_tables_file(
            tmp_path / "tables.toml", bigpanda_url=upstream.base_url, api_version=api_version, extra_target=extra
        )
    )


def client_for(tables: TablesFile, http: httpx.Client, pacing: LimiterRegistry) -> BigPandaClient:
    client = build_client(tables.targets["bp"], http, SANDBOX_ENV, pacing=pacing)
    assert isinstance(client, BigPandaClient)
    return client


@pytest.mark.parametrize("api_version", ["2.1", "1.0"])
def test_upload_replaces_the_table_with_the_file(
    api_version: str, tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream, api_version)
    client = client_for(tables, http, pacing)
    path = tmp_path / "hosts.csv"
    path.write_bytes(GOOD)

    job = client.start_upload(tables.table("hosts"), FileSource(path))

    assert f"/resources/v{api_version}/" in (job.location or "")
    assert wait_done(client, job) == "done"
    stored = bigpanda_upstream.admin.table("demo")
    assert stored["sha256"] == hashlib.sha256(GOOD).hexdigest()
    assert stored["rows"] == [["web-1", "checkout", "team-a"], ["web-2", "search", "team-b"]]
    upload = bigpanda_upstream.admin.requests("/map")
    assert [r["path"] for r in upload] == [
        f"/resources/v{api_version}/{'mapping-enrichment' if api_version == '2.1' else 'enrichments'}/demo/map"
    ]


@pytest.mark.parametrize("api_version", ["2.1", "1.0"])
def test_fetch_schema_reads_titles_and_roles(
    api_version: str, tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    client = client_for(tables_for(tmp_path, bigpanda_upstream, api_version), http, pacing)
    schema = client.fetch_schema(tables_for(tmp_path, bigpanda_upstream).table("hosts"))
    assert schema.kind == "bigpanda"
    assert schema.names == ["host", "service", "owner"]
    assert [c.role for c in schema.columns] == ["query_tag", "result_tag", "result_tag"]
    assert schema.table_name == "demo hosts"


def test_a_header_that_does_not_match_is_refused_verbatim(
    tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream)
    client = client_for(tables, http, pacing)
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(tables.table("hosts"), BytesSource(b"host,service\nweb-1,checkout\n"))
    assert caught.value.kind == "rejected"
    assert caught.value.status_code == 400
    assert "missing ['owner']" in caught.value.message
    assert bigpanda_upstream.admin.table("demo")["exists"] is False


def test_a_file_without_final_newline_gets_the_truncated_frame_error(
    tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream)
    client = client_for(tables, http, pacing)
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(tables.table("hosts"), BytesSource(GOOD.rstrip(b"\n")))
    assert "truncated final frame" in caught.value.message


def test_a_failed_job_leaves_the_stored_table_as_it_was(
    tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream)
    client = client_for(tables, http, pacing)
    table = tables.table("hosts")
    assert wait_done(client, client.start_upload(table, BytesSource(GOOD))) == "done"

    duplicated = GOOD + b"web-1,checkout,team-a\n"
    job = client.start_upload(table, BytesSource(duplicated))
    status = None
    for _ in range(200):
        status = client.job_status(job)
        if status.state != "running":
            break
        time.sleep(0.05)
    assert status is not None and status.state == "failed"
    assert status.raw_status == "failed"
    assert status.reason and "no partial success" in status.reason
    assert bigpanda_upstream.admin.table("demo")["sha256"] == hashlib.sha256(GOOD).hexdigest()
    sandbox_job = next(j for j in bigpanda_upstream.admin.jobs() if j["id"] == job.job_id)
    assert "duplicates line 2" in sandbox_job["reason"]


def test_an_injected_job_failure_maps_to_failed(
    tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream)
    client = client_for(tables, http, pacing)
    bigpanda_upstream.admin.fault("job_failed")
    assert wait_done(client, client.start_upload(tables.table("hosts"), BytesSource(GOOD))) == "failed"


def test_a_wrong_token_is_an_auth_error_that_names_the_variable_not_the_value(
    tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream)
    client = build_client(tables.targets["bp"], http, {"TEST_BIGPANDA_TOKEN": "wrong-secret-value"}, pacing=pacing)
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(tables.table("hosts"), BytesSource(GOOD))
    assert caught.value.kind == "auth"
    assert "TEST_BIGPANDA_TOKEN" in caught.value.message
    assert "wrong-secret-value" not in str(caught.value)


def test_a_429_storm_is_retried_and_the_table_lands_once(
    tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream)
    client = client_for(tables, http, pacing)
    bigpanda_upstream.admin.fault("429", count=3, path="/map")
    job = client.start_upload(tables.table("hosts"), BytesSource(GOOD))
    assert wait_done(client, job) == "done"
    statuses = [r["status"] for r in bigpanda_upstream.admin.requests("/map")]
    assert statuses == [429, 429, 429, 202]
    assert bigpanda_upstream.admin.table("demo")["sha256"] == hashlib.sha256(GOOD).hexdigest()


def test_429_beyond_the_attempts_is_rate_limited(
    tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream, extra="max_attempts = 3")
    client = client_for(tables, http, pacing)
    bigpanda_upstream.admin.fault("429", count=10, path="/map")
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(tables.table("hosts"), BytesSource(GOOD))
    assert caught.value.kind == "rate_limited"
    assert "after 3 attempts" in caught.value.message
    assert len(bigpanda_upstream.admin.requests("/map")) == 3


def test_5xx_and_a_500_after_the_upload_started_are_resent_whole(
    tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream)
    client = client_for(tables, http, pacing)
    path = tmp_path / "hosts.csv"
    path.write_bytes(GOOD)
    bigpanda_upstream.admin.fault("500", count=1, path="/map")
    bigpanda_upstream.admin.fault("500_after", count=1, path="/map")
    job = client.start_upload(tables.table("hosts"), FileSource(path))
    assert wait_done(client, job) == "done"
    seen = bigpanda_upstream.admin.requests("/map")
    assert [r["status"] for r in seen] == [500, 500, 202]
    assert all(r["bytes"] == len(GOOD) for r in seen)  # the body was re-opened for every attempt
    # The 500-after-processing job also ran: replacing with the same bytes changes nothing.
    assert bigpanda_upstream.admin.table("demo")["sha256"] == hashlib.sha256(GOOD).hexdigest()


def test_a_timeout_is_retried(tmp_path: Path, bigpanda_upstream: Upstream, pacing: LimiterRegistry) -> None:
    tables = tables_for(tmp_path, bigpanda_upstream)
    bigpanda_upstream.admin.settings(slow_seconds=1.0)
    bigpanda_upstream.admin.fault("timeout", count=1, path="/map")
    with httpx.Client(timeout=httpx.Timeout(0.3)) as short:
        client = client_for(tables, short, pacing)
        job = client.start_upload(tables.table("hosts"), BytesSource(GOOD))
        assert wait_done(client, job) == "done"
    assert bigpanda_upstream.admin.requests("/map")[-1]["status"] == 202


def test_unreachable_after_retries(tmp_path: Path, http: httpx.Client, pacing: LimiterRegistry) -> None:
    tables = load_tables_file(write_tables_file(tmp_path / "t.toml", bigpanda_url="http://127.0.0.1:9"))
    client = client_for(tables, http, pacing)
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(tables.table("hosts"), BytesSource(GOOD))
    assert caught.value.kind == "unreachable"
    assert "gave up after 5 attempts" in caught.value.message


def test_without_location_the_job_id_comes_from_the_body(
    tmp_path: Path, bigpanda_upstream: Upstream, http: httpx.Client, pacing: LimiterRegistry
) -> None:
    bigpanda_upstream.admin.settings(location_header=False)
    tables = tables_for(tmp_path, bigpanda_upstream)
    client = client_for(tables, http, pacing)
    job = client.start_upload(tables.table("hosts"), BytesSource(GOOD))
    assert job.location is None
    assert job.job_id.endswith("_indexcsv")
    assert wait_done(client, job.job_id) == "done"


# --- answers' shapes, through MockTransport -------------------------------------------------------

TARGET = parse_tables(
    {
        "targets": {"bp": {"kind": "bigpanda", "base_url": "https://api.example.test", "token_env": "T"}},
        "tables": {"hosts": {"target": "bp", "enrichment_id": "e1"}},
    }
)


def mock_client(handler: httpx.MockTransport) -> BigPandaClient:
    http = httpx.Client(transport=handler)
    client = build_client(TARGET.targets["bp"], http, {"T": "tok"}, pacing=LimiterRegistry(), sleep=lambda _: None)
    assert isinstance(client, BigPandaClient)
    return client


def test_a_location_on_another_host_is_not_followed_with_the_token() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer tok"
        assert request.headers["Content-Type"] == "text/csv; charset=utf8"
        return httpx.Response(
            202, headers={"Location": "https://evil.test/jobs/abc"}, json={"job_id": "abc", "status": "pending"}
        )

    job = mock_client(httpx.MockTransport(answer)).start_upload(TARGET.table("hosts"), BytesSource(GOOD))
    assert job == UpstreamJob(job_id="abc", location=None)


def test_a_relative_location_is_resolved_and_names_the_job() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, headers={"Location": "/resources/v2.1/alert-enrichments-jobs/j-9"})

    job = mock_client(httpx.MockTransport(answer)).start_upload(TARGET.table("hosts"), BytesSource(GOOD))
    assert job.job_id == "j-9"
    assert job.location == "https://api.example.test/resources/v2.1/alert-enrichments-jobs/j-9"


def test_a_202_without_any_job_is_reported_as_maybe_started() -> None:
    client = mock_client(httpx.MockTransport(lambda r: httpx.Response(202, json={})))
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(TARGET.table("hosts"), BytesSource(GOOD))
    assert caught.value.may_have_started


def test_a_long_400_body_is_truncated() -> None:
    client = mock_client(httpx.MockTransport(lambda r: httpx.Response(400, text="x" * 5000)))
    with pytest.raises(UpstreamError) as caught:
        client.start_upload(TARGET.table("hosts"), BytesSource(GOOD))
    assert caught.value.kind == "rejected"
    assert len(caught.value.message) < 700


def test_a_file_over_the_limit_is_refused_before_sending(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []
    target = dataclasses.replace(TARGET.targets["bp"], options={"max_file_bytes": 10})
    http = httpx.Client(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(202)))
    client = build_client(target, http, {"T": "tok"}, pacing=LimiterRegistry())
    with pytest.raises(UpstreamError, match="at most 10 bytes"):
        client.start_upload(TARGET.table("hosts"), BytesSource(GOOD))
    assert sent == []
