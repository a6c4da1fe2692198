"""Unit tests of the pure parts of `bot.service`'s step modules (no store, no network). The steps
themselves are tested end to end against real servers in tests/test_poller_*.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bot.config import TableConfig, parse_tables
from bot.service.due import intake_stranded, is_poller_work
from bot.service.gate import gate_key
from bot.service.left_behind import duration_text
from bot.service.notices import ending_metadata, step_for
from bot.service.parts import DONE, NO_JOB_ID, REFUSED, RUNNING, applied_note, decided_ending, part_label
from bot.store import Job, JobState, UpstreamPart
from bot.targets import LimiterRegistry, build_client

S = JobState
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

TABLES = parse_tables(
    {
        "targets": {
            "bp": {"kind": "bigpanda", "token_env": "T"},
            "dg": {"kind": "dengage", "userkey_env": "U", "password_env": "P"},
        },
        "tables": {
            "hosts": {"target": "bp", "enrichment_id": "enr-1"},
            "hosts-again": {"target": "bp", "enrichment_id": "enr-1"},
            "contacts": {"target": "dg", "table_name": "contacts", "columns": ["k", "v"], "primary_key": ["k"]},
            "events": {"target": "dg", "table_name": "events", "columns": ["k", "v"]},
            "fetched": {"target": "dg", "table_id": "tbl-9"},
        },
    }
)


def job(state: JobState, **changes: object) -> Job:
    fields: dict[str, object] = {
        "job_id": "j1",
        "delivery_key": "d1",
        "state": state,
        "version": 1,
        "table": "hosts",
        "target": "bp",
        "requested_by": "U1",
        "source": "slack",
        "file_name": "hosts.csv",
        "created_at": NOW,
        "updated_at": NOW,
        **changes,
    }
    return Job(**fields)  # type: ignore[arg-type]


def part(index: int, count: int, status: str, job_id: str = "up-1") -> UpstreamPart:
    return UpstreamPart(index=index, count=count, upstream_job_id=job_id, status=status)


# -- parts ---------------------------------------------------------------------------------------


def test_the_parts_decide_an_ending_only_when_one_failed_or_the_last_is_done() -> None:
    assert decided_ending(job(S.SUBMITTED, upstream_parts=(part(1, 2, DONE), part(2, 2, RUNNING)))) is None
    assert decided_ending(job(S.SUBMITTED, upstream_parts=(part(1, 2, DONE),))) is None
    assert decided_ending(job(S.SUBMITTED, upstream_parts=(part(1, 2, DONE), part(2, 2, DONE)))) is S.DONE
    assert decided_ending(job(S.UPLOADING, upstream_parts=(part(1, 1, REFUSED, NO_JOB_ID),))) is S.FAILED
    assert decided_ending(job(S.UPLOADING)) is None


def test_a_failure_message_says_which_parts_were_applied() -> None:
    assert applied_note([part(1, 1, "failed")], 1, 1) == ""
    parts = [part(1, 4, DONE), part(2, 4, DONE), part(3, 4, "failed")]
    assert applied_note(parts, 3, 4) == " (parts 1–2 were applied; parts 4–4 were not sent; Retry sends part 3 onwards)"
    assert applied_note([part(1, 2, "failed")], 1, 2) == (
        " (no part was applied; parts 2–2 were not sent; Retry sends part 1 onwards)"
    )
    assert part_label(2, 3) == "part 2 of 3"
    assert part_label(1, 1) == "the upload"


# -- due -----------------------------------------------------------------------------------------


def test_the_poller_works_on_its_states_pending_notices_and_watched_jobs_with_a_deadline() -> None:
    assert is_poller_work(job(S.QUEUED))
    assert not is_poller_work(job(S.DONE, notified=True))
    assert is_poller_work(job(S.DONE, notified=False, next_check_at=NOW))
    assert not is_poller_work(job(S.AWAITING_APPROVAL))
    assert is_poller_work(job(S.AWAITING_APPROVAL, next_check_at=NOW))


def test_an_intake_is_stranded_only_when_its_lease_ran_out_or_it_never_had_one_for_long() -> None:
    running = job(S.VALIDATING, lease_owner="intake:j1", lease_expires_at=NOW + timedelta(seconds=1))
    assert not intake_stranded(running, NOW, 960)
    expired = job(S.VALIDATING, lease_owner="intake:j1", lease_expires_at=NOW - timedelta(seconds=1))
    assert intake_stranded(expired, NOW, 960)
    never_leased = job(S.RECEIVED, updated_at=NOW - timedelta(seconds=959))
    assert not intake_stranded(never_leased, NOW, 960)
    assert intake_stranded(never_leased, NOW + timedelta(seconds=1), 960)
    assert not intake_stranded(job(S.QUEUED, updated_at=NOW - timedelta(days=1)), NOW, 960)


# -- gate and sending ----------------------------------------------------------------------------


def test_two_aliases_of_one_upstream_table_share_its_gate() -> None:
    assert gate_key(TABLES.table("hosts")) == gate_key(TABLES.table("hosts-again")) == "bp:enr-1"
    assert gate_key(TABLES.table("fetched")) == "dg:tbl-9"


def resend_is_safe(table: TableConfig) -> bool:
    """The target client's answer (no request is made)."""
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    client = build_client(table.target, http, {"T": "t", "U": "u", "P": "p"}, pacing=LimiterRegistry())
    return client.resend_is_safe(table)


def test_an_interrupted_send_is_resent_only_where_a_second_send_changes_nothing() -> None:
    assert resend_is_safe(TABLES.table("hosts"))  # BigPanda replaces the table
    assert resend_is_safe(TABLES.table("contacts"))  # upserted by its primary key
    assert not resend_is_safe(TABLES.table("events"))  # appended: rows would be added twice
    assert not resend_is_safe(TABLES.table("fetched"))  # schema unknown here: assume appended


# -- notices and left-behind jobs ----------------------------------------------------------------


def test_a_retry_ending_is_another_notice_than_the_first_attempts() -> None:
    first = ending_metadata(job(S.FAILED, attempts=1), S.FAILED)
    second = ending_metadata(job(S.FAILED, attempts=2), S.FAILED)
    assert first["event_type"] == second["event_type"] == "tablebot_job_ending"
    assert first["event_payload"] == {"job_id": "j1", "ending": "failed", "attempt": 1}
    assert first != second


@pytest.mark.parametrize(
    ("state", "step"),
    [(S.DONE, "done"), (S.FAILED, "failed"), (S.TIMED_OUT, "timed_out"), (S.CANCELLED, "cancelled")],
)
def test_each_ending_has_its_step(state: JobState, step: str) -> None:
    assert step_for(state) == step


def test_waits_and_approvers_are_worded_for_people() -> None:
    assert duration_text(86400) == "24 h"
    assert duration_text(5400) == "1.5 h"
    assert duration_text(600) == "10 min"
    assert duration_text(45) == "45 s"
