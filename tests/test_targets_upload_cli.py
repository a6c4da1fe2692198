"""`tablebot upload` end to end against the sandboxes: validate, upload, wait, exit code."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from bot.cli import main
from bot.store import create_table
from tests.fixtures_upstream import Upstream, write_tables_file
from tests.store_support import dynamodb_client

HOSTS = b"host,service,owner\nweb-1,checkout,team-a\nweb-2,search,team-b\n"
EVENTS = b"event,happened_at,amount\nlogin,2024-05-01 10:00:00,1.5\n"


@pytest.fixture
def tables_path(
    tmp_path: Path, bigpanda_upstream: Upstream, dengage_upstream: Upstream, sandbox_env: dict[str, str]
) -> Path:
    return write_tables_file(
        tmp_path / "tables.toml",
        bigpanda_url=bigpanda_upstream.base_url,
        dengage_url=dengage_upstream.base_url,
        extra_tables='[tables.hosts_remote]\ntarget = "bp"\nenrichment_id = "demo"\n',
    )


def upload(tmp_path: Path, tables: Path, table: str, content: bytes, *extra: str) -> list[str]:
    path = tmp_path / f"{table}.csv"
    path.write_bytes(content)
    return [
        "upload",
        str(path),
        "--table",
        table,
        "--config",
        str(tables),
        "--format",
        "json",
        "--poll-interval",
        "0.05",
        "--timeout",
        "30",
        *extra,
    ]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object], str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else {}, err


def test_done_exits_0_and_the_normalized_bytes_land(
    tmp_path: Path, tables_path: Path, bigpanda_upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    messy = b"\xef\xbb\xbf" + HOSTS.replace(b"\n", b"\r\n").rstrip(b"\r\n")  # BOM, CRLF, no final newline
    code, result, err = run(upload(tmp_path, tables_path, "hosts", messy, "--wait"), capsys)
    assert code == 0, err
    assert result["state"] == "done" and result["exit_code"] == 0
    stored = bigpanda_upstream.admin.table("demo")
    assert stored["sha256"] == hashlib.sha256(HOSTS).hexdigest() == result["sha256"]
    assert "is done" in err  # progress went to stderr


def test_without_wait_the_job_is_started(tmp_path: Path, tables_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = run(upload(tmp_path, tables_path, "hosts", HOSTS), capsys)
    assert code == 0
    assert result["state"] == "started"
    jobs = result["jobs"]
    assert isinstance(jobs, list) and len(jobs) == 1


def test_the_schema_is_fetched_upstream_when_the_tables_file_has_none(
    tmp_path: Path, tables_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result, err = run(upload(tmp_path, tables_path, "hosts_remote", HOSTS, "--wait"), capsys)
    assert code == 0, err
    assert result["columns"] == ["host", "service", "owner"]


def test_invalid_exits_1_and_sends_nothing(
    tmp_path: Path, tables_path: Path, bigpanda_upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result, _ = run(upload(tmp_path, tables_path, "hosts", b"host,service\nweb-1,checkout\n"), capsys)
    assert code == 1
    assert result["state"] == "invalid" and result["valid"] is False
    assert bigpanda_upstream.admin.requests("/map") == []


def test_a_failed_job_exits_3(
    tmp_path: Path, tables_path: Path, dengage_upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    dengage_upstream.admin.fault("job_failed")
    code, result, err = run(upload(tmp_path, tables_path, "events", EVENTS, "--wait"), capsys)
    assert code == 3
    assert result["state"] == "failed"
    assert "failed" in err


def test_a_refusal_upstream_exits_3_with_the_vendor_text(
    tmp_path: Path, tables_path: Path, bigpanda_upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    bigpanda_upstream.admin.define_table("demo", {"query": ["host"], "result": ["service", "owner", "region"]})
    code, result, err = run(upload(tmp_path, tables_path, "hosts", HOSTS, "--wait"), capsys)
    assert code == 3
    assert "missing ['region']" in str(result["message"]) and "missing ['region']" in err


def test_unreachable_exits_4(tmp_path: Path, sandbox_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    tables = write_tables_file(tmp_path / "tables.toml")  # port 9: nothing listens
    code, result, err = run(upload(tmp_path, tables, "hosts", HOSTS, "--wait"), capsys)
    assert code == 4
    assert result["state"] == "unreachable"
    assert "could not be reached" in err


def test_a_missing_credential_exits_2_naming_the_variable(
    tmp_path: Path, tables_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TEST_BIGPANDA_TOKEN")
    code = main(upload(tmp_path, tables_path, "hosts", HOSTS))
    assert code == 2
    assert "TEST_BIGPANDA_TOKEN is not set" in capsys.readouterr().err


def test_dengage_parts_are_sent_one_after_the_other(
    tmp_path: Path, dengage_upstream: Upstream, sandbox_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    dengage_upstream.admin.settings(max_request_bytes=3000)
    tables = write_tables_file(
        tmp_path / "tables.toml", dengage_url=dengage_upstream.base_url, extra_target="max_request_bytes = 3000"
    )
    rows = b"".join(f"e{i},2024-05-01 10:00:00,{i}\n".encode() for i in range(200))
    code, result, err = run(upload(tmp_path, tables, "events", b"event,happened_at,amount\n" + rows, "--wait"), capsys)
    assert code == 0, err
    jobs = result["jobs"]
    assert isinstance(jobs, list) and len(jobs) > 1
    assert all(j["state"] == "done" for j in jobs)
    assert dengage_upstream.admin.table("demo_events")["row_count"] == 200


def test_with_the_deployments_store_named_the_upload_books_its_requests_there(
    tmp_path: Path,
    tables_path: Path,
    dynamodb_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A pipeline's `tablebot upload` shares the vendors' limits with the bot's containers."""
    admin = dynamodb_client(dynamodb_endpoint)
    table = f"cli-{uuid.uuid4().hex[:10]}"
    create_table(admin, table)
    for key, value in {
        "TABLEBOT_JOBS_TABLE": table,
        "AWS_ENDPOINT_URL": dynamodb_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        code, _, err = run(upload(tmp_path, tables_path, "hosts", HOSTS, "--wait"), capsys)
        assert code == 0, err
        items = admin.scan(TableName=table)["Items"]
        keys = [i["pk"]["S"] for i in items if i["pk"]["S"].startswith("RATE#")]
        assert len(keys) == 1 and keys[0].startswith("RATE#rps|bigpanda|") and keys[0].endswith("|TEST_BIGPANDA_TOKEN")
    finally:
        admin.delete_table(TableName=table)
