"""The production job store: one DynamoDB table, single-table design (boto3 client injected).

The table is defined once, in `resources/dynamodb-table.json` (the CloudFormation `Properties` of
an `AWS::DynamoDB::Table`, included by serverless.yml); `create_table` builds the same table from
that file for tests and local set-up.

Keys: `pk` (S, partition) and `sk` (S, sort). Items:

| item     | pk                  | sk            | what it holds                                      |
|----------|---------------------|---------------|----------------------------------------------------|
| job      | `JOB#<job_id>`      | `JOB`         | every job field, `version`, `write_id`             |
| history  | `JOB#<job_id>`      | `HIST#<seq>`  | one state change: at, actor, from, to, reason      |
| delivery | `DELIVERY#<key>`    | `DELIVERY`    | the job created for a Slack event / file / trigger |
| gate     | `GATE#<table>`      | `GATE`        | holder job, gate lease expiry, last upstream call  |
| rate     | `RATE#<key>`        | `RATE`        | start times of the last requests under one limit   |

`<seq>` is the job version the change produced, zero-padded, so a job's history is one Query on
its own partition, in order. Times are epoch seconds (N, microsecond decimals).

Indexes (all projection ALL, so a listing needs no second read):
- `due`: `due_pk` = "DUE" / `next_check_at` (N). Sparse: a job carries `due_pk` only while it
  has a next check time; a terminal job has one only while its ending notice is pending
  (`rules`), so it drops out when the notice is confirmed. `due_jobs` queries
  `next_check_at <= now` in time order (and filters out jobs whose lease is still running, and
  jobs not in the `states` asked for).
  One partition: our write rate is a few per job, far under a partition's limit.
- `by_table`: `table_pk` = "TABLE#<alias>" / `table_sk` = "J#<created µs>#<job_id>" on jobs and
  "H#<at µs>#<job_id>#<seq>" on history items: recent jobs and the audit trail of one table.
- `by_time`: `time_pk` = "JOBS" / `time_sk` = "<created µs>#<job_id>": recent jobs of all tables.

TTL attribute `expires_at` (epoch seconds): set when a job ends (end + retention, default 400
days) on the job item and, in the same transaction, on its delivery item and every history item,
so the audit trail lives exactly as long as its job. Open jobs and their items never expire. A
Retry (failed → queued) removes `expires_at` from all of them again.

Writes: creating a job is one TransactWriteItems (delivery, job, first history item, each
`attribute_not_exists`); a transition is one TransactWriteItems (job put conditional on
`version` and `state`, history put; an ending or a Retry first lists the job's history keys with
one Query and updates their `expires_at` in the same transaction; past 100 items the remainder
follows in single idempotent updates); other job writes are a conditional PutItem/UpdateItem. A
failed condition returns the current item (`ReturnValuesOnConditionCheckFailure=ALL_OLD`; in a
transaction, in `CancellationReasons[].Item`), which DynamoDB Local also supports, so a
`JobConflict` carries the current record without a second read. Every job write stores a fresh
`write_id`: when botocore retries a write whose first answer was lost, the failed condition shows
our own `write_id` and the store reports success instead of a false conflict. Transactions
cancelled for `TransactionConflict` (another transaction on the same item in flight) are retried.

Leases: `lease_owner`/`lease_expires_at` on the job item. Acquire/renew is one UpdateItem
conditional on "not terminal (or terminal with `due_pk`: a pending notice), and no lease, our
own, or an expired one"; release is conditional
on our ownership. Every lease write bumps `version`, so a worker whose expired lease was taken
over gets `JobConflict` on its next write: the version is the fencing token.

Table gate: the GATE item. Acquire reads it (and, when another job holds it, that job), decides
with `rules.decide_gate`, and writes the whole gate with PutItem conditional on the gate
`version` it read (re-deciding on the returned item if someone moved first). It is taken over
when its lease expired or its holder job has ended (terminal or gone); `last_call_at` enforces
the minimum spacing between upstream calls for every job, the holder included.

Rate slots (`reserve_rate_slot`): the RATE item of a key holds the booked start times of its last
`limit` requests (`starts`, microseconds) and a `version`. A booking reads it (consistent read),
computes the next start with `rules.book_rate_slot`, and writes it back with PutItem conditional
on that `version` (or on the item not existing); a lost race re-reads and books again, so two
containers never get the same slot. `expires_at` (TTL) drops the item a day after its last use.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.errors import DamagedRecord, JobConflict, JobNotFound, StoreUnavailable
from bot.store.model import (
    JOB_TIME_FIELDS,
    Clock,
    DueJobs,
    GateDecision,
    HistoryEntry,
    Job,
    JobChanges,
    NewJob,
    TableGate,
    as_utc,
    from_micros,
    job_from_record,
    job_to_record,
    to_micros,
    utc_now,
)
from bot.store.rules import (
    DEFAULT_RETENTION,
    UNSET,
    NextCheck,
    book_rate_slot,
    check_lease_acquirable,
    decide_gate,
    new_job_id,
    plan_create,
    plan_quarantine,
    plan_transition,
    plan_update,
)
from bot.store.states import TERMINAL_STATES, JobState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger(__name__)

TABLE_DEFINITION_PATH = Path(__file__).resolve().parents[2] / "resources" / "dynamodb-table.json"
DUE_INDEX = "due"
TABLE_INDEX = "by_table"
TIME_INDEX = "by_time"
_DUE_PARTITION = "DUE"
_TIME_PARTITION = "JOBS"
_CREATE_TABLE_KEYS = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")
_MAX_TRANSACTION_ITEMS = 100

Item = dict[str, Any]


# -- table definition -------------------------------------------------------------------------


def load_table_definition(path: Path | None = None) -> dict[str, Any]:
    """The CloudFormation `Properties` of the table, from resources/dynamodb-table.json."""
    source = path or TABLE_DEFINITION_PATH
    try:
        definition: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreUnavailable(f"cannot read the DynamoDB table definition {source}: {exc}") from exc
    return definition


def create_table(client: DynamoDBClient, table_name: str, *, definition_path: Path | None = None) -> None:
    """Create `table_name` as defined in resources/dynamodb-table.json, wait for it, enable TTL."""
    definition = load_table_definition(definition_path)
    params = {key: definition[key] for key in _CREATE_TABLE_KEYS if key in definition}
    client.create_table(TableName=table_name, **params)
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    ttl = definition.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)


# -- attribute values -------------------------------------------------------------------------


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int | str) -> dict[str, str]:
    return {"N": str(value)}


def _seconds(micros: int) -> dict[str, str]:
    """Epoch seconds with exact microsecond decimals (DynamoDB numbers are decimal)."""
    whole, frac = divmod(micros, 1_000_000)
    return {"N": f"{whole}.{frac:06d}"}


def _time(value: datetime) -> dict[str, str]:
    return _seconds(to_micros(value))


def _micros(attr: Mapping[str, str]) -> int:
    return int(Decimal(attr["N"]) * 1_000_000)


def _job_key(job_id: str) -> Item:
    return {"pk": _s(f"JOB#{job_id}"), "sk": _s("JOB")}


def _gate_key(table: str) -> Item:
    return {"pk": _s(f"GATE#{table}"), "sk": _s("GATE")}


def _job_item(job: Job, write_id: str) -> Item:
    item: Item = {**_job_key(job.job_id), "kind": _s("job"), "write_id": _s(write_id)}
    for name, value in job_to_record(job).items():
        if value is None:
            continue
        if name in JOB_TIME_FIELDS:
            item[name] = _seconds(value)
        elif name == "upstream_parts":
            item[name] = {
                "L": [
                    {
                        "M": {
                            "index": _n(p["index"]),
                            "count": _n(p["count"]),
                            "upstream_job_id": _s(p["upstream_job_id"]),
                            **({"status": _s(p["status"])} if p["status"] is not None else {}),
                        }
                    }
                    for p in value
                ]
            }
        elif isinstance(value, bool):
            item[name] = {"BOOL": value}
        elif isinstance(value, int):
            item[name] = _n(value)
        else:
            item[name] = _s(str(value))
    created = to_micros(job.created_at)
    item["table_pk"] = _s(f"TABLE#{job.table}")
    item["table_sk"] = _s(f"J#{created:020d}#{job.job_id}")
    item["time_pk"] = _s(_TIME_PARTITION)
    item["time_sk"] = _s(f"{created:020d}#{job.job_id}")
    if job.next_check_at is not None:  # a terminal job has one only while its notice is pending (rules)
        item["due_pk"] = _s(_DUE_PARTITION)
    return item


def _plain(attr: Any) -> Any:
    """A DynamoDB attribute value as a plain value (numbers: int when whole, else Decimal); an
    attribute of a type the bot never writes comes back as it is, for the reader to refuse."""
    if not isinstance(attr, Mapping) or len(attr) != 1:
        return attr
    kind, value = next(iter(attr.items()))
    if kind in {"S", "BOOL"}:
        return value
    if kind == "NULL":
        return None
    if kind == "N":
        try:
            number = Decimal(value)
        except ArithmeticError:
            return value
        return int(number) if number == number.to_integral_value() else number
    if kind == "L":
        return [_plain(v) for v in value]
    if kind == "M":
        return {k: _plain(v) for k, v in value.items()}
    return attr


def _item_key(item: Mapping[str, Any]) -> str:
    pk = item.get("pk", {})
    return str(pk.get("S", "?")) if isinstance(pk, Mapping) else "?"


def _job_from_item(item: Mapping[str, Any]) -> Job:
    """The job of a job item; `DamagedRecord` naming the item's key when it cannot be read."""
    record: dict[str, Any] = {}
    for name, attr in item.items():
        if name in JOB_TIME_FIELDS and isinstance(attr, Mapping) and "N" in attr:
            try:
                record[name] = _micros(attr)
            except ArithmeticError:
                record[name] = attr["N"]
        else:
            record[name] = _plain(attr)
    return job_from_record(record, key=_item_key(item))


