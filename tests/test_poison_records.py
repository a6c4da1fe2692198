"""One bad record never stops the rest: job records damaged in every way we know (an unknown
state, a missing field, a mistyped field, a part without its keys, a record that is not JSON)
sit in the due index beside healthy jobs, on SQLite and on DynamoDB Local. The store quarantines
each once (out of the due index, marked, logged), the poller counts it, and every healthy job
ends with one notice. Also: a job's table gate is released at its ending even when its table
has left the tables file."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import TablesFile, load_tables_file
from bot.errors import DamagedRecord
from bot.observability import Metrics
from bot.poller import Poller, RunReport
from bot.service.gate import gate_key
from bot.staging import FolderStaging
from bot.store import DynamoJobStore, Job, JobStore, SqliteJobStore, create_table
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import Upstream, write_tables_file
from tests.poller_support import ALICE, CHANNEL, CONTACTS_CSV, FAST_LOOP, HOSTS_CSV, S, World, ended_and_told
from tests.store_support import dynamodb_client

# A damage: how it is written in each store's own form.
Damage = Callable[[dict[str, Any]], None]


def _unknown_state(record: dict[str, Any]) -> None:
    record["state"] = "exploded"


def _missing_field(record: dict[str, Any]) -> None:
    del record["requested_by"]


def _mistyped_field(record: dict[str, Any]) -> None:
    record["version"] = "seven"


def _part_without_keys(record: dict[str, Any]) -> None:
    record["upstream_parts"] = [{"index": 1}]


def _mistyped_time(record: dict[str, Any]) -> None:
    record["created_at"] = "yesterday"


DAMAGES: dict[str, Damage] = {
    "unknown state": _unknown_state,
    "missing field": _missing_field,
    "mistyped field": _mistyped_field,
    "part without its keys": _part_without_keys,
    "mistyped time": _mistyped_time,
}
REASONS = {
    "unknown state": "state 'exploded' is not a job state",
    "missing field": "missing requested_by",
    "mistyped field": "version is 'seven', not a whole number",
    "part without its keys": "upstream_parts[0] lacks count, upstream_job_id",
    "mistyped time": "created_at is 'yesterday', not a whole number",
}


class Damager:
    """Writes damage into a stored job record, beneath the store (as a bad deploy or a hand edit would)."""

    def __init__(self, store: JobStore, endpoint: str | None) -> None:
        self.store = store
        self.endpoint = endpoint

    def damage(self, job: Job, damage: Damage) -> None:
        if isinstance(self.store, SqliteJobStore):
            conn = sqlite3.connect(self.store.path)
            (raw,) = conn.execute("SELECT record FROM jobs WHERE job_id = ?", (job.job_id,)).fetchone()
            record = json.loads(raw)
            damage(record)
            state = record.get("state")
            conn.execute(
                "UPDATE jobs SET record = ?, state = ? WHERE job_id = ?",
                (json.dumps(record), state if isinstance(state, str) else "?", job.job_id),
            )
            conn.commit()
            conn.close()
            return
        assert isinstance(self.store, DynamoJobStore) and self.endpoint is not None
        client = dynamodb_client(self.endpoint)
        key = {"pk": {"S": f"JOB#{job.job_id}"}, "sk": {"S": "JOB"}}
        item = client.get_item(TableName=self.store.table_name, Key=key, ConsistentRead=True)["Item"]
        plain = _as_plain(item, {})
        damage(plain)
        client.put_item(TableName=self.store.table_name, Item=_as_item(item, plain))

    def not_json(self, job: Job) -> None:
        assert isinstance(self.store, SqliteJobStore)
        conn = sqlite3.connect(self.store.path)
        conn.execute("UPDATE jobs SET record = '{not json' WHERE job_id = ?", (job.job_id,))
        conn.commit()
        conn.close()


def _as_plain(item: dict[str, Any], into: dict[str, Any]) -> dict[str, Any]:
    """The job item's fields the damages touch, as plain values (the rest is kept as it is)."""
    for name in ("state", "requested_by", "version", "created_at", "upstream_parts"):
        if name in item:
            into[name] = item[name]
    return into


