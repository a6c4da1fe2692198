"""What only the DynamoDB store has: the table file, the item layout, single-request conflicts,
and behaviour on a network that loses answers (a real proxy in front of DynamoDB Local)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bot.errors import JobConflict, LeaseHeld, StoreUnavailable
from bot.store import DynamoJobStore, JobState, create_table
from bot.store.dynamodb import DUE_INDEX, TABLE_DEFINITION_PATH, TABLE_INDEX, TIME_INDEX
from tests.fixtures_servers import free_port
from tests.store_support import START, LossyProxy, ManualClock, dynamodb_client, new_job

S = JobState


@pytest.fixture
def table(dynamodb_endpoint: str) -> str:
    name = f"jobs-{uuid.uuid4().hex[:12]}"
    create_table(dynamodb_client(dynamodb_endpoint), name)
    return name


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def raw(client: Any, table: str, pk: str, sk: str) -> dict[str, Any]:
    item: dict[str, Any] = client.get_item(
        TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
    )["Item"]
    return item


def test_table_is_created_from_the_resources_file(dynamodb_endpoint: str, table: str) -> None:
    definition = json.loads(TABLE_DEFINITION_PATH.read_text())
    assert "TableName" not in definition  # serverless names it
    assert definition["BillingMode"] == "PAY_PER_REQUEST"
    client = dynamodb_client(dynamodb_endpoint)
    described = client.describe_table(TableName=table)["Table"]
    assert described["KeySchema"] == definition["KeySchema"]
    assert {(a["AttributeName"], a["AttributeType"]) for a in described["AttributeDefinitions"]} == {
        (a["AttributeName"], a["AttributeType"]) for a in definition["AttributeDefinitions"]
    }
    made = {i["IndexName"]: (i["KeySchema"], i["Projection"]) for i in described["GlobalSecondaryIndexes"]}
    wanted = {i["IndexName"]: (i["KeySchema"], i["Projection"]) for i in definition["GlobalSecondaryIndexes"]}
    assert made == wanted
    assert {DUE_INDEX, TABLE_INDEX, TIME_INDEX} == set(wanted)
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == definition["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    assert ttl["TimeToLiveStatus"] == "ENABLED"


def test_item_layout_due_key_and_ttl(dynamodb_endpoint: str, table: str, clock: ManualClock) -> None:
    client = dynamodb_client(dynamodb_endpoint)
    store = DynamoJobStore(client, table, clock=clock)
    job, _ = store.create_job("Ev1", new_job())
    item = raw(client, table, f"JOB#{job.job_id}", "JOB")
    assert item["due_pk"] == {"S": "DUE"} and "expires_at" not in item
    delivery = raw(client, table, "DELIVERY#Ev1", "DELIVERY")
    assert delivery["job_id"] == {"S": job.job_id} and "expires_at" not in delivery
    job = store.transition(job, S.VALIDATING, actor="w", reason="r")
    done = store.transition(job, S.INVALID, actor="w", reason="3 errors")
    item = raw(client, table, f"JOB#{job.job_id}", "JOB")
    assert "due_pk" not in item and "next_check_at" not in item  # out of the sparse index
    assert item["expires_at"] == {"N": str(done.expires_at)}
    ttl = {"N": str(done.expires_at)}
    history = raw(client, table, f"JOB#{job.job_id}", "HIST#0000000003")
    assert history["to_state"] == {"S": "invalid"} and history["expires_at"] == ttl
    assert history["table_pk"] == {"S": "TABLE#hosts"}
    assert raw(client, table, f"JOB#{job.job_id}", "HIST#0000000001")["expires_at"] == ttl
    assert raw(client, table, "DELIVERY#Ev1", "DELIVERY")["expires_at"] == ttl


class Calls:
    """The DynamoDB operations a client sends, through botocore's own event hooks."""

    def __init__(self, client: Any) -> None:
        self.names: list[str] = []
        client.meta.events.register("before-call.dynamodb.*", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.names.append(model.name)


def test_conflicts_carry_the_current_record_without_a_second_read(
    dynamodb_endpoint: str, table: str, clock: ManualClock
) -> None:
    client = dynamodb_client(dynamodb_endpoint)
    store = DynamoJobStore(client, table, clock=clock)
    job, _ = store.create_job("Ev1", new_job())
    current = store.acquire_lease(store.transition(job, S.VALIDATING, actor="w", reason="r"), "w1", ttl_seconds=60)
    calls = Calls(client)
    with pytest.raises(JobConflict) as caught:
        store.transition(job, S.VALIDATING, actor="w2", reason="stale")
    assert caught.value.current == current
    assert calls.names == ["TransactWriteItems"]
    calls.names.clear()
    # An ending first lists the job's history keys (their expiry goes in the same transaction);
    # the conflict still comes from the failed condition, with no read after it.
    with pytest.raises(JobConflict) as ending:
        store.transition(job, S.CANCELLED, actor="U1", reason="stale")
    assert ending.value.current == current
    assert calls.names == ["Query", "TransactWriteItems"]
    calls.names.clear()
    with pytest.raises(JobConflict):
        store.update(job, changes={"status_ts": "1"})
    assert calls.names == ["PutItem"]
    calls.names.clear()
    with pytest.raises(LeaseHeld):
        store.acquire_lease(job, "w2", ttl_seconds=60)
    assert calls.names == ["UpdateItem"]


@pytest.fixture
def proxy(dynamodb_endpoint: str) -> Iterator[LossyProxy]:
    running = LossyProxy(dynamodb_endpoint)
    yield running
    running.stop()


def test_lost_answers_are_not_mistaken_for_conflicts(proxy: LossyProxy, table: str, clock: ManualClock) -> None:
    client = dynamodb_client(proxy.endpoint, retries={"max_attempts": 3, "mode": "standard"})
    store = DynamoJobStore(client, table, clock=clock)

    proxy.drop_next("TransactWriteItems")
    job, created = store.create_job("Ev1", new_job())
    assert created  # the retried create found its own delivery item: still the creator
    proxy.drop_next("TransactWriteItems")
    moved = store.transition(job, S.VALIDATING, actor="w", reason="r")
    proxy.drop_next("PutItem")
    updated = store.update(moved, changes={"row_count": 3})
    proxy.drop_next("UpdateItem")
    leased = store.acquire_lease(updated, "w1", ttl_seconds=60)
    assert proxy.dropped == ["TransactWriteItems", "TransactWriteItems", "PutItem", "UpdateItem"]

    assert store.get_job(job.job_id) == leased
    # (a re-sent lease acquire by the same owner simply applies again: the lease is re-entrant)
    assert leased.state is S.VALIDATING and leased.row_count == 3 and leased.lease_owner == "w1"
    assert [h.to_state for h in store.history_for_job(job.job_id)] == [S.RECEIVED, S.VALIDATING]
    assert store.create_job("Ev1", new_job()) == (leased, False)


def test_transaction_conflicts_are_retried(proxy: LossyProxy, table: str, clock: ManualClock) -> None:
    store = DynamoJobStore(dynamodb_client(proxy.endpoint), table, clock=clock, sleep=lambda _: None)
    job, _ = store.create_job("Ev1", new_job())
    body = json.dumps(
        {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
            "[TransactionConflict, None]",
            "CancellationReasons": [
                {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"},
                {"Code": "None"},
            ],
        }
    ).encode()
    for _ in range(2):
        proxy.answer_next("TransactWriteItems", 400, body)
    moved = store.transition(job, S.VALIDATING, actor="w", reason="r")
    assert store.get_job(job.job_id) == moved
    assert proxy.canned["TransactWriteItems"] == []  # both conflicts were seen, then it went through


def test_missing_table_and_unreachable_endpoint_are_clear_errors(dynamodb_endpoint: str, clock: ManualClock) -> None:
    store = DynamoJobStore(dynamodb_client(dynamodb_endpoint), "no-such-table", clock=clock)
    with pytest.raises(StoreUnavailable, match="no-such-table does not exist"):
        store.get_job("x")
    dead = dynamodb_client(
        f"http://127.0.0.1:{free_port()}", retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1
    )
    with pytest.raises(StoreUnavailable, match="could not reach DynamoDB"):
        DynamoJobStore(dead, "jobs", clock=clock).create_job("Ev1", new_job())


def test_started_time_is_exact_to_the_microsecond(dynamodb_endpoint: str, table: str) -> None:
    odd = ManualClock(START.replace(microsecond=999_999))
    store = DynamoJobStore(dynamodb_client(dynamodb_endpoint), table, clock=odd)
    job, _ = store.create_job("Ev1", new_job())
    assert store.get_job(job.job_id).created_at == START.replace(microsecond=999_999)
