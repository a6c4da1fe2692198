"""The operators' command line against the configured store (SQLite, and DynamoDB Local with the
functions' settings): `tablebot jobs | status | quarantine | replay`, each refusing what the
job's state does not allow (exit 2)."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.store import DynamoJobStore, Job, JobState, JobStore, SqliteJobStore, create_table
from tests.store_support import dynamodb_client, new_job

S = JobState


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobStore]:
    for name in ("TABLEBOT_JOBS_TABLE", "TABLEBOT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "sqlite":
        path = tmp_path / "jobs.sqlite3"
        monkeypatch.setenv("TABLEBOT_STORE_PATH", str(path))
        store = SqliteJobStore(path)
        yield store
        store.close()
        return
    endpoint = request.getfixturevalue("dynamodb_endpoint")
    table = f"ops-{uuid.uuid4().hex[:10]}"
    admin = dynamodb_client(endpoint)
    create_table(admin, table)
    # What the functions are given: the table's name; boto3 finds the endpoint and credentials.
    for name, value in {
        "TABLEBOT_JOBS_TABLE": table,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    yield DynamoJobStore(dynamodb_client(endpoint), table)
    admin.delete_table(TableName=table)


def walk(store: JobStore, job: Job, *states: JobState) -> Job:
    for state in states:
        job = store.transition(job, state, actor="front", reason=f"to {state}")
    return job


def queued(store: JobStore, table: str = "hosts", n: int = 0) -> Job:
    job, _ = store.create_job(f"Ev-{uuid.uuid4().hex}", new_job(table, file_name=f"{table}-{n}.csv"))
    return walk(store, job, S.VALIDATING, S.QUEUED)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_jobs_lists_the_latest_and_those_in_flight(store: JobStore, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = queued(store, "hosts")
    contacts = queued(store, "contacts")
    ended = walk(store, queued(store, "hosts", 2), S.CANCELLED)

    code, out, _ = run(capsys, "jobs")
    assert code == 0
    assert all(j.job_id in out for j in (hosts, contacts, ended))
    code, out, _ = run(capsys, "jobs", "--table", "contacts", "--format", "json")
    assert code == 0 and [j["job_id"] for j in json.loads(out)] == [contacts.job_id]
    code, out, _ = run(capsys, "jobs", "--open")
    assert code == 0 and hosts.job_id in out and contacts.job_id in out and ended.job_id not in out


def test_status_shows_the_job_and_its_whole_history(store: JobStore, capsys: pytest.CaptureFixture[str]) -> None:
    job = queued(store)
    code, out, _ = run(capsys, "status", job.job_id)
    assert code == 0
    assert f"job {job.job_id}: queued" in out
    assert "received → validating" in out and "validating → queued" in out
    code, out, _ = run(capsys, "status", job.job_id, "--format", "json")
    assert [h["to"] for h in json.loads(out)["history"]] == ["received", "validating", "queued"]
    code, _, err = run(capsys, "status", "20300101T000000Z-000000000000")
    assert code == 2 and "not found" in err


def test_quarantine_then_replay_and_each_refused_when_the_state_does_not_allow(
    store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    job = queued(store)
    code, out, _ = run(capsys, "quarantine", job.job_id, "--reason", "the vendor is looking at it")
    assert code == 0 and "quarantined" in out
    held = store.get_job(job.job_id)
    assert held.quarantined == "the vendor is looking at it" and held.next_check_at is None
    assert job.job_id not in [j.job_id for j in store.due_jobs()]

    code, _, err = run(capsys, "quarantine", job.job_id)
    assert code == 2 and "already quarantined" in err
    code, out, _ = run(capsys, "jobs", "--quarantined")
    assert code == 0 and job.job_id in out and "QUARANTINED" in out

    code, out, _ = run(capsys, "replay", job.job_id)
    assert code == 0 and "due now" in out
    assert job.job_id in [j.job_id for j in store.due_jobs()]
    code, _, err = run(capsys, "replay", job.job_id)
    assert code == 2 and "not quarantined" in err

    code, out, _ = run(capsys, "status", job.job_id)
    assert "quarantined by cli:" in out and "replayed by cli:" in out

    waiting, _ = store.create_job("Ev-wait", new_job())
    waiting = walk(store, waiting, S.VALIDATING, S.AWAITING_APPROVAL)
    code, _, err = run(capsys, "quarantine", waiting.job_id)
    assert code == 2 and "cancel it in Slack" in err

    ended = walk(store, queued(store, n=3), S.CANCELLED)
    code, _, err = run(capsys, "quarantine", ended.job_id)
    assert code == 2 and "has ended" in err


def _set_state(store: JobStore, job: Job, state: str) -> None:
    """Write a state word into the stored record beneath the store (a hand edit, a bad deploy)."""
    if isinstance(store, SqliteJobStore):
        conn = sqlite3.connect(store.path)
        (raw,) = conn.execute("SELECT record FROM jobs WHERE job_id = ?", (job.job_id,)).fetchone()
        record = {**json.loads(raw), "state": state}
        conn.execute("UPDATE jobs SET record = ? WHERE job_id = ?", (json.dumps(record), job.job_id))
        conn.commit()
        conn.close()
        return
    assert isinstance(store, DynamoJobStore)
    client = dynamodb_client(os.environ["AWS_ENDPOINT_URL"])
    client.update_item(
        TableName=store.table_name,
        Key={"pk": {"S": f"JOB#{job.job_id}"}, "sk": {"S": "JOB"}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": state}},
    )


def test_a_damaged_record_is_shown_and_not_replayed_until_repaired(
    store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    job = queued(store)
    _set_state(store, job, "exploded")
    assert store.due_jobs().quarantined  # the poller's read quarantines it

    code, out, _ = run(capsys, "status", job.job_id)
    assert code == 0 and "CANNOT BE READ" in out and "'exploded'" in out and "validating → queued" in out
    code, _, err = run(capsys, "replay", job.job_id)
    assert code == 2 and "still cannot be read" in err
    code, _, err = run(capsys, "quarantine", job.job_id)
    assert code == 2 and "cannot be read" in err

    # Repaired by hand (the state put back): the quarantine marker stays until the replay.
    _set_state(store, job, "queued")
    assert store.get_job(job.job_id).quarantined is not None
    assert store.due_jobs() == []
    code, out, _ = run(capsys, "replay", job.job_id)
    assert code == 0
    assert [j.job_id for j in store.due_jobs()] == [job.job_id]