def _as_item(item: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in item.items() if k not in {"state", "requested_by", "version", "created_at"}}
    for name, value in plain.items():
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in {"S", "N", "L", "M", "BOOL"}:
            out[name] = value  # untouched: still an attribute value
        elif isinstance(value, str):
            out[name] = {"S": value}
        elif isinstance(value, int):
            out[name] = {"N": str(value)}
        elif isinstance(value, list):
            out[name] = {"L": [{"M": {k: {"N": str(v)} for k, v in part.items()}} for part in value]}
    return out


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, str | None]]:
    if request.param == "sqlite":
        store = SqliteJobStore(tmp_path / "jobs.sqlite3")
        yield store, None
        store.close()
        return
    endpoint = request.getfixturevalue("dynamodb_endpoint")
    admin = dynamodb_client(endpoint)
    table = f"poison-{uuid.uuid4().hex[:10]}"
    create_table(admin, table)
    yield DynamoJobStore(dynamodb_client(endpoint), table), endpoint
    admin.delete_table(TableName=table)


@pytest.fixture
def store(backend: tuple[JobStore, str | None]) -> JobStore:
    return backend[0]


@pytest.fixture
def damager(backend: tuple[JobStore, str | None]) -> Damager:
    return Damager(*backend)


@pytest.fixture
def slack() -> Iterator[LocalSlackApi]:
    with LocalSlackApi() as api:
        api.add_channel(CHANNEL, "ops")
        api.add_user(ALICE, "alice")
        yield api
        assert api.internal_errors == []


@pytest.fixture
def world(tmp_path: Path, store: JobStore, slack: LocalSlackApi, upstream_tables: TablesFile, http: Any) -> World:
    return World(store, FolderStaging(tmp_path / "staging"), upstream_tables, slack, http)


def _damaged_jobs(world: World, damager: Damager) -> dict[str, Job]:
    damaged = {}
    for name, damage in DAMAGES.items():
        job = world.queue_job("hosts", HOSTS_CSV)
        damager.damage(job, damage)
        damaged[name] = job
    return damaged


def test_due_jobs_quarantine_each_damaged_record_once_and_return_the_healthy_ones(
    world: World, damager: Damager
) -> None:
    healthy = [world.queue_job("hosts", HOSTS_CSV), world.queue_job("contacts", CONTACTS_CSV)]
    damaged = _damaged_jobs(world, damager)

    due = world.store.due_jobs(limit=50)
    assert sorted(j.job_id for j in due) == sorted(j.job_id for j in healthy)
    found = {d.key: d.reason for d in due.quarantined}
    assert found == {f"JOB#{job.job_id}": REASONS[name] for name, job in damaged.items()}

    again = world.store.due_jobs(limit=50)  # marked: not read (nor reported) a second time
    assert again.quarantined == []
    assert sorted(j.job_id for j in again) == sorted(j.job_id for j in healthy)
    for job in damaged.values():
        with pytest.raises(DamagedRecord) as caught:
            world.store.get_job(job.job_id)
        assert job.job_id in caught.value.message
    listed = world.store.recent_jobs(limit=50)  # listings leave them out instead of failing
    assert {j.job_id for j in listed} == {j.job_id for j in healthy}
    assert world.store.open_jobs() and all(j.job_id in {h.job_id for h in healthy} for j in world.store.open_jobs())


def test_a_record_that_is_not_json_is_quarantined_too(world: World, damager: Damager) -> None:
    if not isinstance(world.store, SqliteJobStore):
        pytest.skip("a DynamoDB item is always attribute values; the other damages cover it")
    job = world.queue_job("hosts", HOSTS_CSV)
    damager.not_json(job)
    due = world.store.due_jobs()
    assert list(due) == []
    assert [d.key for d in due.quarantined] == [f"JOB#{job.job_id}"]
    assert "not JSON" in due.quarantined[0].reason


