"""The emulators' own behaviour, spoken to with plain httpx (no bot client in between)."""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.sandbox.dengage import split_file_content
from devtools.sandbox.server import BadRequest
from tests.fixtures_upstream import Upstream

ROOT = Path(__file__).resolve().parent.parent
BP_AUTH = {"Authorization": "Bearer demo-bigpanda-token"}
MAP = "/resources/v2.1/mapping-enrichment/demo/map"


def bp_post(upstream: Upstream, body: bytes | Iterator[bytes], **headers: str) -> httpx.Response:
    return httpx.post(
        upstream.server.root_url + MAP,
        content=body,
        headers={**BP_AUTH, "Content-Type": "text/csv; charset=utf8", **headers},
    )


def test_bigpanda_accepts_a_chunked_body(bigpanda_upstream: Upstream) -> None:
    rows = [b"host,service,owner\n"] + [f"h{i},s,o\n".encode() for i in range(2000)]
    response = bp_post(bigpanda_upstream, iter(rows))  # an iterator without length: chunked
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 5
    while not bigpanda_upstream.admin.table("demo")["exists"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stored = bigpanda_upstream.admin.table("demo", limit=1)
    assert stored["row_count"] == 2000 and stored["bytes"] == sum(map(len, rows))


def test_bigpanda_names_the_broken_title_of_a_crlf_file(bigpanda_upstream: Upstream) -> None:
    response = bp_post(bigpanda_upstream, b"host,service,owner\r\nh,s,o\r\n")
    assert response.status_code == 400
    assert "'owner\\r'" in response.json()["message"]


def test_bigpanda_refuses_a_body_over_the_limit_and_stays_usable(bigpanda_upstream: Upstream) -> None:
    bigpanda_upstream.admin.settings(max_file_bytes=100)
    with httpx.Client() as http:
        too_big = http.post(
            bigpanda_upstream.server.root_url + MAP,
            content=b"host,service,owner\n" + b"h,s,o\n" * 100,
            headers={**BP_AUTH, "Content-Type": "text/csv"},
        )
        assert too_big.status_code == 400 and "cannot be more than 100 bytes" in too_big.text
        after = http.get(bigpanda_upstream.server.root_url + "/resources/v2.1/mapping-enrichment/demo", headers=BP_AUTH)
        assert after.status_code == 200


def test_bigpanda_limits_requests_per_token(bigpanda_upstream: Upstream) -> None:
    url = bigpanda_upstream.server.root_url + "/resources/v2.1/mapping-enrichment/demo"
    with httpx.Client() as http:
        statuses = [http.get(url, headers=BP_AUTH).status_code for _ in range(8)]
        other = http.get(url, headers={"Authorization": "Bearer nobody"}).status_code
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    assert other == 401  # another organization has its own budget


def test_bigpanda_jobs_that_never_finish(bigpanda_upstream: Upstream) -> None:
    bigpanda_upstream.admin.fault("job_stuck")
    response = bp_post(bigpanda_upstream, b"host,service,owner\nh,s,o\n")
    time.sleep(0.6)  # twice the job duration
    job = httpx.get(response.headers["Location"], headers=BP_AUTH).json()
    assert job["status"] == "started"
    assert bigpanda_upstream.admin.table("demo")["exists"] is False


def login(upstream: Upstream, http: httpx.Client) -> dict[str, str]:
    answer = http.post(upstream.base_url + "/login", json={"userkey": "demo-userkey", "password": "demo-password"})
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def upsert(upstream: Upstream, http: httpx.Client, auth: dict[str, str], body: bytes) -> httpx.Response:
    return http.post(upstream.base_url + "/dataspace/async/upsert", content=body, headers=auth)


def events_request(content: str, table: str = "demo_events") -> bytes:
    mapping = [{"tableColumn": c, "fileColumnHeader": c} for c in ("event", "happened_at", "amount")]
    return json.dumps({"tableName": table, "columnMapping": mapping, "fileContent": content}).encode()


def test_dengage_refuses_bad_base64_with_a_code(dengage_upstream: Upstream, http: httpx.Client) -> None:
    auth = login(dengage_upstream, http)
    response = upsert(dengage_upstream, http, auth, events_request("not base64!"))
    assert response.status_code == 400
    assert response.json()["code"] != 0 and "base64" in response.json()["message"]


def test_dengage_allows_one_call_a_minute_per_table(dengage_upstream: Upstream, http: httpx.Client) -> None:
    dengage_upstream.admin.settings(table_call_spacing_seconds=60)
    auth = login(dengage_upstream, http)
    content = base64.b64encode(b"event,happened_at,amount\na,,\n").decode()
    assert upsert(dengage_upstream, http, auth, events_request(content)).status_code == 200
    assert upsert(dengage_upstream, http, auth, events_request(content)).status_code == 429
    other = json.dumps(
        {
            "tableName": "demo_contacts",
            "columnMapping": [{"tableColumn": c, "fileColumnHeader": c} for c in ("contact_key", "email", "city")],
            "fileContent": base64.b64encode(b"contact_key,email,city\nk,,\n").decode(),
        }
    ).encode()
    assert upsert(dengage_upstream, http, auth, other).status_code == 200  # another table is free


def test_dengage_refuses_master_contact_and_oversized_requests(dengage_upstream: Upstream, http: httpx.Client) -> None:
    dengage_upstream.admin.define_table("master_contact", {"columns": ["contact_key"]})
    auth = login(dengage_upstream, http)
    content = base64.b64encode(b"contact_key\nk\n").decode()
    body = json.dumps(
        {
            "tableName": "master_contact",
            "columnMapping": [{"tableColumn": "contact_key", "fileColumnHeader": "contact_key"}],
            "fileContent": content,
        }
    ).encode()
    refused = upsert(dengage_upstream, http, auth, body)
    assert refused.status_code == 400 and "master_contact" in refused.json()["message"]
    dengage_upstream.admin.settings(max_request_bytes=50)
    assert upsert(dengage_upstream, http, auth, body).status_code == 413


def test_dengage_without_token_is_not_authenticated(dengage_upstream: Upstream, http: httpx.Client) -> None:
    response = http.get(dengage_upstream.base_url + "/dataspace/tables?limit=10")
    assert response.status_code == 401
    assert response.json()["message"] == "Not-authenticated. Please re-login."


def test_dengage_table_listing_checks_the_limit(dengage_upstream: Upstream, http: httpx.Client) -> None:
    auth = login(dengage_upstream, http)
    assert http.get(dengage_upstream.base_url + "/dataspace/tables?limit=5", headers=auth).status_code == 400
    listing = http.get(dengage_upstream.base_url + "/dataspace/tables?limit=10", headers=auth).json()["data"]
    # The shape public D·engage client code reads: data.result and data.totalRowCount.
    assert {t["tableName"] for t in listing["result"]} == {"demo_contacts", "demo_events"}
    assert listing["totalRowCount"] == 2


@pytest.mark.parametrize(
    "body",
    [
        b'{"fileContent": "YWJj\\/\\/\\/\\/", "tableName": "t"}',
        b'{"tableName": "t", "jobName": "\\"fileContent\\"", "fileContent"  :  "YWJj////"}',
        b'{"tableName": "t", "columnMapping": [{"fileContent": "x"}], "fileContent": "YWJj////"}',
    ],
)
def test_split_file_content_streams_the_value_out(body: bytes) -> None:
    out = io.BytesIO()
    meta = split_file_content(io.BytesIO(body), out)
    assert meta["tableName"] == "t" and meta["fileContent"] == ""
    assert out.getvalue() == base64.b64decode("YWJj////")


@pytest.mark.parametrize("body", [b'{"tableName": "t"}', b'{"fileContent": "YWJ"}', b'{"fileContent": "YW', b"[1]"])
def test_split_file_content_refuses_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        split_file_content(io.BytesIO(body), io.BytesIO())


def test_the_sandbox_command_prints_its_url_and_serves(tmp_path: Path) -> None:
    settings = tmp_path / "sandbox.toml"
    settings.write_text('users = { ops = "s3cret" }\n[tables.orders]\ncolumns = [{ name = "id", primary = true }]\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "sandbox", "dengage", "--settings", str(settings)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C stops it below; a shell's background job would start it with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/rest")
        with httpx.Client() as http:
            token = http.post(base_url + "/login", json={"userkey": "ops", "password": "s3cret"}).json()
            auth = {"Authorization": f"Bearer {token['access_token']}"}
            tables = http.get(base_url + "/dataspace/tables?limit=10", headers=auth).json()["data"]["result"]
        assert [t["tableName"] for t in tables] == ["orders"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_the_sandbox_command_reports_a_bad_settings_file(tmp_path: Path) -> None:
    settings = tmp_path / "sandbox.toml"
    settings.write_text("job_secondz = 3\n")
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "sandbox", "bigpanda", "--settings", str(settings)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "unknown sandbox setting 'job_secondz'" in done.stderr
    assert "Traceback" not in done.stderr
