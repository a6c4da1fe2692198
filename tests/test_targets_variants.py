"""The clients against answers the real services may give (docs/upstream-apis.md): each case runs `tablebot upload --wait` (or the client) against the sandboxes over HTTP,
set to the variant, on both targets where the case applies to both.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cli import main
from bot.config import load_tables_file
from bot.targets import LimiterRegistry, UpstreamError, build_client
from bot.targets.runner import run_upload
from tests.fixtures_upstream import PART_SPACING, SANDBOX_ENV, Upstream, write_tables_file

HOSTS = b"host,service,owner\nweb-1,checkout,team-a\nweb-2,search,team-b\n"
CONTACTS = b"contact_key,email,city\nk1,a@example.com,Paris\n"
EVENTS = b"event,happened_at,amount\nlogin,2024-05-01 10:00:00,1.5\n"
# One table per target: (alias, file, sandbox fixture name)
TARGETS = {"bigpanda": ("hosts", HOSTS), "dengage": ("contacts", CONTACTS)}


@pytest.fixture
def upstreams(bigpanda_upstream: Upstream, dengage_upstream: Upstream) -> dict[str, Upstream]:
    return {"bigpanda": bigpanda_upstream, "dengage": dengage_upstream}


@dataclass
class Cli:
    """`tablebot upload --wait` against both sandboxes (the demo credentials in the environment)."""

    tmp_path: Path
    upstreams: dict[str, Upstream]
    capsys: pytest.CaptureFixture[str]

    def tables(self, extra_target: str = "") -> Path:
        return tables_file(self.tmp_path, self.upstreams, extra_target)

    def upload(self, target: str, *, extra_target: str = "", timeout: float = 30) -> tuple[int, dict[str, Any], str]:
        alias, content = TARGETS[target]
        return upload(self.tmp_path, self.tables(extra_target), alias, content, self.capsys, timeout=timeout)


@pytest.fixture
def cli(
    tmp_path: Path, upstreams: dict[str, Upstream], sandbox_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> Cli:
    return Cli(tmp_path, upstreams, capsys)


def tables_file(tmp_path: Path, upstreams: dict[str, Upstream], extra_target: str = "") -> Path:
    return write_tables_file(
        tmp_path / "tables.toml",
        bigpanda_url=upstreams["bigpanda"].base_url,
        dengage_url=upstreams["dengage"].base_url,
        extra_target=extra_target,
    )


def upload(
    tmp_path: Path,
    tables: Path,
    table: str,
    content: bytes,
    capsys: pytest.CaptureFixture[str],
    *,
    timeout: float = 30,
) -> tuple[int, dict[str, Any], str]:
    path = tmp_path / f"{table}.csv"
    path.write_bytes(content)
    argv = ["upload", str(path), "--table", table, "--config", str(tables), "--format", "json", "--wait"]
    code = main([*argv, "--poll-interval", "0.05", "--timeout", str(timeout)])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


# --- 1. envelopes -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["data_result", "data_items", "bare_list", "list"])
def test_a_table_named_by_table_name_is_found_in_every_list_shape_across_short_pages(
    shape: str,
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    sandbox_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin = upstreams["dengage"].admin
    # The table is defined last, behind 25 others; the server sends at most 10 rows a page
    # although the client asks for 1000: a short page must not end the listing.
    columns = [{"name": "contact_key", "type": "TEXT", "primary": True}, {"name": "email"}, {"name": "city"}]
    for i in range(25):
        admin.define_table(f"other_{i:02d}", {"columns": columns})
    admin.define_table("late_contacts", {"columns": columns})
    admin.settings(tables_shape=shape, tables_page_max=10)
    tables = write_tables_file(
        tmp_path / "tables.toml",
        dengage_url=upstreams["dengage"].base_url,
        extra_tables='[tables.late]\ntarget = "dg"\ntable_name = "late_contacts"\n',
    )
    code, result, err = upload(tmp_path, tables, "late", CONTACTS, capsys)
    if shape in ("data_result", "data_items"):
        assert code == 0, err
        assert result["state"] == "done"
        listed = admin.requests("/dataspace/tables", method="GET")
        assert len([r for r in listed if r["path"].endswith("/tables")]) == 3  # 10 + 10 + 8 of 28
    else:
        # A bare list has no total: the client pages until an empty page.
        assert code == 0, err


@pytest.mark.parametrize(
    "shape", ["data_object", "data_string", "top_level", "transaction_id", "top_transaction_id", "bare_string"]
)
def test_dengage_every_job_id_shape_is_followed_to_done(shape: str, cli: Cli) -> None:
    cli.upstreams["dengage"].admin.settings(response_shape=shape)
    code, result, err = cli.upload("dengage")
    assert code == 0, err
    assert result["jobs"][0]["job_id"] == cli.upstreams["dengage"].admin.jobs()[0]["id"]


@pytest.mark.parametrize(("job_shape", "location"), [("bare", True), ("bare", False), ("data", False)])
def test_bigpanda_job_object_bare_or_under_data_with_or_without_location(
    job_shape: str, location: bool, cli: Cli
) -> None:
    cli.upstreams["bigpanda"].admin.settings(job_shape=job_shape, location_header=location)
    code, result, err = cli.upload("bigpanda")
    assert code == 0, err
    assert result["jobs"][0]["upstream_status"] is not None


# --- 2. status words as families ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "settings", "word"),
    [
        ("bigpanda", {"status_case": "upper"}, "DONE"),
        ("bigpanda", {"status_words": {"done": "COMPLETED"}}, "COMPLETED"),
        ("bigpanda", {"status_case": "title"}, "Done"),
        ("dengage", {"status_words": {"done": "Success"}}, "Success"),
        ("dengage", {"status_case": "upper"}, "COMPLETED"),
        ("dengage", {"status_words": {"done": "Done", "running": "Processing"}}, "Done"),
    ],
)
def test_done_in_any_word_and_case_is_done(target: str, settings: dict[str, Any], word: str, cli: Cli) -> None:
    cli.upstreams[target].admin.settings(**settings)
    code, result, err = cli.upload(target)
    assert code == 0, err
    assert result["jobs"][0]["upstream_status"] == word


@pytest.mark.parametrize(
    ("target", "settings", "word"),
    [
        ("bigpanda", {"status_words": {"failed": "FAILED"}, "failure_text_field": "error"}, "FAILED"),
        ("bigpanda", {"status_words": {"failed": "Error"}, "failure_text_field": "message"}, "Error"),
        ("bigpanda", {"status_words": {"failed": "Cancelled"}, "failure_text_field": "reason"}, "Cancelled"),
        ("dengage", {"status_words": {"failed": "Error"}, "failure_text_field": "message"}, "Error"),
        ("dengage", {"status_case": "upper", "failure_text_field": "errors"}, "FAILED"),
    ],
)
def test_failed_in_any_word_is_failed_with_the_jobs_own_text(
    target: str, settings: dict[str, Any], word: str, cli: Cli
) -> None:
    cli.upstreams[target].admin.settings(**settings)
    cli.upstreams[target].admin.fault("job_failed")
    code, result, _ = cli.upload(target)
    assert code == 3
    assert result["state"] == "failed" and result["may_have_started"] is True
    assert result["jobs"][0]["upstream_status"] == word
    assert "injected job failure" in result["message"]  # the vendor's own text, not "without a reason"


def test_a_partial_completion_with_row_errors_is_failed_with_the_errors(
    upstream_tables: Any, dengage_upstream: Upstream, http: httpx.Client, tmp_path: Path
) -> None:
    dengage_upstream.admin.settings(row_errors_status="PartiallyCompleted")
    client = build_client(upstream_tables.targets["dg"], http, SANDBOX_ENV, pacing=LimiterRegistry())
    path = tmp_path / "events.csv"
    path.write_bytes(b"event,happened_at,amount\nlogin,01/05/2024,1\n")  # a date the vendor refuses
    result = run_upload(client, upstream_tables.table("events"), path, wait=True, poll_interval=0.05, timeout=20)
    assert result.outcome == "failed"
    report = result.to_dict()["jobs"][0]  # type: ignore[index]
    assert report["upstream_status"] == "PartiallyCompleted"
    assert result.message is not None and "1 row error" in result.message and "01/05/2024" in result.message


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_an_unknown_word_is_kept_told_after_a_few_reads_and_ends_at_the_timeout_as_started(
    target: str, cli: Cli
) -> None:
    cli.upstreams[target].admin.settings(status_words={"done": "Finito"})
    code, result, err = cli.upload(target, timeout=1.5)
    assert code == 3
    assert result["state"] == "timed_out"
    assert result["may_have_started"] is True  # it started: never "false" after an upstream job id
    job = result["jobs"][0]
    assert job["upstream_status"] == "Finito" and job["upstream_status_known"] is False
    label = "BigPanda" if target == "bigpanda" else "D·engage"
    assert f"{label} answers status 'Finito', which the bot does not know; still checking until" in err
    assert err.count("which the bot does not know; still checking") == 1  # told once, not every read
    assert "'Finito', a word the bot does not know" in result["message"]


# --- 3. transient status reads ------------------------------------------------------------------


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_a_404_right_after_creation_is_tolerated(target: str, cli: Cli) -> None:
    cli.upstreams[target].admin.settings(status_not_found_seconds=0.2, location_header=False)
    code, result, err = cli.upload(target)
    assert code == 0, err
    assert "404" in err and "still checking for up to" in err
    statuses = [r["status"] for r in cli.upstreams[target].admin.requests(result["jobs"][0]["job_id"])]
    assert statuses[0] == 404 and statuses[-1] == 200


@pytest.mark.parametrize(("target", "fault"), [("dengage", "code_error"), ("dengage", "html"), ("bigpanda", "html")])
def test_a_code_error_or_an_html_page_on_a_status_read_is_tolerated(target: str, fault: str, cli: Cli) -> None:
    admin = cli.upstreams[target].admin
    admin.settings(job_seconds=0.6)
    path = "/alert-enrichments-jobs/" if target == "bigpanda" else "/dataspace/async/upsert/"
    admin.fault(fault, count=2, path=path, method="GET")
    code, result, err = cli.upload(target)
    assert code == 0, err
    assert result["state"] == "done"
    assert ("code 999" if fault == "code_error" else "text/html") in err


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_after_the_grace_period_the_job_fails_saying_what_was_seen(target: str, cli: Cli) -> None:
    cli.upstreams[target].admin.settings(status_not_found_seconds=60, location_header=False)
    code, result, _ = cli.upload(target, extra_target="status_grace_seconds = 0.4")
    assert code == 3
    assert result["state"] == "failed" and result["may_have_started"] is True
    assert "could not be read for" in result["message"] and "the grace period is 0.4 s" in result["message"]
    assert "404" in result["message"]
    if target == "dengage":  # the undocumented status path is named, with where to change it
        assert "`status_path` under [targets.dg] is /dataspace/async/upsert/{job_id}" in result["message"]


# --- 4. errors by their cause -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_a_403_with_action_result_says_the_address_is_not_allowed(target: str, cli: Cli) -> None:
    cli.upstreams[target].admin.settings(allowed_addresses=["10.20.30.40"])
    code, result, _ = cli.upload(target)
    assert code == 3
    message = result["message"]
    assert "the address the bot calls from is not allowed" in message
    assert "IP address 127.0.0.1 is not in the allowed IP list" in message  # the vendor's reason
    assert "password" not in message.split("allow-list")[0]  # not "check the user key and password"


def test_dengage_a_403_on_login_is_not_reported_as_a_wrong_password() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"code": 10, "message": "Forbidden", "actionResult": "IP 1.2.3.4 refused"})

    tables = load_tables_file(_mock_tables())
    client = build_client(
        tables.targets["dg"], httpx.Client(transport=httpx.MockTransport(answer)), SANDBOX_ENV, pacing=LimiterRegistry()
    )
    with pytest.raises(UpstreamError) as caught:
        client.fetch_schema(tables.table("contacts"))
    assert caught.value.kind == "address_not_allowed"
    assert "IP 1.2.3.4 refused" in caught.value.message and "the credentials were not checked" in caught.value.message


def _mock_tables() -> Path:
    import tempfile

    return write_tables_file(Path(tempfile.mkdtemp()) / "tables.toml", dengage_url="https://dengage.test/rest")


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_429_waits_for_retry_after(target: str, cli: Cli) -> None:
    admin = cli.upstreams[target].admin
    admin.settings(retry_after="0.3")
    path = "/map" if target == "bigpanda" else "/dataspace/async/upsert"
    admin.fault("429", count=1, path=path, method="POST")
    # 0.3 s is more than the tables file's max_retry_after_seconds (0.05): the sender hands the wait
    # to the runner, which waits it out within --timeout and sends again (a 429 applied nothing).
    code, _, err = cli.upload(target)
    assert code == 0, err
    sends = admin.requests(path, method="POST")
    assert [r["status"] for r in sends][:2] == [429, 200 if target == "dengage" else 202]
    assert sends[1]["time"] - sends[0]["time"] >= 0.3


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_a_429_longer_than_the_timeout_is_rate_limited_exit_3_never_unreachable(target: str, cli: Cli) -> None:
    admin = cli.upstreams[target].admin
    admin.settings(retry_after="600")
    admin.fault("429", count=1, path="/map" if target == "bigpanda" else "/dataspace/async/upsert", method="POST")
    code, result, err = cli.upload(target, timeout=5)
    assert code == 3
    assert result["state"] == "rate_limited"
    assert "rate limited" in result["message"] and "Retry-After 600 s" in result["message"]
    assert "unreachable" not in err and "could not be reached" not in err


def test_dengage_a_429_without_retry_after_waits_for_the_tables_next_minute(
    upstream_tables: Any, dengage_upstream: Upstream, http: httpx.Client, tmp_path: Path
) -> None:
    # The sandbox allows one call per 0.6 s on a table and sends no Retry-After; the client's own
    # spacing (0.3 s) is shorter, so its second call is refused and must wait the table's spacing.
    dengage_upstream.admin.settings(table_call_spacing_seconds=0.6, retry_after="")
    client = build_client(upstream_tables.targets["dg"], http, SANDBOX_ENV, pacing=LimiterRegistry())
    table = upstream_tables.table("contacts")
    path = tmp_path / "c.csv"
    path.write_bytes(CONTACTS)
    for _ in range(2):
        result = run_upload(client, table, path, wait=True, poll_interval=0.05, timeout=20)
        assert result.outcome == "done", result.message
    sends = dengage_upstream.admin.requests("/dataspace/async/upsert", method="POST")
    assert [r["status"] for r in sends] == [200, 429, 200]
    assert all(b["time"] - a["time"] >= PART_SPACING * 0.95 for a, b in itertools.pairwise(sends))


def test_a_start_refused_by_429_is_retried_by_the_runner_within_the_timeout(
    upstream_tables: Any, bigpanda_upstream: Upstream, http: httpx.Client, tmp_path: Path
) -> None:
    bigpanda_upstream.admin.settings(retry_after="0.2")
    bigpanda_upstream.admin.fault("429", count=1, path="/map")
    client = build_client(upstream_tables.targets["bp"], http, SANDBOX_ENV, pacing=LimiterRegistry())
    path = tmp_path / "h.csv"
    path.write_bytes(HOSTS)
    lines: list[str] = []
    result = run_upload(
        client, upstream_tables.table("hosts"), path, wait=True, poll_interval=0.05, timeout=20, progress=lines.append
    )
    assert result.outcome == "done", result.message
    assert any("rate limited" in line and "waiting" in line for line in lines)