def _readable(items: Iterable[Mapping[str, Any]]) -> Iterator[Job]:
    """The jobs of the items that can be read; the others are logged and left out of a listing."""
    for item in items:
        try:
            yield _job_from_item(item)
        except DamagedRecord as damaged:
            log.warning("job record %s left out of a listing: %s", damaged.key, damaged.reason)


def _history_item(entry: HistoryEntry) -> Item:
    at = to_micros(entry.at)
    item: Item = {
        "pk": _s(f"JOB#{entry.job_id}"),
        "sk": _s(f"HIST#{entry.seq:010d}"),
        "kind": _s("history"),
        "job_id": _s(entry.job_id),
        "table": _s(entry.table),
        "seq": _n(entry.seq),
        "at": _seconds(at),
        "actor": _s(entry.actor),
        "to_state": _s(str(entry.to_state)),
        "reason": _s(entry.reason),
        "table_pk": _s(f"TABLE#{entry.table}"),
        "table_sk": _s(f"H#{at:020d}#{entry.job_id}#{entry.seq:010d}"),
    }
    if entry.from_state is not None:
        item["from_state"] = _s(str(entry.from_state))
    if entry.expires_at is not None:
        item["expires_at"] = _n(entry.expires_at)
    return item


def _history_from_item(item: Mapping[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        job_id=item["job_id"]["S"],
        table=item["table"]["S"],
        seq=int(item["seq"]["N"]),
        at=from_micros(_micros(item["at"])),
        actor=item["actor"]["S"],
        from_state=JobState(item["from_state"]["S"]) if "from_state" in item else None,
        to_state=JobState(item["to_state"]["S"]),
        reason=item["reason"]["S"],
        expires_at=int(item["expires_at"]["N"]) if "expires_at" in item else None,
    )


def _gate_from_item(item: Mapping[str, Any] | None, table: str) -> TableGate | None:
    if not item:
        return None
    return TableGate(
        table=table,
        version=int(item["version"]["N"]),
        holder_job_id=item["holder_job_id"]["S"] if "holder_job_id" in item else None,
        lease_expires_at=from_micros(_micros(item["lease_expires_at"])) if "lease_expires_at" in item else None,
        last_call_at=from_micros(_micros(item["last_call_at"])) if "last_call_at" in item else None,
    )


# -- failures of a conditional write ----------------------------------------------------------


class _ConditionFailed(Exception):
    """A conditional write was refused; `item` is the item as it is (None if there is none)."""

    def __init__(self, item: Mapping[str, Any] | None) -> None:
        super().__init__("condition failed")
        self.item = item


class _Cancelled(Exception):
    """A transaction was cancelled; `reasons` line up with its items."""

    def __init__(self, reasons: list[Mapping[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons

    def code(self, index: int) -> str:
        return str(self.reasons[index].get("Code", "None")) if index < len(self.reasons) else "None"

    def item(self, index: int) -> Mapping[str, Any] | None:
        found: Mapping[str, Any] | None = self.reasons[index].get("Item") if index < len(self.reasons) else None
        return found

    @property
    def conflicted(self) -> bool:
        return any(r.get("Code") in {"TransactionConflict", "ThrottlingError"} for r in self.reasons)


class DynamoJobStore:
    """`JobStore` on one DynamoDB table (see the module docstring for its design)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        clock: Clock = utc_now,
        retention: timedelta = DEFAULT_RETENTION,
        conflict_retries: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self.table_name = table_name
        self._clock = clock
        self.retention = retention
        self._conflict_retries = conflict_retries
        self._sleep = sleep

    def _now(self) -> datetime:
        return as_utc(self._clock())

    # -- calls --------------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One DynamoDB call; refused conditions become _ConditionFailed/_Cancelled, the rest StoreUnavailable."""
        try:
            response: dict[str, Any] = getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            error: dict[str, Any] = dict(exc.response)
            code = error.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise _ConditionFailed(error.get("Item")) from None
            if code == "TransactionCanceledException":
                raise _Cancelled(list(error.get("CancellationReasons", []))) from None
            if code == "ResourceNotFoundException":
                raise StoreUnavailable(
                    f"DynamoDB table {self.table_name} does not exist: deploy the stack, or create it with "
                    "bot.store.dynamodb.create_table"
                ) from exc
            message = error.get("Error", {}).get("Message", "")
            raise StoreUnavailable(f"job store ({self.table_name}) {operation} failed: {code}: {message}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(
                f"job store ({self.table_name}) {operation} could not reach DynamoDB: {exc}"
            ) from exc
        return response

    def _transact(self, items: list[Item]) -> None:
        """TransactWriteItems, retried while it is only cancelled by a concurrent transaction."""
        for attempt in range(self._conflict_retries + 1):
            try:
                self._call("transact_write_items", TransactItems=items)
                return
            except _Cancelled as cancelled:
                if not cancelled.conflicted or any(
                    r.get("Code") == "ConditionalCheckFailed" for r in cancelled.reasons
                ):
                    raise
                if attempt == self._conflict_retries:
                    raise StoreUnavailable(
                        f"job store ({self.table_name}): the write kept colliding with other writes; try again"
                    ) from None
                self._sleep(random.uniform(0.005, 0.02) * (attempt + 1))  # noqa: S311 - jitter, not security

    def _query(self, limit: int | None = None, **kwargs: Any) -> Iterator[Mapping[str, Any]]:
        """Items of a Query, page after page, until `limit` items were yielded or none are left."""
        yielded = 0
        start: Mapping[str, Any] | None = None
        while True:
            page_kwargs = dict(kwargs)
            if start is not None:
                page_kwargs["ExclusiveStartKey"] = start
            if limit is not None:
                page_kwargs["Limit"] = max(limit - yielded, 25) if "FilterExpression" in kwargs else limit - yielded
            page = self._call("query", TableName=self.table_name, **page_kwargs)
            for item in page.get("Items", []):
                yield item
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def _put_job_conditional(self, job: Job, expected: Job) -> Item:
        """The job put item for `job`, conditional on `expected` being what is stored."""
        return {
            "TableName": self.table_name,
            "Item": _job_item(job, uuid.uuid4().hex),
            "ConditionExpression": "attribute_exists(pk) AND #v = :v AND #s = :s",
            "ExpressionAttributeNames": {"#v": "version", "#s": "state"},
            "ExpressionAttributeValues": {":v": _n(expected.version), ":s": _s(str(expected.state))},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _refused(self, expected: Job, item: Mapping[str, Any] | None, written: Job, write_id: str) -> Job:
        """What a refused job write means: our own earlier success, a conflict, or a missing job."""
        if not item:
            raise JobNotFound(expected.job_id)
        if item.get("write_id", {}).get("S") == write_id:
            return written  # botocore retried a write that had landed: it is ours
        raise JobConflict(_job_from_item(item), expected_state=expected.state, expected_version=expected.version)

    # -- jobs ---------------------------------------------------------------------------------

    def create_job(self, delivery_key: str, new: NewJob) -> tuple[Job, bool]:
        now = self._now()
        for _ in range(3):  # a fresh job id if one ever collides
            job, entry = plan_create(delivery_key, new, now=now, job_id=new_job_id(now))
            write_id = uuid.uuid4().hex
            delivery: Item = {
                "pk": _s(f"DELIVERY#{delivery_key}"),
                "sk": _s("DELIVERY"),
                "kind": _s("delivery"),
                "job_id": _s(job.job_id),
                "write_id": _s(write_id),
                "created_at": _time(now),
            }
            absent = "attribute_not_exists(pk)"
            items: list[Item] = [
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": delivery,
                        "ConditionExpression": absent,
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": _job_item(job, write_id),
                        "ConditionExpression": absent,
                    }
                },
                {"Put": {"TableName": self.table_name, "Item": _history_item(entry), "ConditionExpression": absent}},
            ]
            try:
                self._transact(items)
                return job, True
            except _Cancelled as cancelled:
                if cancelled.code(0) == "ConditionalCheckFailed":
                    existing = cancelled.item(0)
                    if existing is None:  # not returned: read it (documented fallback)
                        existing = self._get_item({"pk": delivery["pk"], "sk": delivery["sk"]})
                    if existing is None:
                        continue
                    if existing.get("write_id", {}).get("S") == write_id:
                        return job, True
                    return self.get_job(existing["job_id"]["S"]), False
                if cancelled.code(1) == "ConditionalCheckFailed":
                    continue
                raise StoreUnavailable(
                    f"job store ({self.table_name}): creating the job was refused: "
                    f"{[r.get('Code') for r in cancelled.reasons]}"
                ) from None
        raise StoreUnavailable(f"job store ({self.table_name}): could not create a job for delivery {delivery_key}")

    def _get_item(self, key: Item) -> Mapping[str, Any] | None:
        response = self._call("get_item", TableName=self.table_name, Key=key, ConsistentRead=True)
        item: Mapping[str, Any] | None = response.get("Item")
        return item

    def claim_once(self, key: str, value: str, *, ttl_seconds: float) -> tuple[bool, str]:
        now = self._now()
        epoch = int(now.timestamp())
        write_id = uuid.uuid4().hex
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item={
                    "pk": _s(f"CLAIM#{key}"),
                    "sk": _s("CLAIM"),
                    "kind": _s("claim"),
                    "value": _s(value),
                    "write_id": _s(write_id),
                    "expires_at": {"N": str(epoch + max(1, int(ttl_seconds)))},
                },
                # An expired claim that TTL has not deleted yet is free again.
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                ExpressionAttributeValues={":now": {"N": str(epoch)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except _ConditionFailed as failed:
            item = failed.item or self._get_item({"pk": _s(f"CLAIM#{key}"), "sk": _s("CLAIM")}) or {}
            if item.get("write_id", {}).get("S") == write_id:  # our own write, re-sent after a lost answer
                return True, value
            return False, str(item.get("value", {}).get("S", ""))
        return True, value

    def get_job(self, job_id: str) -> Job:
        item = self._get_item(_job_key(job_id))
        if item is None:
            raise JobNotFound(job_id)
        return _job_from_item(item)

    def transition(
        self,
        job: Job,
        to: JobState,
        *,
        actor: str,
        reason: str,
        changes: JobChanges | Mapping[str, Any] | None = None,
        next_check_at: NextCheck = UNSET,
        release_lease: bool = False,
    ) -> Job:
        new, entry = plan_transition(
            job,
            to,
            now=self._now(),
            actor=actor,
            reason=reason,
            changes=changes,
            next_check_at=next_check_at,
            release_lease=release_lease,
            retention=self.retention,
        )
        put = self._put_job_conditional(new, job)
        history = {
            "TableName": self.table_name,
            "Item": _history_item(entry),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        items: list[Item] = [{"Put": put}, {"Put": history}]
        overflow: list[Item] = []
        if new.expires_at != job.expires_at:
            # Ended (or reopened): the delivery and history items take the job's expiry in the same
            # transaction, so the audit trail lives exactly as long as its job.
            follow = self._expiry_followers(job, new.expires_at)
            room = _MAX_TRANSACTION_ITEMS - len(items)
            items += [{"Update": u} for u in follow[:room]]
            overflow = follow[room:]
        try:
            self._transact(items)
        except _Cancelled as cancelled:
            if cancelled.code(0) == "ConditionalCheckFailed":
                return self._refused(job, cancelled.item(0), new, put["Item"]["write_id"]["S"])
            raise StoreUnavailable(
                f"job store ({self.table_name}): the transition of job {job.job_id} was refused: "
                f"{[r.get('Code') for r in cancelled.reasons]}"
            ) from None
        for update in overflow:  # a job with very many retries: the rest, one by one (idempotent)
            self._call("update_item", **update)
        return new

    def _expiry_followers(self, job: Job, expires_at: int | None) -> list[Item]:
        """Updates giving the job's delivery item and history items the expiry `expires_at`."""
        keys: list[Item] = [{"pk": _s(f"DELIVERY#{job.delivery_key}"), "sk": _s("DELIVERY")}]
        for item in self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :h)",
            ExpressionAttributeValues={":pk": _s(f"JOB#{job.job_id}"), ":h": _s("HIST#")},
            ProjectionExpression="pk, sk",
            ConsistentRead=True,
        ):
            keys.append({"pk": item["pk"], "sk": item["sk"]})
        change: dict[str, Any] = (
            {"UpdateExpression": "REMOVE expires_at"}
            if expires_at is None
            else {"UpdateExpression": "SET expires_at = :e", "ExpressionAttributeValues": {":e": _n(expires_at)}}
        )
        return [
            {"TableName": self.table_name, "Key": key, "ConditionExpression": "attribute_exists(pk)", **change}
            for key in keys
        ]

    def update(
        self,
        job: Job,
        *,
        changes: JobChanges | Mapping[str, Any] | None = None,
        next_check_at: NextCheck = UNSET,
        release_lease: bool = False,
    ) -> Job:
        new = plan_update(
            job, now=self._now(), changes=changes, next_check_at=next_check_at, release_lease=release_lease
        )
        put = self._put_job_conditional(new, job)
        try:
            self._call("put_item", **put)
        except _ConditionFailed as failed:
            return self._refused(job, failed.item, new, put["Item"]["write_id"]["S"])
        return new

    def due_jobs(
        self, now: datetime | None = None, *, limit: int = 25, states: Collection[JobState] | None = None
    ) -> DueJobs:
        at = _time(as_utc(now) if now is not None else self._now())
        values: Item = {":due": _s(_DUE_PARTITION), ":now": at, ":n": _s("N")}
        names: dict[str, str] = {}
        # A lease time of another type than a number never hides a record from the poller.
        condition = (
            "(attribute_not_exists(lease_expires_at) OR lease_expires_at <= :now"
            " OR NOT attribute_type(lease_expires_at, :n))"
        )
        if states is not None:
            only = sorted(str(JobState(s)) for s in states)
            if not only:
                return DueJobs()
            known = [str(s) for s in JobState]
            values.update({f":st{i}": _s(s) for i, s in enumerate(only)})
            values.update({f":k{i}": _s(s) for i, s in enumerate(known)})
            names["#s"] = "state"
            # Items without a known state are read too, to be quarantined (never skipped forever).
            condition += (
                f" AND (#s IN ({', '.join(f':st{i}' for i in range(len(only)))})"
                f" OR NOT (#s IN ({', '.join(f':k{i}' for i in range(len(known)))}))"
                " OR attribute_not_exists(#s))"
            )
        items = self._query(
            limit,
            IndexName=DUE_INDEX,
            KeyConditionExpression="due_pk = :due AND next_check_at <= :now",
            FilterExpression=condition,
            ExpressionAttributeValues=values,
            ScanIndexForward=True,
            **({"ExpressionAttributeNames": names} if names else {}),
        )
        due = DueJobs()
        for item in items:
            try:
                due.append(_job_from_item(item))
            except DamagedRecord as damaged:
                if self._quarantine_damaged(item, damaged):
                    due.quarantined.append(damaged)
        return due

    def _quarantine_damaged(self, item: Mapping[str, Any], damaged: DamagedRecord) -> bool:
        """Take an unreadable item out of the due index, as it was read (a conditional write on its
        `write_id` and next check): True if this call did it, so it is reported once."""
        values: Item = {":r": _s(f"damaged record: {damaged.reason}"), ":n": item["next_check_at"]}
        condition = "attribute_exists(due_pk) AND next_check_at = :n"
        if "write_id" in item:
            condition += " AND write_id = :w"
            values[":w"] = item["write_id"]
        else:
            condition += " AND attribute_not_exists(write_id)"
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="REMOVE due_pk SET quarantined = :r",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except _ConditionFailed:
            return False  # changed meanwhile (repaired, or quarantined by another poller)
        log.debug("quarantined job record %s: %s", damaged.key, damaged.reason)  # the caller reports it
        return True

    def next_due_at(self) -> datetime | None:
        page = self._call(
            "query",
            TableName=self.table_name,
            IndexName=DUE_INDEX,
            KeyConditionExpression="due_pk = :due",
            ExpressionAttributeValues={":due": _s(_DUE_PARTITION)},
            ProjectionExpression="next_check_at",
            ScanIndexForward=True,
            Limit=1,
        )
        found = page.get("Items", [])
        return from_micros(_micros(found[0]["next_check_at"])) if found else None

    def open_jobs(self, *, limit: int = 500) -> list[Job]:
        items = self._query(
            limit,
            IndexName=DUE_INDEX,
            KeyConditionExpression="due_pk = :due",
            ExpressionAttributeValues={":due": _s(_DUE_PARTITION)},
            ScanIndexForward=True,
        )
        return [job for job in _readable(items) if not job.is_terminal]

    def set_quarantine(self, job: Job, *, actor: str, reason: str | None) -> Job:
        new, entry = plan_quarantine(job, now=self._now(), actor=actor, reason=reason, retention=self.retention)
        put = self._put_job_conditional(new, job)
        history = {
            "TableName": self.table_name,
            "Item": _history_item(entry),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        try:
            self._transact([{"Put": put}, {"Put": history}])
        except _Cancelled as cancelled:
            if cancelled.code(0) == "ConditionalCheckFailed":
                return self._refused(job, cancelled.item(0), new, put["Item"]["write_id"]["S"])
            raise StoreUnavailable(
                f"job store ({self.table_name}): the quarantine write of job {job.job_id} was refused: "
                f"{[r.get('Code') for r in cancelled.reasons]}"
            ) from None
        return new

    # -- leases -------------------------------------------------------------------------------

    def _lease_update(self, job: Job, owner: str, ttl_seconds: float) -> Job:
        if not owner:
            raise ValueError("a lease needs an owner name (worker id)")
        if ttl_seconds <= 0:
            raise ValueError("lease ttl_seconds must be positive")
        now = self._now()
        write_id = uuid.uuid4().hex
        terminal = sorted(str(s) for s in TERMINAL_STATES)
        values: Item = {f":t{i}": _s(s) for i, s in enumerate(terminal)}
        values.update(
            {
                ":o": _s(owner),
                ":exp": _time(now + timedelta(seconds=ttl_seconds)),
                ":now": _time(now),
                ":w": _s(write_id),
                ":one": _n(1),
            }
        )
        try:
            response = self._call(
                "update_item",
                TableName=self.table_name,
                Key=_job_key(job.job_id),
                UpdateExpression="SET lease_owner = :o, lease_expires_at = :exp, updated_at = :now, write_id = :w, #v = #v + :one",
                # Not ended, or ended with its notice pending (only then does an ended job keep `due_pk`).
                ConditionExpression=(
                    f"attribute_exists(pk) AND (NOT (#s IN ({', '.join(f':t{i}' for i in range(len(terminal)))}))"
                    " OR attribute_exists(due_pk))"
                    " AND (attribute_not_exists(lease_owner) OR lease_owner = :o OR lease_expires_at <= :now)"
                    " AND attribute_not_exists(quarantined)"
                ),
                ExpressionAttributeNames={"#v": "version", "#s": "state"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except _ConditionFailed as failed:
            if not failed.item:
                raise JobNotFound(job.job_id) from None
            current = _job_from_item(failed.item)
            if failed.item.get("write_id", {}).get("S") == write_id:
                return current
            check_lease_acquirable(current, owner, now)
            raise JobConflict(current, expected_state=job.state, expected_version=job.version) from None
        return _job_from_item(response["Attributes"])

    def acquire_lease(self, job: Job, owner: str, ttl_seconds: float) -> Job:
        return self._lease_update(job, owner, ttl_seconds)

    def renew_lease(self, job: Job, owner: str, ttl_seconds: float) -> Job:
        return self._lease_update(job, owner, ttl_seconds)

    def release_lease(self, job: Job, owner: str) -> Job:
        now = self._now()
        write_id = uuid.uuid4().hex
        try:
            response = self._call(
                "update_item",
                TableName=self.table_name,
                Key=_job_key(job.job_id),
                UpdateExpression="REMOVE lease_owner, lease_expires_at SET updated_at = :now, write_id = :w, #v = #v + :one",
                ConditionExpression="attribute_exists(pk) AND lease_owner = :o",
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues={":o": _s(owner), ":now": _time(now), ":w": _s(write_id), ":one": _n(1)},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except _ConditionFailed as failed:
            if not failed.item:
                raise JobNotFound(job.job_id) from None
            return _job_from_item(failed.item)  # not (or no longer) held by `owner`: nothing to release
        return _job_from_item(response["Attributes"])

    # -- table gate ---------------------------------------------------------------------------

    def get_table_gate(self, table: str) -> TableGate | None:
        return _gate_from_item(self._get_item(_gate_key(table)), table)

    def _holder_finished(self, job_id: str) -> bool:
        item = self._get_item(_job_key(job_id))
        if item is None:
            return True
        try:
            holder = _job_from_item(item)
        except DamagedRecord:
            return True  # an unreadable holder never sends again: its gate is free
        return holder.is_terminal or holder.quarantined is not None

    def acquire_table_gate(
        self, table: str, job_id: str, *, min_spacing_seconds: float = 0.0, lease_seconds: float = 3600.0
    ) -> GateDecision:
        now = self._now()
        current = self.get_table_gate(table)
        for _ in range(self._conflict_retries + 1):
            decision = decide_gate(
                current,
                table=table,
                job_id=job_id,
                now=now,
                min_spacing_seconds=min_spacing_seconds,
                lease_seconds=lease_seconds,
                holder_finished=self._holder_finished,
            )
            gate = decision.gate
            if not decision.acquired or gate is None:
                return decision
            assert gate.lease_expires_at is not None and gate.last_call_at is not None
            item: Item = {
                **_gate_key(table),
                "kind": _s("gate"),
                "table": _s(table),
                "version": _n(gate.version),
                "holder_job_id": _s(job_id),
                "lease_expires_at": _time(gate.lease_expires_at),
                "last_call_at": _time(gate.last_call_at),
            }
            condition: dict[str, Any] = (
                {"ConditionExpression": "attribute_not_exists(pk)"}
                if current is None
                else {
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":v": _n(current.version)},
                }
            )
            try:
                self._call(
                    "put_item",
                    TableName=self.table_name,
                    Item=item,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    **condition,
                )
                return decision
            except _ConditionFailed as failed:
                current = _gate_from_item(failed.item, table)  # someone moved first: decide again on theirs
        raise StoreUnavailable(f"job store ({self.table_name}): the gate of table {table} kept changing; try again")

    def _gate_update(self, table: str, job_id: str, update: str, values: Item) -> bool:
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=_gate_key(table),
                UpdateExpression=update,
                ConditionExpression="holder_job_id = :j",
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues={":j": _s(job_id), ":one": _n(1), **values},
            )
        except _ConditionFailed:
            return False
        return True

    def renew_table_gate(self, table: str, job_id: str, *, lease_seconds: float = 3600.0) -> bool:
        until = self._now() + timedelta(seconds=lease_seconds)
        return self._gate_update(
            table, job_id, "SET lease_expires_at = :until, #v = #v + :one", {":until": _time(until)}
        )

    def release_table_gate(self, table: str, job_id: str) -> bool:
        return self._gate_update(table, job_id, "REMOVE holder_job_id, lease_expires_at SET #v = #v + :one", {})

    # -- shared rate limits -------------------------------------------------------------------

    def reserve_rate_slot(self, key: str, *, limit: int, window_seconds: float) -> float:
        item_key: Item = {"pk": _s(f"RATE#{key}"), "sk": _s("RATE")}
        window_us = max(1, round(window_seconds * 1_000_000))
        current = self._get_item(item_key)
        for attempt in range(self._conflict_retries * 5 + 1):
            now_us = to_micros(self._now())
            version = int(current["version"]["N"]) if current else 0
            starts = [int(v["N"]) for v in current["starts"]["L"]] if current else []
            at, kept = book_rate_slot(starts, limit=limit, window_us=window_us, now_us=now_us)
            item: Item = {
                **item_key,
                "kind": _s("rate"),
                "version": _n(version + 1),
                "starts": {"L": [_n(v) for v in kept]},
                "expires_at": _n(at // 1_000_000 + 86_400),
            }
            condition: dict[str, Any] = (
                {"ConditionExpression": "#v = :v", "ExpressionAttributeValues": {":v": _n(version)}}
                if current
                else {"ConditionExpression": "attribute_not_exists(pk) OR attribute_not_exists(#v)"}
            )
            try:
                self._call(
                    "put_item",
                    TableName=self.table_name,
                    Item=item,
                    ExpressionAttributeNames={"#v": "version"},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    **condition,
                )
            except _ConditionFailed as failed:
                current = failed.item  # another process booked first: book after it
                if attempt >= self._conflict_retries:
                    self._sleep(random.uniform(0.001, 0.01))  # noqa: S311 - jitter, not security
                continue
            return at / 1_000_000
        raise StoreUnavailable(f"job store ({self.table_name}): the rate limit {key} kept changing; try again")

    # -- history and listings -----------------------------------------------------------------

    def history_for_job(self, job_id: str) -> list[HistoryEntry]:
        items = self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :h)",
            ExpressionAttributeValues={":pk": _s(f"JOB#{job_id}"), ":h": _s("HIST#")},
            ConsistentRead=True,
        )
        return [_history_from_item(item) for item in items]

    def history_for_table(self, table: str, *, limit: int = 50) -> list[HistoryEntry]:
        items = self._query(
            limit,
            IndexName=TABLE_INDEX,
            KeyConditionExpression="table_pk = :t AND begins_with(table_sk, :h)",
            ExpressionAttributeValues={":t": _s(f"TABLE#{table}"), ":h": _s("H#")},
            ScanIndexForward=False,
        )
        return [_history_from_item(item) for item in items][::-1]

    def recent_jobs(self, table: str | None = None, *, limit: int = 20) -> list[Job]:
        if table is None:
            items = self._query(
                limit,
                IndexName=TIME_INDEX,
                KeyConditionExpression="time_pk = :p",
                ExpressionAttributeValues={":p": _s(_TIME_PARTITION)},
                ScanIndexForward=False,
            )
        else:
            items = self._query(
                limit,
                IndexName=TABLE_INDEX,
                KeyConditionExpression="table_pk = :t AND begins_with(table_sk, :j)",
                ExpressionAttributeValues={":t": _s(f"TABLE#{table}"), ":j": _s("J#")},
                ScanIndexForward=False,
            )
        return list(_readable(items))

    def purge_expired(self, now: datetime | None = None) -> int:
        """Nothing to do: DynamoDB's TTL deletes expired items (within a few days of expiry)."""
        return 0