def test_healthy_jobs_end_with_one_notice_each_beside_damaged_records_with_two_pollers(
    world: World,
    damager: Damager,
    bigpanda_upstream: Upstream,
    dengage_upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="bot.poller")
    healthy = [world.queue_job("hosts", HOSTS_CSV), world.queue_job("contacts", CONTACTS_CSV)]
    damaged = _damaged_jobs(world, damager)
    healthy.append(world.queue_job("hosts", HOSTS_CSV))
    metrics = Metrics()
    pollers = [Poller(world.store, world.service(worker_id=f"w{i}"), FAST_LOOP, metrics=metrics) for i in range(2)]
    reports: list[RunReport] = []
    lock = threading.Lock()

    def run(poller: Poller) -> None:
        report = poller.run(0.5)
        with lock:
            reports.append(report)

    for _ in range(60):
        if all(ended_and_told(world.store.get_job(j.job_id)) for j in healthy):
            break
        threads = [threading.Thread(target=run, args=(p,)) for p in pollers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for job in healthy:
        assert world.store.get_job(job.job_id).state is S.DONE
        assert len(world.endings(job)) == 1
    quarantined = [key for report in reports for key in report.quarantined]
    assert sorted(quarantined) == sorted(f"JOB#{j.job_id}" for j in damaged.values())  # once each, in all
    assert metrics.total("QuarantinedRecords") == len(DAMAGES)
    told = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    for name, job in damaged.items():  # the operators' log: once each, with the key and the reason
        assert len([t for t in told if f"JOB#{job.job_id}" in t]) == 1
        assert any(REASONS[name] in t for t in told)
    assert all("error" not in report.steps for report in reports)


def test_a_quarantined_job_is_left_alone_until_replayed(world: World, bigpanda_upstream: Upstream) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    held = world.store.set_quarantine(job, actor="ops:alice", reason="stuck upstream, looking at it")
    assert held.quarantined == "stuck upstream, looking at it" and held.next_check_at is None
    poller = world.poller()
    assert poller.run(0.3).processed == 0
    assert world.store.get_job(job.job_id).state is S.QUEUED

    back = world.store.set_quarantine(world.store.get_job(job.job_id), actor="ops:alice", reason=None)
    assert back.quarantined is None and back.next_check_at is not None
    for _ in range(40):
        if ended_and_told(world.store.get_job(job.job_id)):
            break
        poller.run(0.3)
    assert world.store.get_job(job.job_id).state is S.DONE
    reasons = [h.reason for h in world.store.history_for_job(job.job_id)]
    assert "quarantined by ops:alice: stuck upstream, looking at it" in reasons
    assert "replayed by ops:alice" in reasons


def test_a_damaged_gate_holder_does_not_block_its_table(world: World, damager: Damager) -> None:
    holder = world.queue_job("hosts", HOSTS_CSV)
    table = world.tables.table("hosts")
    assert world.store.acquire_table_gate(gate_key(table), holder.job_id).acquired
    damager.damage(holder, _unknown_state)
    other = world.queue_job("hosts", HOSTS_CSV)
    decision = world.store.acquire_table_gate(gate_key(table), other.job_id)
    assert decision.acquired and decision.previous_holder_job_id == holder.job_id


def test_the_gate_is_released_at_the_ending_of_a_job_whose_table_left_the_tables_file(
    tmp_path: Path, world: World, bigpanda_upstream: Upstream, dengage_upstream: Upstream
) -> None:
    job = world.queue_job("hosts", HOSTS_CSV)
    key = gate_key(world.tables.table("hosts"))
    assert world.service().process(job) == "sent"
    sent = world.store.get_job(job.job_id)
    assert sent.state is S.SUBMITTED and sent.gate_key == key
    gate = world.store.get_table_gate(key)
    assert gate is not None and gate.holder_job_id == job.job_id

    # The operators remove the table from the tables file while the upload runs.
    path = write_tables_file(
        tmp_path / "without-hosts.toml",
        bigpanda_url=bigpanda_upstream.base_url,
        dengage_url=dengage_upstream.base_url,
    )
    text = path.read_text()
    start = text.index("[tables.hosts]")
    path.write_text(text[:start] + text[text.index("[tables.contacts]") :])
    world.tables = load_tables_file(path)
    assert "hosts" not in world.tables.tables

    poller = world.poller()
    for _ in range(40):
        if ended_and_told(world.store.get_job(job.job_id)):
            break
        poller.run(0.3)
    ended = world.store.get_job(job.job_id)
    assert ended.state is S.FAILED and "configuration" in (ended.last_error or "")
    gate = world.store.get_table_gate(key)
    assert gate is not None and gate.holder_job_id is None
    assert len(world.endings(job)) == 1
